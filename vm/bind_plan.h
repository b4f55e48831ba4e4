// vm::PlanBind — the exact page-table work of a bind, computed before the VA tree changes.
//
// ApplyBind turns each op into split/merge steps on the tree as the earlier ops of the same bind
// left it, and appends one op-list entry per step: for every VA the op overlaps, UNMAP of the
// overlap (a remap's hole, or the whole VA), then, for a map, MAP of the op's range. Which VAs an
// op overlaps depends only on the VA ranges in the tree, not on BOs or offsets, so PlanBind
// replays the ops on a copy of just the ranges the ops touch (an interval set) and returns the
// same entries, in the same order, that ApplyBind will produce — and so the exact number of
// Gpuva nodes (each map one, each remap one per surviving piece) and of removed VAs. A list in
// address order whose ops are disjoint and share no VA of the tree needs no replay: its entries
// follow from the tree directly (one walk per run of ops that touch each other), and its unmap
// entries name their VAs (PlannedEntry::node).
//
// The prealloc step reserves page tables for the planned page-table calls at once (one
// PageTable::ListBound, one Prealloc): the page table guarantees that the bound covers that
// sequence of Map/Unmap calls in any table state, so the job's op list can never run short.
// ApplyBind checks (UDRM_CHECK) that it appends exactly the planned entries.
//
// Thread-safety: reads the tree; the caller holds the VM resv (the tree's lock).
#ifndef UDRM_VM_BIND_PLAN_H_
#define UDRM_VM_BIND_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "vm/bind_op.h"
#include "vm/gpuvm.h"

namespace vm {

struct PlannedEntry {
  BindEntry::Kind kind = BindEntry::Kind::kMap;
  uint64_t va = 0;
  uint64_t range = 0;
  size_t op = 0;  // index of the BindOp that produces it
  // An unmap entry of a plan that needed no replay (the common list, see bind_plan.cc): the
  // tree's VA it removes or remaps, which ApplyBind hands to its step without a walk (the tree
  // is unchanged until the op comes: no earlier op of such a list touches it). Else null.
  Gpuva* node = nullptr;
  friend bool operator==(const PlannedEntry&, const PlannedEntry&) = default;
};

struct BindPlan {
  std::vector<PlannedEntry> entries;  // in op-list order
  size_t vas = 0;                     // Gpuva nodes ApplyBind inserts (maps and remap pieces)
  size_t removed = 0;                 // VAs ApplyBind removes (one per unmap entry)
};

// ResourceExhausted only from the failslab hook (vm/internal/failslab.h). Contract: the ops were
// validated (ValidateBind).
absl::StatusOr<BindPlan> PlanBind(const Gpuvm& vm, std::span<const BindOp> ops);
// The same into `plan`, whose entries' capacity is reused (a bind job's recycled list): its
// previous contents are replaced. On error `plan` is unspecified.
absl::Status PlanBind(const Gpuvm& vm, std::span<const BindOp> ops, BindPlan& plan);

}  // namespace vm

#endif  // UDRM_VM_BIND_PLAN_H_
