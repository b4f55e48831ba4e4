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

// Appends an entry built in place: a temporary copied in (push_back of a braced entry) was read
// back with wide loads over its narrow stores, a store-forwarding stall per entry (3% of a
// 64-op bind). (Not emplace_back with the fields: clang 14 has no parenthesised aggregate init;
// flatten: the vector's emplace_back() inlined here rather than called at each site.)
[[gnu::flatten]] void Add(BindPlan& plan, BindEntry::Kind kind, uint64_t va, uint64_t range,
                          size_t op, Gpuva* node = nullptr) {
  PlannedEntry& e = plan.entries.emplace_back();
  e.kind = kind;
  e.va = va;
  e.range = range;
  e.op = op;
  e.node = node;
}

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
    Add(plan, BindEntry::Kind::kUnmap, from, to - from, index);
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
    Add(plan, BindEntry::Kind::kMap, lo, op.range, index);
    ++plan.vas;
    set.emplace(lo, hi);
  }
}

// The common list needs no replay: ops in address order, pairwise disjoint, and no VA of the tree
// overlapping two of them. Then every op meets exactly the tree's VAs over its range — an earlier
// op of the list changes only the VAs it overlaps and inserts only inside its own range — and
// the entries follow from the tree directly, each unmap entry with its VA (`node`). One walk per
// run of ops that touch each other (each starting where the previous one ends): a list of
// neighbouring ops costs one search, not one per op. False (plan left partial: discard it)
// otherwise.
bool PlanDirect(const Gpuvm& vm, std::span<const BindOp> ops, BindPlan& plan) {
  const Gpuva* last = nullptr;  // the last VA the previous runs met
  for (size_t first = 0; first < ops.size();) {
    // The run [first, stop): each op starts where the previous one ends.
    size_t stop = first + 1;
    while (stop < ops.size() && ops[stop].va == ops[stop - 1].va + ops[stop - 1].range) ++stop;
    if (first > 0 && ops[first].va < ops[first - 1].va + ops[first - 1].range) return false;
    size_t i = first;  // the op the walk is at
    auto finish = [&](size_t op) {
      if (ops[op].kind != BindOpKind::kUnmap) {
        Add(plan, BindEntry::Kind::kMap, ops[op].va, ops[op].range, op);
        ++plan.vas;
      }
    };
    bool first_va = true;
    for (Gpuva* va : vm.Range(ops[first].va, ops[stop - 1].va + ops[stop - 1].range)) {
      if (va == &vm.kernel_node()) continue;
      // A VA overlapping an earlier run's op and this one is the last one that run met.
      if (first_va && va == last) return false;
      first_va = false;
      last = va;
      while (ops[i].va + ops[i].range <= va->addr) finish(i++);  // ops before the VA are done
      const uint64_t lo = ops[i].va;
      const uint64_t hi = lo + ops[i].range;
      if (va->end() > hi && i + 1 < stop) return false;  // it overlaps the next op too
      const uint64_t from = std::max(va->addr, lo);
      Add(plan, BindEntry::Kind::kUnmap, from, std::min(va->end(), hi) - from, i, va);
      ++plan.removed;
      if (va->addr < lo) ++plan.vas;
      if (va->end() > hi) ++plan.vas;
    }
    while (i < stop) finish(i++);
    first = stop;
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
