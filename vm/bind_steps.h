// The steps of one VM_BIND (BindVm::Submit runs them in this order; each is callable alone so a
// test can name it). The VA tree is guarded by the VM resv: Prealloc, Apply and Push need it
// locked (by Lock's exec), Validate does not.
//
//  1. ValidateBind: everything checkable without locks. InvalidArgument, or FailedPrecondition
//     for an unusable/closed VM. Changes nothing.
//  2. LockBind: in one exec::Exec (kIgnoreDuplicates | kInterruptibleWait, one until-all-locked
//     loop): the VM resv with one fence slot, then per op SmMapExecLock (the mapped BO with one
//     fence slot) or SmUnmapExecLock — every lock before any change (see vm/gpuvm_exec.h for why
//     locking several ops on the unmodified tree suffices). CancelledError when cancelled.
//     The resv fence slots are reserved here (the exec prepares them).
//  3. PreallocBind: the worst case for the whole list, into the job: Gpuva nodes (a map 1, the
//     remaps of one op at most 2 — only the first and last VA it overlaps can stick out), op-list
//     capacity (per op: the VAs it may meet — those overlapping it now plus every node the
//     earlier ops may create — plus its map), one VmBo per mapped BO, the page-table
//     reservations (ReservePageTables), device addresses, BO memory, the dependencies.
//     ResourceExhausted (or InvalidArgument from the page table) with nothing changed.
//  4. ApplyBind: each op through SmMap/SmUnmap with callbacks that change the tree at once and
//     append to the job's ONE op list, as msm: a map appends MAP; a remap appends UNMAP of the
//     hole only (the surviving pieces keep their PTEs); an unmap appends UNMAP of the VA. Uses
//     only the pre-allocated nodes, list capacity and VmBos (the Gpuvm's btree and extobj list
//     still allocate inside vm/gpuvm*: not ours to change). Cannot fail (crashes on a broken
//     contract).
//  5. Push (BindVm::PushLocked): arm, add the finished fence to the VM resv with kBookkeep (as
//     xe does for bind fences on the VM) and to the resv of each mapped external BO with kKernel
//     (as msm does for the BOs a VM_BIND maps, so eviction waits for the bind), push.
#ifndef UDRM_VM_BIND_STEPS_H_
#define UDRM_VM_BIND_STEPS_H_

#include <cstddef>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "exec/exec.h"
#include "fence/fence.h"
#include "vm/bind_job.h"
#include "vm/bind_op.h"
#include "vm/bind_vm.h"

namespace vm {

absl::Status ValidateBind(const BindVm& vm, std::span<const BindOp> ops,
                          std::span<const fence::FenceRef> in_fences);

// Runs exec.UntilAllLocked; returns its status.
absl::Status LockBind(BindVm& vm, exec::Exec& exec, std::span<const BindOp> ops);

// Creates the job (Init on `entity`, dependencies: in-fences and the VM's last bind job) with
// every pre-allocation. On error nothing is left behind.
absl::StatusOr<std::unique_ptr<BindJob>> PreallocBind(BindVm& vm, sched::Entity& entity,
                                                      std::span<const BindOp> ops,
                                                      std::span<const fence::FenceRef> in_fences);

// The page-table part of PreallocBind, kept in one function so that a list-level reservation
// (one covering the whole op list applied in order) can replace it: per op, ReserveForUnmap of
// its range for the unmap entries it produces (only its two ends can split a large page; every
// other unmap boundary is a VA boundary), plus ReserveForMap of its range for its map entry.
// On error, whatever was reserved is returned to the page table.
absl::StatusOr<std::vector<OpTables>> ReservePageTables(PageTable& pt, std::span<const BindOp> ops,
                                                       std::span<const uint64_t> targets);
// Hands every reservation back (what Map/Unmap did not use).
void UnreservePageTables(PageTable& pt, std::vector<OpTables>& tables);

// Worst-case counts used by PreallocBind (exposed for tests that prove the bound).
struct BindBounds {
  size_t vas = 0;      // Gpuva nodes
  size_t entries = 0;  // op-list entries (also the bound on removed VAs)
};
BindBounds BindWorstCase(const Gpuvm& vm, std::span<const BindOp> ops);

void ApplyBind(BindVm& vm, std::span<const BindOp> ops, BindJob& job);

}  // namespace vm

#endif  // UDRM_VM_BIND_STEPS_H_
