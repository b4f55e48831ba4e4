#include "vm/bind_plan.h"

#include <algorithm>
#include <iterator>
#include <span>

#include "absl/container/btree_map.h"

#include "vm/internal/failslab.h"

namespace vm {
namespace {

// start -> end, disjoint. A B-tree: a few node allocations per bind instead of one per range.
using Intervals = absl::btree_map<uint64_t, uint64_t>;

// Replays one op on `set`, appending its entries to `plan`.
void PlanOp(const BindOp& op, size_t index, Intervals& set, BindPlan& plan) {
  const uint64_t lo = op.va;
  const uint64_t hi = op.va + op.range;
  auto it = set.upper_bound(lo);
  if (it != set.begin() && std::prev(it)->second > lo) --it;
  while (it != set.end() && it->first < hi) {
    const uint64_t start = it->first;
    const uint64_t end = it->second;
    const uint64_t from = std::max(start, lo);
    const uint64_t to = std::min(end, hi);
    plan.entries.push_back({BindEntry::Kind::kUnmap, from, to - from, index});
    ++plan.removed;
    it = set.erase(it);
    if (start < lo) {  // remap: prev piece (an insert invalidates B-tree iterators: find again)
      set.emplace(start, lo);
      ++plan.vas;
      it = set.lower_bound(lo);
    }
    if (end > hi) {  // remap: next piece (nothing after it overlaps the op)
      set.emplace(hi, end);
      ++plan.vas;
      break;
    }
  }
  if (op.kind != BindOpKind::kUnmap) {
    plan.entries.push_back({BindEntry::Kind::kMap, lo, op.range, index});
    ++plan.vas;
    set.emplace(lo, hi);
  }
}

// The common list needs no replay: ops in address order, pairwise disjoint, and no VA of the tree
// overlapping two of them. Then every op meets exactly the tree's VAs over its range — an earlier
// op of the list changes only the VAs it overlaps and inserts only inside its own range — and
// the entries follow from the tree directly. False (plan left partial: discard it) otherwise.
bool PlanDirect(const Gpuvm& vm, std::span<const BindOp> ops, BindPlan& plan) {
  const Gpuva* last = nullptr;  // the last VA the previous ops met
  for (size_t i = 0; i < ops.size(); ++i) {
    const BindOp& op = ops[i];
    const uint64_t lo = op.va;
    const uint64_t hi = op.va + op.range;
    if (i > 0 && lo < ops[i - 1].va + ops[i - 1].range) return false;
    bool first = true;
    for (Gpuva* va : vm.Range(lo, hi)) {
      if (va == &vm.kernel_node()) continue;
      // Ops in order: a VA overlapping an earlier op and this one is the last one it met.
      if (first && va == last) return false;
      first = false;
      last = va;
      const uint64_t from = std::max(va->addr, lo);
      plan.entries.push_back({BindEntry::Kind::kUnmap, from, std::min(va->end(), hi) - from, i});
      ++plan.removed;
      if (va->addr < lo) ++plan.vas;
      if (va->end() > hi) ++plan.vas;
    }
    if (op.kind != BindOpKind::kUnmap) {
      plan.entries.push_back({BindEntry::Kind::kMap, lo, op.range, i});
      ++plan.vas;
    }
  }
  return true;
}

}  // namespace

absl::Status PlanBind(const Gpuvm& vm, std::span<const BindOp> ops, BindPlan& plan) {
  if (internal::ShouldFailAlloc("bind plan")) {
    return absl::ResourceExhaustedError("bind: allocating the plan failed");
  }
  plan.entries.clear();
  plan.vas = plan.removed = 0;
  plan.entries.reserve(2 * ops.size());
  if (PlanDirect(vm, ops, plan)) return absl::OkStatus();
  plan.entries.clear();
  plan.vas = plan.removed = 0;
  Intervals set;
  for (const BindOp& op : ops) {
    for (Gpuva* va : vm.Range(op.va, op.va + op.range)) {
      if (va != &vm.kernel_node()) set.emplace(va->addr, va->end());
    }
  }
  for (size_t i = 0; i < ops.size(); ++i) PlanOp(ops[i], i, set, plan);
  return absl::OkStatus();
}

absl::StatusOr<BindPlan> PlanBind(const Gpuvm& vm, std::span<const BindOp> ops) {
  BindPlan plan;
  if (absl::Status s = PlanBind(vm, ops, plan); !s.ok()) return s;
  return plan;
}

}  // namespace vm
