// fence::UnwrapLeaves / fence::Merge — dma_fence_unwrap.
//
// UnwrapLeaves flattens containers: it walks a chain from the head back (garbage-collecting
// signalled links, as FenceChain::Walk does, so signalled chain links may be skipped) and expands
// every array, yielding the leaf fences in that order. A leaf fence yields itself.
//
// Merge (dma_fence_unwrap_merge) builds one fence that signals when all the given fences have:
// it collects the unsignalled leaves of every input; none left -> a new private stub signalled at
// the latest timestamp among the signalled leaves; one -> that fence; more -> sorted by context,
// only the latest fence of each context kept, as a FenceArray with a new context and seqno 1.
//
// Thread-safety: both may be called concurrently with anything else on the fences.
#ifndef UDRM_FENCE_UNWRAP_H_
#define UDRM_FENCE_UNWRAP_H_

#include <initializer_list>
#include <span>
#include <vector>

#include "fence/fence.h"

namespace fence {

std::vector<FenceRef> UnwrapLeaves(const FenceRef& head);

FenceRef Merge(std::span<const FenceRef> fences);
inline FenceRef Merge(std::initializer_list<FenceRef> fences) {
  return Merge(std::span<const FenceRef>(fences.begin(), fences.size()));
}

}  // namespace fence

#endif  // UDRM_FENCE_UNWRAP_H_
