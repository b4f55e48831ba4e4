// udrm::AtomicSharedPtr — a shared_ptr slot that readers copy while a writer replaces it.
//
// What it is: the publication point of an immutable, reference-counted snapshot (read-copy-update
// style): a writer builds a new object and Store()s it; a reader Load()s a reference and keeps
// using that object however long it likes; the old object is reclaimed by whoever drops the last
// reference. Both sides hold a one-word latch only for the pointer copy and reference-count
// increment (a few nanoseconds), never across user code, and never block on anything else.
//
// Why not std::atomic<std::shared_ptr<T>>: libstdc++ 12's version releases its internal latch
// with relaxed ordering after a load, so the reader's read of the pointer is not ordered before
// the next writer's swap — a formal data race that ThreadSanitizer reports (seen in CI on the
// Resv snapshot test). This one releases and acquires the latch on both sides.
//
// Thread-safety: every method may be called concurrently. Memory ordering: a Store()
// happens-before every Load() that returns the stored pointer (so the object's contents,
// written before Store(), are visible to the reader).
#ifndef UDRM_BASE_ATOMIC_SHARED_PTR_H_
#define UDRM_BASE_ATOMIC_SHARED_PTR_H_

#include <atomic>
#include <memory>
#include <utility>

#include "base/spin.h"

namespace udrm {

template <typename T>
class AtomicSharedPtr {
 public:
  explicit AtomicSharedPtr(std::shared_ptr<T> p = nullptr) : ptr_(std::move(p)) {}
  AtomicSharedPtr(const AtomicSharedPtr&) = delete;
  AtomicSharedPtr& operator=(const AtomicSharedPtr&) = delete;

  std::shared_ptr<T> Load() const {
    Lock();
    std::shared_ptr<T> copy = ptr_;
    Unlock();
    return copy;
  }

  // The previous object is released after the latch is dropped (its destructor may run here).
  void Store(std::shared_ptr<T> p) {
    Lock();
    ptr_.swap(p);
    Unlock();
  }

 private:
  void Lock() const {
    while (latch_.exchange(true, std::memory_order_acquire)) {
      while (latch_.load(std::memory_order_relaxed)) udrm::CpuRelax();
    }
  }
  void Unlock() const { latch_.store(false, std::memory_order_release); }

  mutable std::atomic<bool> latch_{false};
  std::shared_ptr<T> ptr_;  // guarded by latch_
};

}  // namespace udrm

#endif  // UDRM_BASE_ATOMIC_SHARED_PTR_H_
