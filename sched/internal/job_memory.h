// Where jobs and their fence pairs live (an implementation detail of //sched).
//
// A job is made on the submitting thread and freed on the scheduler's (Backend::FreeJob); its
// fence pair is freed by whichever thread drops the last reference. glibc's malloc serves this
// producer/consumer pattern badly: a cross-thread free goes back to the allocating thread's arena
// under that arena's lock. Measured (sched_bench -c opt, quiet 2-core machine, 2026-12-07, best of
// several runs): with the global allocator S1 through one entity took 10.7 ms against 3.8 ms, and
// the S2 chain 5.0 ms against 4.3 ms; the same binary run with oneTBB's malloc proxy preloaded took
// 4.0 and 4.2 ms. So jobs and fence pairs come from oneTBB's scalable allocator (tbbmalloc).
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
