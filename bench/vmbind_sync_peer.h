// The peer of vmbind_bench: a synchronous VM_BIND as a careful engineer would write it without
// fences, jobs or a scheduler.
//
// One VM mutex serialises binds. Under it a bind validates every op, reserves the page-table
// pages of the whole list at once (PageTable::ListBound, the list-level reservation udrm's bind
// uses too, so nothing can fail once the first op is applied), then applies each op in order to
// a std::map VA tree (splitting the mappings it overlaps: the pieces outside the op survive with adjusted offsets, as drm_gpuvm's
// split/merge does) and to the page table (vm::PageTable, the same as udrm's, so the comparison
// is about the bind path only). It then unlocks and, inline on the caller's thread, waits for ONE
// grace period for the whole list (PageTable::Release) and only then drops the references on the
// BOs whose mappings it removed — the golden rule, synchronously.
//
// Device addresses: each BO gets a 4 GiB slot of a device window the first time it is mapped
// (kept for the VM's life); sparse mappings carry kPteSparse and no target.
// Thread-safety: Bind from any number of threads; readers Translate through page_table() inside
// an RcuReadSection.
#ifndef UDRM_BENCH_VMBIND_SYNC_PEER_H_
#define UDRM_BENCH_VMBIND_SYNC_PEER_H_

#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "vm/bind_op.h"
#include "vm/bo.h"
#include "vm/page_table.h"

namespace udrm::bench {

class SyncVm {
 public:
  SyncVm() : pt_(*vm::PageTable::Create(48)) {}
  ~SyncVm() {
    absl::MutexLock l(&mu_);
    if (tree_.empty()) return;
    const uint64_t lo = tree_.begin()->first;
    const uint64_t hi = std::prev(tree_.end())->second.end;
    vm::Prealloc pre = *pt_->ReserveForUnmap(lo, hi - lo);
    vm::Invalidation inv = pt_->Unmap(lo, hi - lo, pre);
    pt_->Unreserve(std::move(pre));
    pt_->Release(std::move(inv));
    tree_.clear();
  }

  vm::PageTable& page_table() const { return *pt_; }

  // Applies `ops` in order; returns once the page table reflects them and the memory of every
  // mapping they removed may be reused. InvalidArgument (nothing changed) on a bad op.
  absl::Status Bind(std::span<const vm::BindOp> ops) ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<vm::Ref<vm::Bo>> dropped;
    vm::Invalidation inv;
    {
      absl::MutexLock l(&mu_);
      vm::PageTable::ListBound bound(*pt_);
      std::vector<uint64_t> targets(ops.size());
      for (size_t i = 0; i < ops.size(); ++i) {
        const vm::BindOp& op = ops[i];
        if (op.range == 0 || (op.va | op.range) % vm::PageBytes(vm::PageSize::k4K) != 0 ||
            (op.kind == vm::BindOpKind::kMap) != (op.bo != nullptr) ||
            (op.bo != nullptr && op.bo_offset + op.range > op.bo->size())) {
          return absl::InvalidArgumentError("bad bind op");
        }
        absl::Status s;
        if (op.kind == vm::BindOpKind::kUnmap) {
          s = bound.AddUnmap(op.va, op.range);
        } else {
          targets[i] = op.bo == nullptr ? 0 : DeviceBaseLocked(op.bo) + op.bo_offset;
          s = bound.AddMap(op.va, op.range, targets[i], PteFlags(op), op.page_size);
        }
        if (!s.ok()) return s;
      }
      vm::Prealloc pre;
      pt_->Reserve(bound, pre);
      for (size_t i = 0; i < ops.size(); ++i) ApplyLocked(ops[i], targets[i], pre, inv, dropped);
      pt_->Unreserve(std::move(pre));
    }
    pt_->Release(std::move(inv));  // one grace period for the list, outside the VM mutex
    dropped.clear();               // only now may the BOs' memory go
    return absl::OkStatus();
  }

 private:
  struct Mapping {
    uint64_t end = 0;
    vm::Ref<vm::Bo> bo;  // null: sparse
    uint64_t offset = 0;
  };

  static uint32_t PteFlags(const vm::BindOp& op) {
    uint32_t f = 0;
    if (op.flags & vm::kBindRead) f |= vm::kPteRead;
    if (op.flags & vm::kBindWrite) f |= vm::kPteWrite;
    if (op.kind == vm::BindOpKind::kMapNull) f |= vm::kPteSparse;
    return f;
  }

  uint64_t DeviceBaseLocked(vm::Bo* bo) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto [it, inserted] = device_base_.try_emplace(bo, 0);
    if (inserted) it->second = (++next_slot_) << 32;
    return it->second;
  }

  // Removes [va, end) from the tree: the parts of overlapping mappings outside it survive.
  // Returns whether anything overlapped.
  bool SplitOutLocked(uint64_t va, uint64_t end, std::vector<vm::Ref<vm::Bo>>& dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = tree_.upper_bound(va);
    if (it != tree_.begin() && std::prev(it)->second.end > va) --it;
    bool any = false;
    while (it != tree_.end() && it->first < end) {
      any = true;
      const uint64_t start = it->first;
      Mapping m = std::move(it->second);
      it = tree_.erase(it);
      if (start < va) tree_.emplace(start, Mapping{va, m.bo, m.offset});
      if (m.end > end) {
        it = tree_.emplace(end, Mapping{m.end, m.bo, m.offset + (end - start)}).first;
        ++it;
      }
      if (m.bo) dropped.push_back(std::move(m.bo));
    }
    return any;
  }

  void ApplyLocked(const vm::BindOp& op, uint64_t target, vm::Prealloc& pre, vm::Invalidation& inv,
                   std::vector<vm::Ref<vm::Bo>>& dropped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool overlapped = SplitOutLocked(op.va, op.va + op.range, dropped);
    if (op.kind == vm::BindOpKind::kUnmap) {
      if (overlapped) inv.Absorb(pt_->Unmap(op.va, op.range, pre));
      return;
    }
    tree_.emplace(op.va, Mapping{op.va + op.range, vm::Ref<vm::Bo>::Share(op.bo), op.bo_offset});
    inv.Absorb(pt_->Map(op.va, op.range, target, PteFlags(op), op.page_size, pre));
  }

  absl::Mutex mu_;
  std::map<uint64_t, Mapping> tree_ ABSL_GUARDED_BY(mu_);  // by start address
  absl::flat_hash_map<const vm::Bo*, uint64_t> device_base_ ABSL_GUARDED_BY(mu_);
  uint64_t next_slot_ ABSL_GUARDED_BY(mu_) = 0;
  const std::unique_ptr<vm::PageTable> pt_;
};

}  // namespace udrm::bench

#endif  // UDRM_BENCH_VMBIND_SYNC_PEER_H_
