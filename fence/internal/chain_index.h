// fence::internal::ChainIndex — the seqno index of one run of a timeline (fence_chain.h).
//
// Not a public API. A run is a line of FenceChain nodes of one context, each created from the
// run's newest node, so their seqnos strictly increase. The index lists the live ones as
// (seqno, raw pointer) pairs, sorted, in one contiguous array: a lookup is a branch-free binary
// search. It holds no reference: a node removes itself in its destructor (Erase), under the
// index's mutex, so a pointer read under the mutex is at worst a node whose last reference is
// gone and whose destructor waits for the mutex; FirstLiveAtOrAfter skips those.
//
// Costs: Append O(1) amortised; Erase O(1) at either end (the usual cases: the head released, or
// GC freeing the oldest points), otherwise O(min(distance to an end)) moves of 16-byte entries;
// FirstLiveAtOrAfter O(log n). Memory: 16 B per live node, plus at most as many again of slack
// (the array is compacted when half of it is dead prefix, shrunk when a quarter is used).
//
// Thread-safety: every method may be called concurrently; each takes the mutex. No reference is
// dropped under the mutex (a FenceChain destructor would take it).
#ifndef UDRM_FENCE_INTERNAL_CHAIN_INDEX_H_
#define UDRM_FENCE_INTERNAL_CHAIN_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "fence/fence.h"

namespace fence::internal {

class ChainIndex final {
 public:
  ChainIndex() = default;
  ChainIndex(const ChainIndex&) = delete;
  ChainIndex& operator=(const ChainIndex&) = delete;

  // Adds `link` (seqno `seqno`) as the run's newest node if `prev` is the newest now; else false
  // and nothing changes. Contract: seqno is above prev's.
  bool AppendAfter(const Fence* prev, uint64_t seqno, Fence* link) ABSL_LOCKS_EXCLUDED(mu_);
  // Adds the first node of a new run.
  void Start(uint64_t seqno, Fence* link) ABSL_LOCKS_EXCLUDED(mu_);
  // Removes `link` (seqno `seqno`); a no-op if it is not listed.
  void Erase(uint64_t seqno, const Fence* link) ABSL_LOCKS_EXCLUDED(mu_);
  // A reference to the live node with the lowest seqno in [lo, hi), or null. Contract: every
  // node listed in that range finished construction (make_shared returned).
  FenceRef FirstLiveAtOrAfter(uint64_t lo, uint64_t hi) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    uint64_t seqno;
    Fence* link;
  };
  // Position of the first entry with seqno >= `seqno` in [first_, size).
  size_t LowerBound(uint64_t seqno) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Compact() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);  // live nodes are entries_[first_..]
  size_t first_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fence::internal

#endif  // UDRM_FENCE_INTERNAL_CHAIN_INDEX_H_
