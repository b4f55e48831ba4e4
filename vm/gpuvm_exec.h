// vm exec helpers (drm_gpuvm_prepare_*, drm_gpuvm_exec_lock*, drm_gpuvm_validate,
// drm_gpuvm_resv_add_fence, and the seed's drm_gpuvm_sm_{map,unmap}_exec_lock).
//
// They lock the resvs a VM operation needs through an exec::Exec, inside its retry loop: every
// function here returns the Exec's statuses unchanged (a back-off status makes
// Exec::UntilAllLocked run the body again). With num_fences == 0 an object is only locked;
// otherwise it is also given num_fences fence slots (drm_exec_prepare_obj).
//
// Locking order (the kernel's): the VM resv first (PrepareVm) — it guards the extobj/evict lists
// in kResvProtected VMs — then the BOs. VM-private BOs share the VM resv, so an Exec used with
// these helpers needs Exec::kIgnoreDuplicates whenever it may meet one twice.
// The tree walks (PrepareRange, SmMapExecLock, SmUnmapExecLock) read the tree: the caller
// serialises them with tree changes (the driver's VM lock), outside the Exec.
#ifndef UDRM_VM_GPUVM_EXEC_H_
#define UDRM_VM_GPUVM_EXEC_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <stop_token>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "exec/exec.h"
#include "fence/fence.h"
#include "fence/resv.h"
#include "vm/gpuvm.h"
#include "vm/gpuvm_ops.h"

namespace vm {

// drm_gpuvm_prepare_vm: locks (prepares) the VM's resv object.
absl::Status PrepareVm(Gpuvm& vm, exec::Exec& exec, size_t num_fences);
// drm_gpuvm_prepare_objects: locks (prepares) every extobj; in a kResvProtected VM it also moves
// the evicted ones onto the evict list (call PrepareVm first: the VM resv must be held).
absl::Status PrepareObjects(Gpuvm& vm, exec::Exec& exec, size_t num_fences);
// drm_gpuvm_prepare_range: locks (prepares) the BO of every VA overlapping [addr, addr+range);
// sparse/NULL VAs have none and are skipped. InvalidArgument (nothing locked) for a bad range.
absl::Status PrepareRange(Gpuvm& vm, exec::Exec& exec, uint64_t addr, uint64_t range,
                          size_t num_fences);

// drm_gpuvm_exec: an Exec bound to a VM, with the exec_lock entry points. The Exec is created by
// the constructor (drm_exec_init) and finished by the destructor (drm_gpuvm_exec_unlock).
class GpuvmExec {
 public:
  GpuvmExec(Gpuvm& vm, uint32_t exec_flags, size_t num_fences, std::stop_token cancel = {})
      : vm_(vm), num_fences_(num_fences), exec_(exec_flags, std::move(cancel)) {}

  // drm_gpuvm_exec_lock: until everything is locked without contention: PrepareVm,
  // PrepareObjects, then the driver hook `extra` (vm_exec->extra.fn), each with num_fences.
  // Returns the first status that is not a back-off (the caller then destroys this object).
  absl::Status ExecLock(absl::FunctionRef<absl::Status(GpuvmExec&)> extra);
  absl::Status ExecLock();
  // drm_gpuvm_exec_lock_array: ExecLock with `objs` prepared by the hook.
  absl::Status ExecLockArray(std::span<exec::Object* const> objs);
  // drm_gpuvm_exec_lock_range: ExecLock with PrepareRange(addr, range) as the hook.
  absl::Status ExecLockRange(uint64_t addr, uint64_t range);

  Gpuvm& vm() { return vm_; }
  exec::Exec& exec() { return exec_; }
  size_t num_fences() const { return num_fences_; }

 private:
  Gpuvm& vm_;
  const size_t num_fences_;
  exec::Exec exec_;
};

// drm_gpuvm_validate: calls Options::vm_bo_validate for every VmBo on the evict list (in a
// kResvProtected VM, then drops those no longer evicted from it). Unimplemented if the VM has no
// hook (the kernel returns -EOPNOTSUPP when ops->vm_bo_validate is missing: a driver choice, not
// unfinished work); else the first hook error. Contract: the VM resv and the evicted BOs are locked.
absl::Status Validate(Gpuvm& vm, exec::Exec& exec);

// drm_gpuvm_resv_add_fence: adds `fence` to the resv of every object `exec` has locked, with
// `private_usage` for the VM resv (every private BO) and `extobj_usage` for the others.
// Contract: each has a reserved slot (locked with num_fences > 0). Never blocks.
void ResvAddFence(Gpuvm& vm, exec::Exec& exec, const fence::FenceRef& fence,
                  fence::ResvUsage private_usage, fence::ResvUsage extobj_usage);

// drm_gpuvm_sm_map_exec_lock: prepares req's BO with num_fences slots and locks the BO of every
// VA the request would remap or unmap — walking split/merge WITHOUT changing the tree. Bad
// request: InvalidArgument before anything is locked.
//
// drm_gpuvm_sm_unmap_exec_lock: locks the BO of every VA an unmap of [addr, addr+range) would
// remap or unmap.
//
// Use them inside one Exec (kIgnoreDuplicates is required, kInterruptibleWait recommended) for
// ALL the ops of a bind, so every lock is taken before the VM is modified:
//
//   exec::Exec exec(exec::Exec::kIgnoreDuplicates | exec::Exec::kInterruptibleWait, cancel);
//   absl::Status s = exec.UntilAllLocked([&](exec::Exec& e) -> absl::Status {
//     for (const BindOp& op : ops) {
//       absl::Status st = op.is_map ? SmMapExecLock(vm, e, 1, op.req)
//                                   : SmUnmapExecLock(vm, e, op.addr, op.range);
//       if (!st.ok()) return st;
//     }
//     return absl::OkStatus();
//   });
//
// Several ops before the tree reflects the earlier ones: unlike *OpsCreate, this is allowed,
// because an earlier op can only change the steps of a later, overlapping op in ways that involve
// BOs the earlier op's locking step already covered:
//  1. An earlier UNMAP (or MAP) removes VAs a later op would have remapped or unmapped: the later
//     walk still sees them on the unmodified tree and locks their BOs — more than needed, never
//     less.
//  2. An earlier MAP creates a VA that a later MAP/UNMAP overlaps, adding a REMAP/UNMAP step the
//     unmodified tree does not show: its BO is the earlier MAP's, which was prepared then.
// Example: op 1 maps BO A at [0x1000, 0x3000), op 2 unmaps [0x2000, 0x4000). After op 1 the
// real op 2 remaps A's new VA; the walk of op 2 on the unmodified tree does not see it, but A
// was prepared by op 1 (case 2). The ops must be locked in the order they will be applied.
absl::Status SmMapExecLock(Gpuvm& vm, exec::Exec& exec, size_t num_fences, const MapRequest& req);
absl::Status SmUnmapExecLock(Gpuvm& vm, exec::Exec& exec, uint64_t addr, uint64_t range);

}  // namespace vm

#endif  // UDRM_VM_GPUVM_EXEC_H_
