#include "fence/unwrap.h"

#include <algorithm>

#include "base/check.h"
#include "fence/fence_array.h"
#include "fence/fence_chain.h"
#include "fence/fence_context.h"

namespace fence {

std::vector<FenceRef> UnwrapLeaves(const FenceRef& head) {
  std::vector<FenceRef> leaves;
  for (FenceRef link = head; link != nullptr; link = FenceChain::Walk(link)) {
    const FenceRef& inner = FenceChain::Contained(link);
    if (FenceArray* array = FenceArray::Cast(inner.get())) {
      leaves.insert(leaves.end(), array->fences().begin(), array->fences().end());
    } else {
      leaves.push_back(inner);
    }
  }
  return leaves;
}

FenceRef Merge(std::span<const FenceRef> fences) {
  std::vector<FenceRef> pending;
  absl::Time latest = absl::UnixEpoch();
  for (const FenceRef& f : fences) {
    UDRM_CHECK(f != nullptr, "fence::Merge of a null fence");
    for (FenceRef& leaf : UnwrapLeaves(f)) {
      if (!leaf->IsSignaled()) {
        pending.push_back(std::move(leaf));
      } else {
        latest = std::max(latest, leaf->timestamp());
      }
    }
  }
  if (pending.empty()) return Fence::AllocatePrivateStub(latest);
  // Context ascending; within one context the latest first, so the first of each run is kept.
  std::sort(pending.begin(), pending.end(), [](const FenceRef& a, const FenceRef& b) {
    if (a->context() != b->context()) return a->context() < b->context();
    return Fence::IsLater(*a, *b);
  });
  std::vector<FenceRef> kept;
  for (FenceRef& f : pending) {
    if (kept.empty() || kept.back()->context() != f->context()) kept.push_back(std::move(f));
  }
  if (kept.size() == 1) return kept.front();
  auto array = FenceArray::Create(std::move(kept), FenceContext::Allocate(), 1);
  UDRM_CHECK(array.ok(), "fence::Merge built an invalid array");  // leaves only, never empty
  return *std::move(array);
}

}  // namespace fence
