// The steps of one VM_BIND (BindVm::Submit runs them in this order; each is callable alone so a
// test can name it). The VA tree is guarded by the VM resv: Prealloc, Apply and Push need it
// locked (by Lock's exec), Validate does not.
//
//  1. ValidateBind: everything checkable without locks. InvalidArgument, or FailedPrecondition
//     for an unusable/closed VM. Changes nothing.
//  2. LockBind: in one exec::Exec (kIgnoreDuplicates | kInterruptibleWait, one until-all-locked
//     loop): the VM resv with one fence slot, then each mapped BO once with one fence slot, then
//     the BO of every VA overlapping an op's range on the unmodified tree — what SmMapExecLock /
//     SmUnmapExecLock would lock op by op, found in one walk per run of ops whose ranges join
//     (see vm/gpuvm_exec.h for why locking several ops on the unmodified tree suffices); an
//     object the exec already holds is skipped without a call. Every lock before any change.
//     CancelledError when cancelled. The resv fence slots are reserved here.
//  3. PreallocBind: exactly what the list needs, into the job, from the plan (vm/bind_plan.h:
//     the entries ApplyBind will append, computed on a copy of the touched ranges): Gpuva nodes
//     (each map one, each remap one per surviving piece), op-list capacity, the removed-VA list,
//     one VmBo per mapped BO, ONE page-table reservation for the whole list
//     (ReservePageTables), the tree nodes of its inserts (Gpuvm::ReserveInserts), device
//     addresses, the dependencies (in-fences, and the pending
//     page-table work of other binds on overlapping ranges: vm/bind_ranges.h), the range-tracker
//     nodes of the push step (BindVm::Submit reserves them only for a bind it pushes: the CPU
//     fast path records nothing). Every allocation site asks the failslab hook first
//     (vm/internal/failslab.h). ResourceExhausted (or InvalidArgument from the page table) with
//     nothing changed. BindVm::Submit runs it in parts around the BO locks (see below).
//  4. ApplyBind: each op through split/merge steps that change the tree at once and append to
//     the job's ONE op list, as msm: a map appends MAP; a remap appends UNMAP of the hole only
//     (the surviving pieces keep their PTEs); an unmap appends UNMAP of the VA. The steps are
//     SmMap/SmUnmap's; when the plan names the VAs each op meets (a plan without replay,
//     vm/bind_plan.h) they are handed over from the plan without the walk. Uses
//     only the pre-allocated nodes, list capacity, VmBos and tree nodes (Gpuvm::ReserveInserts
//     for the planned Gpuvas; the VmBo lists are intrusive): allocates nothing
//     (tests/vm/bind_alloc_test.cc). Cannot fail (crashes on a broken contract, e.g. an entry
//     that differs from the plan).
//  5. Push (BindVm::PushLocked): arm, add the finished fence to the VM resv with kBookkeep (as
//     xe does for bind fences on the VM) and to the resv of each mapped external BO with kKernel
//     (as msm does for the BOs a VM_BIND maps, so eviction waits for the bind), record it in the
//     range tracker as the last job of its ops' ranges, push.
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
#include "vm/bind_plan.h"
#include "vm/bind_vm.h"

namespace vm {

absl::Status ValidateBind(const BindVm& vm, std::span<const BindOp> ops,
                          std::span<const fence::FenceRef> in_fences);

// Runs exec.UntilAllLocked (PrepareVm, then LockBindBos); returns its status.
absl::Status LockBind(BindVm& vm, exec::Exec& exec, std::span<const BindOp> ops);
// The BO part of LockBind, for a body of the caller's until-all-locked loop that has locked the
// VM resv: returns the exec's statuses unchanged (a back-off makes the loop run the body again).
absl::Status LockBindBos(BindVm& vm, exec::Exec& exec, std::span<const BindOp> ops);

// Creates the job (Init on `entity`, dependencies: in-fences and the unfinished bind jobs on
// overlapping ranges) with every pre-allocation. On error nothing is left behind — except that a
// failed or killed bind job met on the ranges marks the VM unusable (FailedPrecondition).
absl::StatusOr<std::unique_ptr<BindJob>> PreallocBind(BindVm& vm, sched::Entity& entity,
                                                      std::span<const BindOp> ops,
                                                      std::span<const fence::FenceRef> in_fences);
// PreallocBind in parts (it is PreallocBindTree, then PreallocBindBos and PreallocPush on its
// job), for a
// caller that locks the BOs only after the first: PreallocBindTree needs the VM resv (the tree,
// the range tracker) and nothing else; PreallocBindBos (each mapped BO's VmBo, the external BOs'
// resv list) needs the BOs locked too. A job from PreallocBindTree stays valid while the tree
// and the range tracker are unchanged (BindVm::tree_changes() the same), even across a back-off
// that unlocked the VM resv. Errors as PreallocBind; on error the job is the caller's to drop.
absl::StatusOr<std::unique_ptr<BindJob>> PreallocBindTree(
    BindVm& vm, sched::Entity& entity, std::span<const BindOp> ops,
    std::span<const fence::FenceRef> in_fences);
absl::Status PreallocBindBos(BindVm& vm, std::span<const BindOp> ops, BindJob& job);
// The part of PreallocBind that only the push step uses: the range-tracker nodes of
// BindRanges::Record. A bind on the CPU fast path records nothing and skips it (BindVm::Submit
// calls it once it knows the bind is pushed, still before ApplyBind). ResourceExhausted from the
// failslab hook; nothing to undo on error.
absl::Status PreallocPush(BindVm& vm, BindJob& job);

// The page-table calls of an op list (planned or built): one Map per map entry, one Unmap per run
// of unmap entries that follow each other in the list and in the VA space (each starting where
// the previous one ends) — unmapping the neighbours one by one or at once leaves the same table,
// and one call needs one worst-case reservation instead of one per entry. Returns the end (one
// past the last entry) of the call that starts at entry `k`. Works on PlannedEntry and BindEntry
// lists alike, so the reservation and RunJob group the same way.
template <typename Entries>
size_t PageTableCallEnd(const Entries& entries, size_t k) {
  size_t end = k + 1;
  if (entries[k].kind != BindEntry::Kind::kUnmap) return end;
  while (end < entries.size() && entries[end].kind == BindEntry::Kind::kUnmap &&
         entries[end].va == entries[end - 1].va + entries[end - 1].range) {
    ++end;
  }
  return end;
}

// The page-table part of PreallocBind: each page-table call of the plan (PageTableCallEnd) in
// order — an unmap of its range, or a map of its range, target and flags — goes into one
// PageTable::ListBound, and the whole list is reserved into `list` at once (vm/page_table.h), so
// that the reservation covers the whole op list applied in order in any table state. On error
// nothing was reserved (`list` is unchanged). ResourceExhausted from the failslab hook,
// InvalidArgument from the page table.
absl::Status ReservePageTables(PageTable& pt, std::span<const BindOp> ops,
                               std::span<const PlannedEntry> plan,
                               std::span<const uint64_t> targets, Prealloc& list);
// Hands the reservation back (what Map/Unmap did not use). `list` is empty afterwards.
void UnreservePageTables(PageTable& pt, Prealloc& list);

void ApplyBind(BindVm& vm, std::span<const BindOp> ops, BindJob& job);

}  // namespace vm

#endif  // UDRM_VM_BIND_STEPS_H_
