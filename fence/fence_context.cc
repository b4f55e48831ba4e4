#include "fence/fence_context.h"

#include "base/check.h"

namespace fence {

uint64_t FenceContext::Allocate(uint64_t n) {
  UDRM_CHECK(n >= 1, "FenceContext::Allocate needs n >= 1");
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(n, std::memory_order_relaxed);
}

}  // namespace fence
