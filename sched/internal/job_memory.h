// Where jobs and their fence pairs live (an implementation detail of //sched).
//
// A job is made on the submitting thread and freed on the scheduler's (Backend::FreeJob); its
// fence pair is freed by whichever thread drops the last reference. glibc's malloc serves this
// producer/consumer pattern badly: a cross-thread free goes back to the allocating thread's arena
// under that arena's lock. Measured (sched_bench -c opt, 2-core machine, 2026-12-07, medians of
// 8 interleaved runs, global vs scalable): S1 through 1 entity 11.0 vs 6.4 ms, through 8 entities
// 6.0 vs 4.5 ms, the S2 chain 6.6 vs 4.9 ms; the global-allocator binary run with oneTBB's malloc
// proxy preloaded was as fast as the scalable one. So jobs and fence pairs come from tbbmalloc.
//
// In a process that carries a sanitizer runtime (ASan or TSan) they come from the global allocator
// instead, so the sanitizer sees every job's allocation and free: ASan reports a use after free of
// a job, and TSan does not mistake a recycled block for a race (tbbmalloc is precompiled, so TSan
// cannot see its internal synchronization). The choice is made once, at run time, from the
// process's own runtime — not from how this library was compiled — so a library built without a
// sanitizer and an application built with one agree on it, and Job's layout never depends on it.
#ifndef UDRM_SCHED_INTERNAL_JOB_MEMORY_H_
#define UDRM_SCHED_INTERNAL_JOB_MEMORY_H_

#include <cstddef>
#include <new>

namespace sched::internal {

// True if the process has an AddressSanitizer or ThreadSanitizer runtime.
bool ProcessHasSanitizerRuntime();

// `align` is a power of two (anything up to alignof(std::max_align_t) is the default alignment).
// Throws std::bad_alloc when out of memory, like operator new.
void* AllocateJobMemory(std::size_t size, std::size_t align);
// `p` from AllocateJobMemory with the same `align` (null is ignored).
void FreeJobMemory(void* p, std::size_t align) noexcept;

// A standard allocator over AllocateJobMemory, for std::allocate_shared.
template <class T>
struct JobAllocator {
  using value_type = T;
  JobAllocator() = default;
  template <class U>
  JobAllocator(const JobAllocator<U>&) noexcept {}  // NOLINT(runtime/explicit): rebinding
  T* allocate(std::size_t n) {
    return static_cast<T*>(AllocateJobMemory(n * sizeof(T), alignof(T)));
  }
  void deallocate(T* p, std::size_t) noexcept { FreeJobMemory(p, alignof(T)); }
  template <class U>
  bool operator==(const JobAllocator<U>&) const noexcept { return true; }
};

}  // namespace sched::internal

#endif  // UDRM_SCHED_INTERNAL_JOB_MEMORY_H_
