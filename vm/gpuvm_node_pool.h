// vm::internal::NodePool — the allocator of the VA tree's btree nodes, so that a reservation
// (Gpuvm::ReserveInserts) can make the next tree updates allocation-free.
//
// Every node (leaf, internal, or a small root leaf) is one block of kBlockBytes, drawn from a
// free list; a block is taken from the system only when the list is empty. Reserve(n) tops the
// list up so that n more blocks can be taken without allocating (ResourceExhausted, nothing
// kept, if the system refuses); Unreserve(n) gives the promise back and trims the list.
//
// Kept warm, bounded: freed blocks stay on the list while it holds fewer than reserved() +
// cache_target() blocks, else go back to the system. cache_target() is the largest single
// Reserve seen plus kMinCacheBlocks (the tree's own ups and downs between jobs), at least
// kMinCacheBlocks and at most kCacheBlocks — so a VM whose binds
// reserve the same worst case job after job (VM_BIND's batched path) finds it on the list
// every time and allocates nothing in steady state, while an idle VM keeps at most
// kCacheBlocks blocks beyond what its tree uses.
//
// Big trees: once the tree holds kChunkNodes nodes, growth beyond every free block is carved
// from 2 MiB chunks (operator new, aligned, advised as transparent huge pages where the kernel
// offers them), so that a tree of 10^5..10^6 VAs lives in few TLB entries — the kernel's
// drm_gpuvm allocates its nodes in the direct map, which the kernel maps with huge pages. A
// chunk's blocks are never given back one by one: a freed chunk block goes on the list whatever
// its length (the pool then keeps the tree's peak, at most one chunk more), and the chunks are
// freed with the pool. Reserve's refill still takes single blocks, which trimming gives back.
// Blocks on the list at destruction are freed by the destructor.
//
// Thread-safety: internally locked (mu_): the tree calls Allocate/Deallocate under the
// driver's VM lock, while a reservation may be released from any thread.
#ifndef UDRM_VM_GPUVM_NODE_POOL_H_
#define UDRM_VM_GPUVM_NODE_POOL_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "vm/gpuva.h"

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
  // Free blocks kept beyond the reserved ones (see the top): at least kMinCacheBlocks, so a
  // map/unmap storm does not hit malloc, and at most kCacheBlocks (1.5 MiB), which covers the
  // worst case of a VM_BIND job of 64 maps that each split two VAs on a tree of height 3
  // (Gpuvm::NodesForInserts(3, 192) = 1475 blocks).
  static constexpr size_t kMinCacheBlocks = 64;
  static constexpr size_t kCacheBlocks = 2048;
  // Huge-page chunks (see the top): their size, and the tree size from which growth uses them.
  static constexpr size_t kChunkBytes = kHugeChunkBytes;  // vm/gpuva.h
  static constexpr size_t kChunkNodes = 2048;

  NodePool() = default;
  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;
  ~NodePool();

  // A block for a node of `bytes` (<= kBlockBytes; a larger request crashes). From the free
  // list if it is not empty (a big tree: chunk blocks first, then the current chunk's rest, then
  // single blocks), else from a new chunk (a big tree) or operator new — a system allocation,
  // counted in misses() while reserved() > 0.
  void* Allocate(size_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  void Deallocate(void* p) ABSL_LOCKS_EXCLUDED(mu_);

  // Promises `blocks` more blocks: the free list is filled to reserved() + blocks.
  // ResourceExhausted (nothing changed) if operator new fails.
  absl::Status Reserve(size_t blocks) ABSL_LOCKS_EXCLUDED(mu_);
  // Withdraws a promise made by Reserve and trims the free list.
  void Unreserve(size_t blocks) ABSL_LOCKS_EXCLUDED(mu_);

  size_t reserved() const ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks on the free list (single and chunk blocks).
  size_t free_blocks() const ABSL_LOCKS_EXCLUDED(mu_);
  // Free blocks kept beyond reserved() (see the top).
  size_t cache_target() const ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks handed to the tree, and how many 2 MiB chunks the pool holds.
  size_t in_use() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t chunks() const ABSL_LOCKS_EXCLUDED(mu_);
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
  bool InChunkLocked(const void* p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A block from the current chunk (a new chunk if it is used up); nullptr if the system
  // refuses one.
  void* CarveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A block without operator new of a single block: from a list, or carved (see Allocate);
  // nullptr if the single-block path must be taken.
  void* TakeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Push(FreeBlock*& list, void* p) {
    auto* b = static_cast<FreeBlock*>(p);
    b->next = list;
    list = b;
  }
  static void* Pop(FreeBlock*& list) {
    FreeBlock* b = list;
    list = b->next;
    return b;
  }

  mutable absl::Mutex mu_;
  // Two lists: blocks of chunks (taken first, never trimmed) and single blocks.
  FreeBlock* chunk_free_ ABSL_GUARDED_BY(mu_) = nullptr;
  FreeBlock* free_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t chunk_free_count_ ABSL_GUARDED_BY(mu_) = 0;
  size_t free_count_ ABSL_GUARDED_BY(mu_) = 0;  // single blocks on free_
  size_t cache_target_ ABSL_GUARDED_BY(mu_) = kMinCacheBlocks;
  size_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  // The chunks, sorted by address, and the part of the last one not carved yet.
  std::vector<char*> chunks_ ABSL_GUARDED_BY(mu_);
  char* carve_ ABSL_GUARDED_BY(mu_) = nullptr;
  char* carve_end_ ABSL_GUARDED_BY(mu_) = nullptr;
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
