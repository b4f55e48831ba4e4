// A thread's operator new calls, counted: linking this library (alwayslink) replaces the global
// operator new / delete with versions that count the calls a thread makes while it is inside a
// CountAllocations scope. For the "allocates nothing" contracts of vm/ (a test binary of its
// own, since it replaces the global operators).
#ifndef UDRM_TESTS_VM_ALLOC_COUNT_H_
#define UDRM_TESTS_VM_ALLOC_COUNT_H_

namespace vm::testing {

// Counts this thread's operator new calls during its lifetime (not nestable).
class CountAllocations {
 public:
  CountAllocations();
  ~CountAllocations();
  long count() const;

 private:
  long before_;
};

}  // namespace vm::testing

#endif  // UDRM_TESTS_VM_ALLOC_COUNT_H_
