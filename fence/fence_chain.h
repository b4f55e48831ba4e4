// fence::FenceChain — dma_fence_chain: one point of a timeline (a timeline semaphore).
//
// What it is: a node that links a *contained* fence (the work of this point) to the previous
// point. A node has a 64-bit seqno (its timeline point) and signals when its own fence and every
// earlier fence of the chain have signalled. Walking the chain garbage-collects: links whose
// contained fence has signalled are unhooked as walkers pass them, so a long-lived timeline stays
// short.
//
// Lifetime: the head holds the chain; a node keeps its previous node alive until GC unhooks it.
// Releasing a long chain is iterative, not recursive.
//
// Seqno index (udrm, not the kernel): the nodes of one *run* — a node and the predecessors whose
// context it continues, each created from the run's newest node — are listed by seqno in a
// shared index (internal/chain_index.h: a sorted array of raw pointers, one entry per live
// node; a node leaves it in its destructor). The index holds no reference: GC frees unhooked
// links exactly as before. A node created from an older point of a run (a branch) starts its own
// index; a lookup below the branch point continues in the older run's index, one O(log n) step
// per branch.
//
// Memory (bench/fence_bench VALUE chain_link_bytes, counted from the allocator as usable bytes
// of the blocks, libstdc++/glibc, x86-64): a link appended to a timeline holds 296 B — its
// make_shared block (16 B control block + the 256-byte node, which embeds a whole Fence and its
// own prev mutex, callback and index pointer) and its 16-byte index entry; its contained fence
// is not counted.
#ifndef UDRM_FENCE_FENCE_CHAIN_H_
#define UDRM_FENCE_FENCE_CHAIN_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "fence/fence.h"

namespace fence {
namespace internal {
class ChainIndex;
}  // namespace internal

class FenceChain final : public Fence {
 public:
  // dma_fence_chain_init. Takes `prev` (may be null) and `fence` (not null). If `prev` is a chain
  // and `seqno` is later than prev's, the node continues prev's timeline (same context,
  // prev_seqno = prev's seqno); otherwise it starts a new context, with seqno raised to prev's if
  // prev is a chain.
  static std::shared_ptr<FenceChain> Create(FenceRef prev, FenceRef fence, uint64_t seqno);

  // to_dma_fence_chain: the chain node `f` is, or null.
  static FenceChain* Cast(Fence* f);
  // dma_fence_chain_contained: the fence inside a chain node, or `f` itself.
  static const FenceRef& Contained(const FenceRef& f);

  // dma_fence_chain_walk: the previous link of `f` whose contained fence is unsignalled, after
  // unhooking every signalled link between them; null at the end or when `f` is not a chain.
  static FenceRef Walk(const FenceRef& f);

  // dma_fence_chain_find_seqno: moves `*f` to the node that signals timeline point `seqno`:
  //  - seqno 0: OK, *f unchanged;
  //  - *f is not a chain, or its seqno is below `seqno`: InvalidArgument (point not submitted);
  //  - otherwise OK, *f is the oldest node whose prev_seqno < seqno. Because of garbage
  //    collection that may be an earlier unsignalled node, or null if everything up to it
  //    has signalled. Exactly: *f is the first node, going back from the head, that is the head
  //    itself or whose contained fence is unsignalled, and that is outside the head's context,
  //    not a chain, or has prev_seqno < seqno — the node the kernel's walk stops at.
  // Cost: O(log n) in the timeline's length (not the kernel's link-by-link walk): the node is
  // found through the run's seqno index (below), then at most one Walk() from it. Unlike the
  // kernel, the links the lookup jumps over are not garbage-collected by it (only those the
  // Walk() from the found node passes); the next Walk() over them still unhooks them.
  static absl::Status FindSeqno(FenceRef* f, uint64_t seqno);

  const FenceRef& fence() const { return fence_; }
  uint64_t prev_seqno() const { return prev_seqno_; }
  FenceRef prev() const ABSL_LOCKS_EXCLUDED(prev_mu_);
  bool IsContainer() const override { return true; }

  // Use Create().
  FenceChain(FenceRef prev, FenceRef fence, uint64_t context, uint64_t seqno, uint64_t prev_seqno);
  ~FenceChain() override;

 protected:
  bool EnableSignalingHook() override;
  bool PollSignaled() override;
  std::string_view DriverNameHook() const override { return "dma_fence_chain"; }
  std::string_view TimelineNameHook() const override { return "unbound"; }

 private:
  // The index `self` joins: prev's if `self` continues prev's context from its run's newest
  // node, else a new one. Registers `self` (not yet owned by a FenceRef; see IndexedAtOrAfter).
  static std::shared_ptr<internal::ChainIndex> JoinIndex(Fence* prev, uint64_t context,
                                                         uint64_t seqno, FenceChain* self);
  // The oldest live node of this node's run with `seqno` <= its seqno < this node's seqno (all
  // of them are this node's predecessors), or null.
  FenceRef IndexedAtOrAfter(uint64_t seqno) const;

  // Installs the one callback on the first unsignalled link from the head back; false when
  // there is none (the chain is complete).
  bool ArmNextLink();
  void OnLinkSignaled();

  // This node's run. Initialised before prev_, from the constructor's `prev` argument.
  const std::shared_ptr<internal::ChainIndex> index_;
  mutable absl::Mutex prev_mu_;
  FenceRef prev_ ABSL_GUARDED_BY(prev_mu_);
  const uint64_t prev_seqno_;
  const FenceRef fence_;
  // The one callback in flight, and the reference that keeps this node alive meanwhile. Only the
  // arming sequence touches them; each step hands over to the next through the fence it armed.
  FenceCallback cb_;
  FenceRef self_while_armed_;
};

}  // namespace fence

#endif  // UDRM_FENCE_FENCE_CHAIN_H_
