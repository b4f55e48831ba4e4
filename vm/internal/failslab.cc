#include "vm/internal/failslab.h"

namespace vm::internal {
namespace failslab_detail {
std::atomic<FailslabHook*> hook{nullptr};
}  // namespace failslab_detail

void SetFailslabHook(FailslabHook* hook) {
  failslab_detail::hook.store(hook, std::memory_order_release);
}

}  // namespace vm::internal
