// fence::FenceContext — a timeline: one fence context and its seqno counter.
//
// What it is: dma_fence_context_alloc plus the per-timeline seqno a driver keeps beside it.
// Contexts are unique in the process, start at 1 (0 belongs to the stub fence) and are never
// reused. Seqnos start at 1 and increase by one per NewFence().
//
// Lifetime: fences made from a context do not refer to it; it may be destroyed before them.
//
// Thread-safety: Allocate() and every method may be called concurrently. Fences of one context
// must still be *signalled* in seqno order by their producer; FenceContext does not enforce that.
#ifndef UDRM_FENCE_FENCE_CONTEXT_H_
#define UDRM_FENCE_FENCE_CONTEXT_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "fence/fence.h"

namespace fence {

class FenceContext {
 public:
  // dma_fence_context_alloc(n): the first of `n` (>= 1) new consecutive contexts.
  static uint64_t Allocate(uint64_t n = 1);

  explicit FenceContext(std::string name = "", SeqnoWidth width = SeqnoWidth::k32)
      : name_(std::move(name)), context_(Allocate()), width_(width) {}
  FenceContext(const FenceContext&) = delete;
  FenceContext& operator=(const FenceContext&) = delete;

  uint64_t context() const { return context_; }
  std::string_view name() const { return name_; }

  // The next seqno of this timeline, consumed. Memory ordering: relaxed (seqnos are unique, not
  // an ordering edge).
  uint64_t NextSeqno() { return next_seqno_.fetch_add(1, std::memory_order_relaxed); }
  // A new unsignalled fence with the next seqno.
  FenceRef NewFence() { return Fence::Create(context_, NextSeqno(), width_); }

 private:
  const std::string name_;
  const uint64_t context_;
  const SeqnoWidth width_;
  std::atomic<uint64_t> next_seqno_{1};
};

}  // namespace fence

#endif  // UDRM_FENCE_FENCE_CONTEXT_H_
