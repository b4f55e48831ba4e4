#include "fence/internal/chain_index.h"

#include <cstring>
#include <memory>

namespace fence::internal {

bool ChainIndex::AppendAfter(const Fence* prev, uint64_t seqno, Fence* link) {
  absl::MutexLock l(&mu_);
  if (entries_.size() == first_ || entries_.back().link != prev) return false;
  entries_.push_back({seqno, link});
  return true;
}

void ChainIndex::Start(uint64_t seqno, Fence* link) {
  absl::MutexLock l(&mu_);
  entries_.push_back({seqno, link});
}

size_t ChainIndex::LowerBound(uint64_t seqno) const {
  // Branch-free: the loop runs log2(n) times whatever the keys; the step is masked arithmetic
  // (GCC turns a ?: here into a branch that random lookups mispredict half the time).
  const Entry* base = entries_.data() + first_;
  size_t n = entries_.size() - first_;
  if (n == 0) return first_;
  while (n > 1) {
    const size_t half = n / 2;
    base += half & (size_t{0} - static_cast<size_t>(base[half - 1].seqno < seqno));
    n -= half;
  }
  return static_cast<size_t>(base - entries_.data()) + (base->seqno < seqno ? 1 : 0);
}

void ChainIndex::Erase(uint64_t seqno, const Fence* link) {
  absl::MutexLock l(&mu_);
  const size_t pos = LowerBound(seqno);
  if (pos == entries_.size() || entries_[pos].link != link) return;
  if (pos - first_ < entries_.size() - 1 - pos) {
    // Nearer the front: shift the entries before it one place up.
    std::memmove(&entries_[first_ + 1], &entries_[first_], (pos - first_) * sizeof(Entry));
    ++first_;
  } else {
    entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(pos));
  }
  Compact();
}

void ChainIndex::Compact() {
  const size_t live = entries_.size() - first_;
  if (live == 0) {
    entries_.clear();
    first_ = 0;
  } else if (first_ >= 16 && first_ > live) {
    entries_.erase(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(first_));
    first_ = 0;
  }
  if (entries_.capacity() > 64 && entries_.size() * 4 < entries_.capacity()) {
    entries_.shrink_to_fit();
  }
}

FenceRef ChainIndex::FirstLiveAtOrAfter(uint64_t lo, uint64_t hi) const {
  absl::MutexLock l(&mu_);
  for (size_t i = LowerBound(lo); i < entries_.size() && entries_[i].seqno < hi; ++i) {
    // Listed means not yet past Erase in its destructor: the object is intact, and taking a
    // reference fails only if its last one is gone (then it is skipped). shared_from_this()
    // locks the object's own weak pointer, two atomics fewer than weak_from_this().lock();
    // it throws in that rare case, caught here.
    try {
      return entries_[i].link->shared_from_this();
    } catch (const std::bad_weak_ptr&) {
    }
  }
  return nullptr;
}

}  // namespace fence::internal
