// A thread's operator new calls, counted: this header DEFINES replacements of the global
// operator new / delete that count the calls a thread makes while it is inside a
// CountAllocations scope. Include it from exactly one .cc of a test binary (its own binary, as it
// replaces the global operators). A header rather than a library on purpose: the definitions
// must be in the executable itself, or under ASan (fastbuild links deps as shared objects) the
// sanitizer's operator new wins and nothing is counted.
#ifndef UDRM_TESTS_VM_ALLOC_COUNT_H_
#define UDRM_TESTS_VM_ALLOC_COUNT_H_

#include <cstddef>
#include <cstdlib>
#include <new>

namespace alloc_count_internal {

thread_local bool counting = false;
thread_local long allocations = 0;

void* Allocate(std::size_t n, std::size_t align) {
  if (counting) ++allocations;
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t)
                ? std::malloc(n)
                : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void* AllocateNoThrow(std::size_t n, std::size_t align) noexcept {
  try {
    return Allocate(n, align);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace alloc_count_internal

using alloc_count_internal::Allocate;
using alloc_count_internal::AllocateNoThrow;

void* operator new(std::size_t n) { return Allocate(n, 0); }
void* operator new[](std::size_t n) { return Allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return Allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return Allocate(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return AllocateNoThrow(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return AllocateNoThrow(n, 0);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace vm::testing {

// Counts this thread's operator new calls during its lifetime (not nestable).
class CountAllocations {
 public:
  CountAllocations() : before_(alloc_count_internal::allocations) {
    alloc_count_internal::counting = true;
  }
  ~CountAllocations() { alloc_count_internal::counting = false; }
  long count() const { return alloc_count_internal::allocations - before_; }

 private:
  long before_;
};

}  // namespace vm::testing

#endif  // UDRM_TESTS_VM_ALLOC_COUNT_H_
