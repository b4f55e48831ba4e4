// vm::Bo — the GEM object (drm_gem_object) as the VA manager sees it.
//
// What it is: a size, host backing memory (the "pages" a GPU mapping points at, zero-filled,
// allocated on first use), and a fence::Resv — its own, or, for a VM-private BO, the one of the
// VM's resv object (drm_gem_object.resv pointing at r_obj's), so locking the VM's resv locks every
// private BO at once. It is an exec::Object, so an exec::Exec locks it.
//
// The BO also keeps the list of its VmBos (one per VM it is mapped in: the kernel's obj->gpuva
// list). That list is guarded by the "gpuva lock": the BO's resv for a VM in the default mode, or
// gpuva_mu() for a VM created with kImmediateMode (drm_gem_gpuva_set_lock / obj->gpuva.lock).
//
// Lifetime: reference counted (Get/Put, or Ref<Bo>); the last Put frees it. Every VmBo holds a
// reference, and a private BO holds one on the BO whose resv it shares.
// Thread-safety: size/memory/resv are immutable handles; the count is atomic.
#ifndef UDRM_VM_BO_H_
#define UDRM_VM_BO_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "exec/exec.h"
#include "fence/resv.h"
#include "vm/gpuvm_list.h"
#include "vm/gpuvm_ref.h"

namespace vm {

class VmBo;

class Bo final : public exec::Object {
 public:
  // A BO with its own resv (an "external" object for every VM).
  static Ref<Bo> Create(uint64_t size);
  // A BO sharing `resv_owner`'s resv (pass a VM's r_obj(): a VM-private BO). Takes a reference on
  // `resv_owner`, which must itself own its resv (contract).
  static Ref<Bo> CreateSharingResv(uint64_t size, Bo& resv_owner);

  Bo(const Bo&) = delete;
  Bo& operator=(const Bo&) = delete;

  fence::Resv& resv() override { return *resv_; }
  const fence::Resv& resv() const { return *resv_; }
  uint64_t size() const { return size_; }
  // The backing memory, size() bytes. Allocated (zeroed) on the first call; thread-safe.
  std::span<std::byte> memory();

  // The gpuva lock of an immediate-mode VM (obj->gpuva.lock).
  absl::Mutex& gpuva_mu() ABSL_LOCK_RETURNED(gpuva_mu_) { return gpuva_mu_; }

  // kref get / put. Memory ordering: as std::shared_ptr's count.
  void Get() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Put();
  int refs_for_testing() const { return refs_.load(std::memory_order_relaxed); }

  // Live Bo objects in this process (tests check that none leaked).
  static int64_t live_count();

 private:
  friend class VmBo;
  explicit Bo(uint64_t size);
  ~Bo();

  std::atomic<int> refs_{1};
  const uint64_t size_;
  absl::once_flag memory_once_;
  std::unique_ptr<std::byte[]> memory_;
  std::unique_ptr<fence::Resv> own_resv_;
  Ref<Bo> resv_owner_;
  fence::Resv* resv_ = nullptr;
  absl::Mutex gpuva_mu_;
  // The VmBos of this object, one per VM (obj->gpuva.list), intrusive (joining never
  // allocates). Guarded by the gpuva lock (see top).
  internal::IntrusiveList<VmBo, internal::BoTag> vm_bos_;
};

}  // namespace vm

#endif  // UDRM_VM_BO_H_
