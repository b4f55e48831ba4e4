// vm::internal::NodePool — the allocator of the VA tree's btree nodes, so that a reservation
// (Gpuvm::ReserveInserts) can make the next tree updates allocation-free.
//
// Every node (leaf, internal, or a small root leaf) is one block of kBlockBytes, drawn from a
// free list; a block is taken from the system (operator new) only when the list is empty. Freed
// blocks go back on the list while it holds fewer than reserved() + kCacheBlocks blocks, else to
// the system. Reserve(n) tops the list up so that n more blocks can be taken without allocating
// (ResourceExhausted, nothing kept, if the system refuses); Unreserve(n) gives the promise back
// and trims the list. Blocks left on the list are freed by the destructor.
//
// Thread-safety: internally locked (pool_mu_): the tree calls Allocate/Deallocate under the
// driver's VM lock, while a reservation may be released from any thread.
#ifndef UDRM_VM_GPUVM_NODE_POOL_H_
#define UDRM_VM_GPUVM_NODE_POOL_H_

#include <cstddef>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace vm::internal {

class NodePool {
 public:
  // The target size of a node of Gpuvm's tree (absl's btree parameter; absl::btree_map uses
  // 256). 512: a search of 10^5..10^6 VAs is one level shorter, and a node's keys are still read
  // by a linear scan of consecutive cache lines (gpuvm_bench: 256, 1024 and a binary search
  // measured slower on large trees).
  static constexpr size_t kTargetNodeBytes = 512;
  // Keys per node of that tree: 16-byte slots (key, Gpuva*) after a 16-byte header
  // (gpuvm_alloc_test checks it: the height reaches 2 at the kTreeNodeSlots+1-th insert).
  static constexpr size_t kTreeNodeSlots = (kTargetNodeBytes - 16) / 16;
  // The largest node, an internal one: the leaf's layout plus kTreeNodeSlots+1 child pointers.
  // Allocate checks every request fits.
  static constexpr size_t kBlockBytes = kTargetNodeBytes + (kTreeNodeSlots + 1) * 8;
  // Free blocks kept beyond the reserved ones, so a map/unmap storm does not hit malloc.
  static constexpr size_t kCacheBlocks = 64;

  NodePool() = default;
  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;
  ~NodePool();

  // A block for a node of `bytes` (<= kBlockBytes; a larger request crashes). From the free list
  // if it is not empty, else from operator new (counted in misses() while reserved() > 0).
  void* Allocate(size_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  void Deallocate(void* p) ABSL_LOCKS_EXCLUDED(mu_);

  // Promises `blocks` more blocks: the free list is filled to reserved() + blocks.
  // ResourceExhausted (nothing changed) if operator new fails.
  absl::Status Reserve(size_t blocks) ABSL_LOCKS_EXCLUDED(mu_);
  // Withdraws a promise made by Reserve and trims the free list.
  void Unreserve(size_t blocks) ABSL_LOCKS_EXCLUDED(mu_);

  size_t reserved() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t free_blocks() const ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks taken from the system while a reservation was outstanding (a bound that was too
  // small; tests assert 0).
  int64_t misses() const ABSL_LOCKS_EXCLUDED(mu_);
  // A test hook: the next `n` refills of Reserve fail as if operator new had (fault injection).
  void FailNextRefillsForTesting(int n) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct FreeBlock {
    FreeBlock* next;
  };
  void TrimLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  FreeBlock* free_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t free_count_ ABSL_GUARDED_BY(mu_) = 0;
  size_t reserved_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_refills_ ABSL_GUARDED_BY(mu_) = 0;
};

// The std allocator the btree uses: every node from `pool`.
template <typename T>
class PoolAllocator {
 public:
  using value_type = T;
  explicit PoolAllocator(NodePool* pool) : pool_(pool) {}
  template <typename U>
  PoolAllocator(const PoolAllocator<U>& o) : pool_(o.pool()) {}  // NOLINT: rebind

  T* allocate(size_t n) { return static_cast<T*>(pool_->Allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t) { pool_->Deallocate(p); }
  NodePool* pool() const { return pool_; }
  template <typename U>
  bool operator==(const PoolAllocator<U>& o) const {
    return pool_ == o.pool();
  }

 private:
  NodePool* pool_;
};

}  // namespace vm::internal

#endif  // UDRM_VM_GPUVM_NODE_POOL_H_
