// vm::BindRanges — the page-table work of a VM's bind jobs that may still be pending, per VA
// range (issue 12: several bind queues per VM, converging per range).
//
// A bind job changes the page table only inside the ranges of its ops. The tracker maps each
// VA range to the finished fence of the LAST bind job (in VA-tree order) whose ops covered it:
// disjoint intervals, each with one fence. A new bind whose ops overlap an interval whose fence
// has not signalled depends on that fence (Collect, in the prealloc step), then becomes the last
// job of its ranges (Record, in the push step, once its finished fence exists). So, for every
// page, the bind jobs that touch it execute on the page table in the order their binds changed
// the tree (each depends on the previous one for that page, transitively), and the page table
// converges to the tree whatever order the queues' in-fences signal in; binds on disjoint
// ranges do not wait for each other. (msm instead marks the VM unusable when queues race on a
// range; xe orders all binds of a VM through one fence timeline per queue.)
//
// Signalled fences are pruned as Collect meets them, and in an amortised sweep of the whole map,
// so the map holds at most the ranges of unfinished jobs plus what was recorded since the last
// sweep.
//
// Thread-safety: NOT synchronised. Every call is made with the VM resv held (the lock of the VA
// tree, which every bind holds from its lock step to its push step), so submitters need no
// extra lock; the run path (RunJob) never touches it.
#ifndef UDRM_VM_BIND_RANGES_H_
#define UDRM_VM_BIND_RANGES_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "fence/fence.h"
#include "vm/gpuvm_ops.h"

namespace vm {

class BindRanges {
  struct Span {
    uint64_t end = 0;
    fence::FenceRef fence;
  };
  using Map = std::map<uint64_t, Span>;  // start -> span; disjoint

 public:
  // Map nodes pre-allocated for one Record (two per range: the new interval and the tail of an
  // interval the range splits in two), so that Record never allocates.
  class Nodes {
   public:
    size_t size() const { return nodes_.size(); }

   private:
    friend class BindRanges;
    std::vector<Map::node_type> nodes_;
  };

  // Appends to `deps` (without duplicates) the unsignalled fences of the intervals overlapping
  // any of `ranges`. Sets `*saw_error` if an overlapping interval's fence signalled with an error
  // (a bind job that failed or was killed: its page-table work may be missing). Never allocates
  // beyond `deps`'s growth.
  void Collect(std::span<const AddrRange> ranges, std::vector<fence::FenceRef>& deps,
               bool* saw_error);
  // Pre-allocates the nodes for Record(ranges.size() ranges). ResourceExhausted from the failslab
  // hook (vm/internal/failslab.h).
  absl::Status Reserve(size_t ranges, Nodes& nodes);
  // Makes `fence` the last job of every range, in order. Never allocates (takes from `nodes`;
  // may free nodes and drop fence references).
  void Record(std::span<const AddrRange> ranges, const fence::FenceRef& fence, Nodes& nodes);
  // Drops every interval (VM close).
  void Clear() { map_.clear(); }

  size_t intervals() const { return map_.size(); }
  // The fence recorded for `addr`, or null (tests).
  fence::Fence* LastAt(uint64_t addr) const;

 private:
  void RecordOne(AddrRange r, const fence::FenceRef& fence, Nodes& nodes);
  void Sweep();

  Map map_;
  size_t sweep_at_ = 64;
};

}  // namespace vm

#endif  // UDRM_VM_BIND_RANGES_H_
