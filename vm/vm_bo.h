// vm::VmBo — the connection of one BO to one VM (drm_gpuvm_bo): unique per (VM, BO), it holds a
// reference on both, the list of the BO's VAs in that VM, and the BO's membership in the VM's
// extobj and evict lists.
//
// The "gpuva lock" of a BO (see vm/bo.h) guards the BO's VmBo list and every VmBo's VA list: the
// BO's resv (default), or Bo::gpuva_mu() in a kImmediateMode VM. Obtain/ObtainPrealloc/Find,
// Link/Unlink and a Put that may be the last require it (contract: crash if not held — for the
// resv we can only check that it is locked, not by whom).
//
// Lifetime: reference counted. The last Put unlinks the VmBo from the BO, the extobj and evict
// lists, frees it and drops its VM and BO references. PutDeferred (immediate mode) does the
// first part under Bo::gpuva_mu() and leaves the rest to Gpuvm::DeferredCleanup, so it never
// frees a BO or takes a resv on the fence-signalling path.
// Thread-safety: the count is atomic; `evicted` is guarded by the BO's resv.
#ifndef UDRM_VM_VM_BO_H_
#define UDRM_VM_VM_BO_H_

#include <atomic>

#include "vm/bo.h"
#include "vm/gpuva.h"
#include "vm/gpuvm.h"
#include "vm/gpuvm_ref.h"

namespace vm {

class VmBo {
 public:
  // drm_gpuvm_bo_create: a new VmBo not yet in the BO's list (for ObtainPrealloc).
  static Ref<VmBo> Create(Gpuvm& vm, Bo& bo);
  // drm_gpuvm_bo_find: the existing VmBo with a new reference, or null. Gpuva lock held.
  static Ref<VmBo> Find(Gpuvm& vm, Bo& bo);
  // drm_gpuvm_bo_obtain: Find, or Create and add to the BO's list. Gpuva lock held.
  static Ref<VmBo> Obtain(Gpuvm& vm, Bo& bo);
  // drm_gpuvm_bo_obtain_prealloc: if a VmBo for (pre's VM, pre's BO) exists, drops `pre` and
  // returns the existing one; otherwise adds `pre` to the BO's list and returns it. Contract:
  // `pre` came from Create and is in no list. In immediate mode it takes Bo::gpuva_mu() itself
  // (the caller must not hold it); otherwise the gpuva lock must be held.
  static Ref<VmBo> ObtainPrealloc(Ref<VmBo> pre);

  VmBo(const VmBo&) = delete;
  VmBo& operator=(const VmBo&) = delete;

  Gpuvm& vm() const { return *vm_; }
  Bo& bo() const { return *bo_; }

  void Get() { refs_.fetch_add(1, std::memory_order_relaxed); }
  // drm_gpuvm_bo_put. Contract: the gpuva lock is held if this may be the last reference.
  void Put();
  // drm_gpuvm_bo_put_deferred (kImmediateMode VMs only): never frees; see top. Takes
  // Bo::gpuva_mu() when it drops the last reference (the caller must not hold it).
  void PutDeferred();

  // drm_gpuva_link: adds `va` to this VmBo's VA list, taking a VmBo reference. Gpuva lock held.
  void Link(Gpuva* va);
  // drm_gpuva_unlink: removes `va` from its VmBo and drops the reference (may free the VmBo).
  // Gpuva lock held.
  static void Unlink(Gpuva* va);
  // drm_gpuva_unlink_defer (kImmediateMode VMs): as Unlink, taking Bo::gpuva_mu() itself (the
  // caller must not hold it) and dropping the reference as PutDeferred does.
  static void UnlinkDefer(Gpuva* va);

  // The VAs of this VmBo in link order (gpuva lock held).
  template <typename F>
  void ForEachVa(F&& f) const {
    for (Gpuva* va = va_head_; va != nullptr;) {
      Gpuva* next = va->bo_next;  // `f` may unlink `va`
      f(va);
      va = next;
    }
  }
  bool has_vas() const { return va_head_ != nullptr; }
  // In the BO's VmBo list (Obtain, or ObtainPrealloc that kept it; false for a VmBo from Create
  // not yet obtained). Gpuva lock held.
  bool in_bo_list() const { return in_bo_list_; }

  // drm_gpuvm_bo_extobj_add: joins the VM's extobj list if the BO is external (idempotent).
  void ExtobjAdd();
  // drm_gpuvm_bo_evict: sets `evicted` and joins/leaves the evict list — except for an external
  // BO in a kResvProtected VM, where only the flag changes (PrepareObjects moves it later).
  // Contract: the BO's resv is locked.
  void Evict(bool evict);
  bool evicted() const { return evicted_; }
  bool in_extobj_list() const;
  bool in_evict_list() const;

  static int64_t live_count();

 private:
  friend class Gpuvm;
  template <typename, typename>
  friend class internal::IntrusiveList;
  friend absl::Status PrepareObjects(Gpuvm&, exec::Exec&, size_t);
  friend absl::Status Validate(Gpuvm&, exec::Exec&);
  VmBo(Gpuvm& vm, Bo& bo);
  ~VmBo();
  // kref_get_unless_zero.
  bool TryGet();
  void CheckGpuvaLock() const;
  // Leaves the BO's list (gpuva lock held) / the VM's lists and frees (no lock).
  void UnlinkFromBo();
  void Destroy();
  void AddToList(Gpuvm::List which);
  void RemoveFromList(Gpuvm::List which);
  internal::ListLink<VmBo>& link(internal::BoTag) { return bo_link_; }
  internal::ListLink<VmBo>& link(internal::ExtobjTag) { return extobj_link_; }
  internal::ListLink<VmBo>& link(internal::EvictTag) { return evict_link_; }
  internal::ListLink<VmBo>& link(internal::DeferredTag) { return deferred_link_; }

  std::atomic<int> refs_{1};
  Gpuvm* const vm_;                   // holds a reference
  Bo* const bo_;                      // holds a reference
  bool evicted_ = false;              // guarded by bo_->resv()
  bool in_bo_list_ = false;           // guarded by the gpuva lock
  internal::ListLink<VmBo> bo_link_;  // in bo_->vm_bos_; guarded by the gpuva lock
  Gpuva* va_head_ = nullptr;          // guarded by the gpuva lock
  Gpuva* va_tail_ = nullptr;
  // Membership of the VM's lists; guarded by vm_->lists_mu_.
  bool in_extobj_ = false;
  bool in_evict_ = false;
  internal::ListLink<VmBo> extobj_link_;
  internal::ListLink<VmBo> evict_link_;
  internal::ListLink<VmBo> deferred_link_;  // after the last PutDeferred
};

}  // namespace vm

#endif  // UDRM_VM_VM_BO_H_
