#include "sched/internal/job_memory.h"

#include <cstddef>
#include <new>

#include "sched/internal/test_hooks.h"
#include "tbb/scalable_allocator.h"

// Defined only in a process with that sanitizer's runtime (weak: null otherwise).
extern "C" void __asan_init() __attribute__((weak));
extern "C" void __tsan_init() __attribute__((weak));

namespace sched::internal {

bool ProcessHasSanitizerRuntime() {
  static const bool sanitized = __asan_init != nullptr || __tsan_init != nullptr;
  return sanitized;
}

void* AllocateJobMemory(std::size_t size, std::size_t align) {
  const bool aligned = align > alignof(std::max_align_t);
  if (ProcessHasSanitizerRuntime()) {
    return aligned ? ::operator new(size, std::align_val_t{align}) : ::operator new(size);
  }
  void* p = aligned ? scalable_aligned_malloc(size, align) : scalable_malloc(size);
  if (p == nullptr) throw std::bad_alloc();
  if (auto hook = job_memory_hook.load(std::memory_order_relaxed)) {
    hook(static_cast<long long>(scalable_msize(p)));
  }
  return p;
}

void FreeJobMemory(void* p, std::size_t align) noexcept {
  if (p == nullptr) return;
  const bool aligned = align > alignof(std::max_align_t);
  if (ProcessHasSanitizerRuntime()) {
    if (aligned) {
      ::operator delete(p, std::align_val_t{align});
    } else {
      ::operator delete(p);
    }
    return;
  }
  if (auto hook = job_memory_hook.load(std::memory_order_relaxed)) {
    hook(-static_cast<long long>(scalable_msize(p)));
  }
  if (aligned) {
    scalable_aligned_free(p);
  } else {
    scalable_free(p);
  }
}

}  // namespace sched::internal
