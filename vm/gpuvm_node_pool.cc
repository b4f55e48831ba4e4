#include "vm/gpuvm_node_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "vm/gpuva.h"

namespace vm::internal {
namespace {
std::atomic<size_t> huge_chunk_bytes{0};
}  // namespace

size_t HugeChunkBytes() noexcept { return huge_chunk_bytes.load(std::memory_order_relaxed); }

void* NewChunk(size_t bytes) noexcept {
  if (bytes != kHugeChunkBytes) {
    // The throwing form, caught: programs that replace operator new (tests counting or failing
    // allocations) replace it, with its matching delete, more often than the nothrow one.
    try {
      return ::operator new(bytes, std::align_val_t(64));
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
  }
  // A huge chunk is mapped directly, twice its size, and trimmed to the aligned 2 MiB in the
  // middle: glibc serves a 2 MiB-aligned operator new with a ~4 MiB mapping whose padding it
  // never gives back (measured: 4100 KiB per chunk in mallinfo2), which doubled the address
  // space of every chunk and the heap figure gpuvm_bench counts.
  void* m = mmap(nullptr, 2 * bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  const auto base = reinterpret_cast<uintptr_t>(m);
  const uintptr_t aligned = (base + bytes - 1) & ~(bytes - 1);
  if (aligned > base) munmap(m, aligned - base);
  if (const uintptr_t tail = base + 2 * bytes - (aligned + bytes); tail > 0) {
    munmap(reinterpret_cast<void*>(aligned + bytes), tail);
  }
  void* p = reinterpret_cast<void*>(aligned);
  // Transparent huge pages in madvise mode; the advice failing (not offered) is harmless.
  (void)madvise(p, bytes, MADV_HUGEPAGE);
  huge_chunk_bytes.fetch_add(bytes, std::memory_order_relaxed);
  return p;
}

void DeleteChunk(void* p, size_t bytes) noexcept {
  if (bytes != kHugeChunkBytes) {
    ::operator delete(p, std::align_val_t(64));
    return;
  }
  munmap(p, bytes);
  huge_chunk_bytes.fetch_sub(bytes, std::memory_order_relaxed);
}

NodePool::~NodePool() {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(reserved_ == 0, "vm::Gpuvm freed with an InsertReservation outstanding");
  UDRM_CHECK(in_use_ == 0, "vm::NodePool freed with tree nodes in use");
  while (free_ != nullptr) ::operator delete(Pop(free_));  // unsized: clang 14 lacks the sized form
  for (char* c : chunks_) DeleteChunk(c, kChunkBytes);
}

bool NodePool::InChunkLocked(const void* p) const {
  if (chunks_.empty()) return false;
  const auto base = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(p) & ~(kChunkBytes - 1));
  return std::binary_search(chunks_.begin(), chunks_.end(), base);
}

void* NodePool::CarveLocked() {
  if (carve_end_ - carve_ < static_cast<ptrdiff_t>(kBlockBytes)) {
    if (reserved_ != 0) ++misses_;  // a system allocation under a reservation
    auto* c = static_cast<char*>(NewChunk(kChunkBytes));
    if (c == nullptr) return nullptr;
    chunks_.insert(std::upper_bound(chunks_.begin(), chunks_.end(), c), c);
    carve_ = c;
    carve_end_ = c + kChunkBytes;
  }
  void* p = carve_;
  carve_ += kBlockBytes;
  return p;
}

void* NodePool::Allocate(size_t bytes) {
  UDRM_CHECK(bytes <= kBlockBytes, "vm::NodePool: a btree node larger than kBlockBytes");
  {
    absl::MutexLock l(&mu_);
    if (void* p = TakeLocked(); p != nullptr) {
      ++in_use_;
      return p;
    }
    if (reserved_ != 0 && in_use_ < kChunkNodes) ++misses_;  // (else counted by CarveLocked)
  }
  void* p = ::operator new(kBlockBytes);
  absl::MutexLock l(&mu_);
  ++in_use_;
  return p;
}

void* NodePool::TakeLocked() {
  if (chunk_free_ != nullptr) {
    --chunk_free_count_;
    return Pop(chunk_free_);
  }
  // A big tree grows in chunks: first what the current chunk has left (no system call), then
  // the single blocks (a reservation may be counting on them), then a new chunk.
  const bool big = in_use_ >= kChunkNodes;
  if (big && carve_end_ - carve_ >= static_cast<ptrdiff_t>(kBlockBytes)) return CarveLocked();
  if (free_ != nullptr) {
    --free_count_;
    return Pop(free_);
  }
  return big ? CarveLocked() : nullptr;
}

void NodePool::Deallocate(void* p) {
  {
    absl::MutexLock l(&mu_);
    --in_use_;
    if (InChunkLocked(p)) {
      Push(chunk_free_, p);
      ++chunk_free_count_;
      return;
    }
    if (chunk_free_count_ + free_count_ < reserved_ + cache_target_) {
      Push(free_, p);
      ++free_count_;
      return;
    }
  }
  ::operator delete(p);  // unsized: clang 14 lacks the sized form
}

absl::Status NodePool::Reserve(size_t blocks) {
  absl::MutexLock l(&mu_);
  const size_t want = reserved_ + blocks;
  while (chunk_free_count_ + free_count_ < want) {
    void* p = nullptr;
    if (fail_refills_ > 0) {
      --fail_refills_;
    } else {
      p = ::operator new(kBlockBytes, std::nothrow);
    }
    if (p == nullptr) {
      TrimLocked();  // give back what this call added
      return absl::ResourceExhaustedError(
          absl::StrCat("vm::Gpuvm: cannot reserve ", blocks, " tree nodes"));
    }
    Push(free_, p);
    ++free_count_;
  }
  reserved_ = want;
  // Keep what the next job of this size needs, plus room for the tree's own ups and downs
  // between jobs (a job's inserts take blocks that its removals give back later).
  cache_target_ = std::max(cache_target_, std::min(blocks + kMinCacheBlocks, kCacheBlocks));
  return absl::OkStatus();
}

void NodePool::Unreserve(size_t blocks) {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(blocks <= reserved_, "vm::NodePool::Unreserve of more than was reserved");
  reserved_ -= blocks;
  TrimLocked();
}

void NodePool::TrimLocked() {
  while (free_ != nullptr && chunk_free_count_ + free_count_ > reserved_ + cache_target_) {
    --free_count_;
    ::operator delete(Pop(free_));  // unsized: clang 14 lacks the sized form
  }
}

size_t NodePool::reserved() const {
  absl::MutexLock l(&mu_);
  return reserved_;
}

size_t NodePool::free_blocks() const {
  absl::MutexLock l(&mu_);
  return chunk_free_count_ + free_count_;
}

size_t NodePool::cache_target() const {
  absl::MutexLock l(&mu_);
  return cache_target_;
}

size_t NodePool::in_use() const {
  absl::MutexLock l(&mu_);
  return in_use_;
}

size_t NodePool::chunks() const {
  absl::MutexLock l(&mu_);
  return chunks_.size();
}

int64_t NodePool::misses() const {
  absl::MutexLock l(&mu_);
  return misses_;
}

void NodePool::FailNextRefillsForTesting(int n) {
  absl::MutexLock l(&mu_);
  fail_refills_ = n;
}

}  // namespace vm::internal
