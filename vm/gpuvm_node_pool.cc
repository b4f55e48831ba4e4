#include "vm/gpuvm_node_pool.h"

#include <new>

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace vm::internal {

NodePool::~NodePool() {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(reserved_ == 0, "vm::Gpuvm freed with an InsertReservation outstanding");
  while (free_ != nullptr) {
    FreeBlock* b = free_;
    free_ = b->next;
    ::operator delete(b);  // unsized: clang 14 lacks the sized form
  }
}

void* NodePool::Allocate(size_t bytes) {
  UDRM_CHECK(bytes <= kBlockBytes, "vm::NodePool: a btree node larger than kBlockBytes");
  {
    absl::MutexLock l(&mu_);
    if (free_ != nullptr) {
      FreeBlock* b = free_;
      free_ = b->next;
      --free_count_;
      return b;
    }
    if (reserved_ != 0) ++misses_;
  }
  return ::operator new(kBlockBytes);
}

void NodePool::Deallocate(void* p) {
  {
    absl::MutexLock l(&mu_);
    if (free_count_ < reserved_ + kCacheBlocks) {
      auto* b = static_cast<FreeBlock*>(p);
      b->next = free_;
      free_ = b;
      ++free_count_;
      return;
    }
  }
  ::operator delete(p);  // unsized: clang 14 lacks the sized form
}

absl::Status NodePool::Reserve(size_t blocks) {
  absl::MutexLock l(&mu_);
  const size_t want = reserved_ + blocks;
  while (free_count_ < want) {
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
    auto* b = static_cast<FreeBlock*>(p);
    b->next = free_;
    free_ = b;
    ++free_count_;
  }
  reserved_ = want;
  return absl::OkStatus();
}

void NodePool::Unreserve(size_t blocks) {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(blocks <= reserved_, "vm::NodePool::Unreserve of more than was reserved");
  reserved_ -= blocks;
  TrimLocked();
}

void NodePool::TrimLocked() {
  while (free_count_ > reserved_ + kCacheBlocks) {
    FreeBlock* b = free_;
    free_ = b->next;
    --free_count_;
    ::operator delete(b);  // unsized: clang 14 lacks the sized form
  }
}

size_t NodePool::reserved() const {
  absl::MutexLock l(&mu_);
  return reserved_;
}

size_t NodePool::free_blocks() const {
  absl::MutexLock l(&mu_);
  return free_count_;
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
