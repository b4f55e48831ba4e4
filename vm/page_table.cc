#include "vm/page_table.h"

#include <algorithm>

#include "base/check.h"
#include "base/sanitizers.h"
#include "vm/rcu.h"

namespace vm {

using internal::Table;

namespace {

using internal::kAddrMask;
using internal::kFlagMask;
using internal::kRead;
using internal::kSizeMask;
using internal::kSizeShift;
using internal::kSparse;
using internal::kTableBit;
using internal::kValid;
using internal::kWrite;

uint64_t FlagsToPte(uint32_t flags) {
  return (flags & kPteRead ? kRead : 0) | (flags & kPteWrite ? kWrite : 0) |
         (flags & kPteSparse ? kSparse : 0);
}

uint64_t LeafPte(uint64_t address, uint64_t flag_bits, PageSize size) {
  const uint64_t addr = (flag_bits & kSparse) ? 0 : (address & kAddrMask);
  return addr | flag_bits | kValid | (uint64_t{static_cast<uint8_t>(size)} << kSizeShift);
}

PageSize PteSize(uint64_t pte) { return static_cast<PageSize>((pte & kSizeMask) >> kSizeShift); }

uint64_t TablePte(const Table* t) { return reinterpret_cast<uint64_t>(t) | kTableBit | kValid; }

Table* PteTable(uint64_t pte) { return reinterpret_cast<Table*>(pte & kAddrMask); }

// Writer-only: a table with no valid entry can be unhooked.
bool IsEmpty(const Table* t) {
  for (const auto& slot : t->e) {
    if (slot.load(std::memory_order_relaxed) & kValid) return false;
  }
  return true;
}

constexpr uint64_t k64K = uint64_t{1} << 16;

}  // namespace

// The mapping being written: leaf entries at `level`, each `unit` bytes (64 KiB blocks are 16
// 4 KiB entries that all carry the block's base address).
struct PageTable::Leaf {
  uint64_t va;
  uint64_t target;
  uint64_t flag_bits;
  PageSize size;
  int level;
  uint64_t Pte(uint64_t at) const {
    const uint64_t block = PageBytes(size);
    return LeafPte(target + ((at - va) & ~(block - 1)), flag_bits, size);
  }
};

Prealloc::~Prealloc() {
  UDRM_CHECK(pages_.empty(), "Prealloc dropped without PageTable::Unreserve");
}

void Invalidation::Absorb(Invalidation&& later) {
  generation_ = std::max(generation_, later.generation_);
  removed_mappings_ = removed_mappings_ || later.removed_mappings_;
  retired_.insert(retired_.end(), later.retired_.begin(), later.retired_.end());
  later.retired_.clear();
  later.removed_mappings_ = false;
}

Invalidation::~Invalidation() {
  UDRM_CHECK(retired_.empty(), "Invalidation dropped without PageTable::Release");
}

absl::StatusOr<std::unique_ptr<PageTable>> PageTable::Create(int va_bits) {
  if (va_bits != 39 && va_bits != 48 && va_bits != 57) {
    return absl::InvalidArgumentError("va_bits must be 39, 48 or 57");
  }
  return std::unique_ptr<PageTable>(new PageTable(va_bits));
}

PageTable::PageTable(int va_bits)
    : va_bits_(va_bits),
      levels_((va_bits - 12) / 9),
      top_shift_(12 + 9 * (levels_ - 1)),
      root_(new Table) {}

namespace {
void FreeSubtree(Table* t, int level, int levels) {
  if (level + 1 < levels) {
    for (auto& slot : t->e) {
      const uint64_t pte = slot.load(std::memory_order_relaxed);
      if ((pte & kValid) && (pte & kTableBit)) FreeSubtree(PteTable(pte), level + 1, levels);
    }
  }
  delete t;
}
}  // namespace

// Sanitizer builds keep no pool: every released page is really freed, so a premature free would
// be a use-after-free that ASan/TSan report. The grace-period logic is the same in every build.
#if UDRM_SANITIZER
constexpr size_t kMaxPooledTables = 0;
#else
constexpr size_t kMaxPooledTables = 256;  // 1 MiB
#endif

PageTable::~PageTable() {
  FreeSubtree(root_, 0, levels_);
  absl::MutexLock l(&pool_mu_);
  for (Table* t : pool_) delete t;
}

void PageTable::Recycle(Table* t) {
  {
    absl::MutexLock l(&pool_mu_);
    if (pool_.size() < kMaxPooledTables) {
      pool_.push_back(t);
      return;
    }
  }
  delete t;
}

int PageTable::LeafLevel(PageSize s) const {
  switch (s) {
    case PageSize::k4K:
    case PageSize::k64K:
      return levels_ - 1;
    case PageSize::k2M:
      return levels_ - 2;
    case PageSize::k1G:
      return levels_ - 3;
  }
  return levels_ - 1;
}

absl::Status PageTable::ValidateRange(uint64_t va, uint64_t size, uint64_t align) const {
  if (size == 0) return absl::InvalidArgumentError("size is 0");
  if (va % align != 0 || size % align != 0) {
    return absl::InvalidArgumentError("va or size not aligned to the page size");
  }
  if (va + size < va) return absl::InvalidArgumentError("range overflows");
  if (va + size > va_limit()) return absl::InvalidArgumentError("range beyond the VA space");
  return absl::OkStatus();
}

// Worst case: every table between the root and the leaf level is missing. A table at level l
// serves one entry of level l-1, so the count at level l is the number of level l-1 entries the
// range touches. (Splitting a large page creates a table in a position counted here too.)
int64_t PageTable::TablesForRange(uint64_t va, uint64_t size, int leaf_level) const {
  int64_t n = 0;
  for (int l = 1; l <= leaf_level; ++l) {
    n += static_cast<int64_t>(((va + size - 1) >> Shift(l - 1)) - (va >> Shift(l - 1)) + 1);
  }
  return n;
}

absl::StatusOr<Prealloc> PageTable::Reserve(int64_t pages) {
  Prealloc pre;
  pre.pages_.reserve(pages);
  {
    absl::MutexLock l(&pool_mu_);
    while (!pool_.empty() && static_cast<int64_t>(pre.pages_.size()) < pages) {
      pre.pages_.push_back(pool_.back());
      pool_.pop_back();
    }
  }
  while (static_cast<int64_t>(pre.pages_.size()) < pages) pre.pages_.push_back(new Table);
  reserved_tables_.fetch_add(pages, std::memory_order_relaxed);
  return pre;
}

absl::StatusOr<Prealloc> PageTable::ReserveForMap(uint64_t va, uint64_t size, uint64_t target,
                                                  uint32_t flags, PageSize page_size) {
  const uint64_t align = PageBytes(page_size);
  absl::Status st = ValidateRange(va, size, align);
  if (!st.ok()) return st;
  if (flags & ~(kPteRead | kPteWrite | kPteSparse)) {
    return absl::InvalidArgumentError("unknown mapping flags");
  }
  if (flags & kPteSparse) {
    if (target != 0) return absl::InvalidArgumentError("a sparse mapping has no target");
  } else {
    if (target % align != 0) return absl::InvalidArgumentError("target not aligned to the page size");
    if (target + size < target) return absl::InvalidArgumentError("target range overflows");
  }
  return Reserve(TablesForRange(va, size, LeafLevel(page_size)));
}

absl::StatusOr<Prealloc> PageTable::ReserveForUnmap(uint64_t va, uint64_t size) {
  absl::Status st = ValidateRange(va, size, PageBytes(PageSize::k4K));
  if (!st.ok()) return st;
  // Only the two ends can split a large page, each into a chain of at most levels-1 tables.
  return Reserve(2 * (levels_ - 1));
}

void PageTable::Unreserve(Prealloc pre) {
  reserved_tables_.fetch_sub(static_cast<int64_t>(pre.pages_.size()), std::memory_order_relaxed);
  for (Table* t : pre.pages_) Recycle(t);  // never linked: still zero
  pre.pages_.clear();
}

Table* PageTable::Take(Prealloc& pre) {
  UDRM_CHECK(!pre.pages_.empty(), "page-table reservation exhausted (reserve with Reserve*)");
  Table* t = pre.pages_.back();
  pre.pages_.pop_back();
  reserved_tables_.fetch_sub(1, std::memory_order_relaxed);
  live_tables_.fetch_add(1, std::memory_order_relaxed);
  return t;
}

// A table at `level + 1` that maps exactly what the large leaf `pte` at `level` mapped, as 512
// smaller leaves; filled before it is linked.
Table* PageTable::Split(uint64_t pte, int level, Prealloc& pre) {
  Table* t = Take(pre);
  const PageSize child_size = level + 1 == levels_ - 1 ? PageSize::k4K : PageSize::k2M;
  const uint64_t step = uint64_t{1} << Shift(level + 1);
  const uint64_t base = pte & kAddrMask;
  const uint64_t flag_bits = pte & kFlagMask;
  for (uint64_t i = 0; i < 512; ++i) {
    t->e[i].store(LeafPte(base + i * step, flag_bits, child_size), std::memory_order_relaxed);
  }
  return t;
}

// Unhooked subtree: its tables are freed by Release() after a grace period.
void PageTable::Retire(uint64_t table_pte, int level, Invalidation& inv) {
  Table* t = PteTable(table_pte);
  if (level + 1 < levels_) {
    for (auto& slot : t->e) {
      const uint64_t pte = slot.load(std::memory_order_relaxed);
      if ((pte & kValid) && (pte & kTableBit)) Retire(pte, level + 1, inv);
    }
  }
  inv.retired_.push_back(t);
  live_tables_.fetch_sub(1, std::memory_order_relaxed);
  retired_tables_.fetch_add(1, std::memory_order_relaxed);
}

// Rewrites the entries of 64 KiB blocks that [va, end) cuts through, outside the range, as
// 4 KiB entries: the block is no longer whole. `t` is a leaf-level table based at `table_base`.
void PageTable::FixPartialBlocks(Table* t, uint64_t va, uint64_t end, uint64_t table_base) {
  for (uint64_t edge : {va, end}) {
    if (edge % k64K == 0) continue;
    const uint64_t block = edge & ~(k64K - 1);
    if (block < table_base || block >= table_base + (uint64_t{1} << Shift(levels_ - 2))) continue;
    for (uint64_t at = block; at < block + k64K; at += 4096) {
      if (at >= va && at < end) continue;
      auto& slot = t->e[(at >> 12) & 511];
      const uint64_t pte = slot.load(std::memory_order_relaxed);
      if (!(pte & kValid) || PteSize(pte) != PageSize::k64K) continue;
      const uint64_t addr = (pte & kSparse) ? 0 : (pte & kAddrMask) + (at - block);
      slot.store(LeafPte(addr, pte & kFlagMask, PageSize::k4K), std::memory_order_release);
    }
  }
}

void PageTable::MapLevel(Table* t, int level, uint64_t va, uint64_t end, const Leaf& leaf,
                         Prealloc& pre, Invalidation& inv) {
  const int shift = Shift(level);
  const uint64_t span = uint64_t{1} << shift;
  for (uint64_t cur = va; cur < end;) {
    const uint64_t entry_end = (cur & ~(span - 1)) + span;
    const uint64_t stop = std::min(end, entry_end);
    std::atomic<uint64_t>& slot = t->e[(cur >> shift) & 511];
    const uint64_t old = slot.load(std::memory_order_relaxed);
    if (level == leaf.level) {
      slot.store(leaf.Pte(cur), std::memory_order_release);
      if (old & kValid) {
        inv.removed_mappings_ = true;
        if (old & kTableBit) Retire(old, level, inv);
      }
    } else {
      Table* child;
      if (!(old & kValid)) {
        child = Take(pre);  // empty: readers may see it before it fills, as "not mapped yet"
        slot.store(TablePte(child), std::memory_order_release);
      } else if (old & kTableBit) {
        child = PteTable(old);
      } else {
        child = Split(old, level, pre);
        slot.store(TablePte(child), std::memory_order_release);
      }
      MapLevel(child, level + 1, cur, stop, leaf, pre, inv);
    }
    cur = stop;
  }
  if (level == levels_ - 1) FixPartialBlocks(t, va, end, va & ~((span << 9) - 1));
}

void PageTable::UnmapLevel(Table* t, int level, uint64_t va, uint64_t end, Prealloc& pre,
                           Invalidation& inv) {
  const int shift = Shift(level);
  const uint64_t span = uint64_t{1} << shift;
  for (uint64_t cur = va; cur < end;) {
    const uint64_t entry_start = cur & ~(span - 1);
    const uint64_t stop = std::min(end, entry_start + span);
    std::atomic<uint64_t>& slot = t->e[(cur >> shift) & 511];
    const uint64_t old = slot.load(std::memory_order_relaxed);
    if (old & kValid) {
      inv.removed_mappings_ = true;
      if (cur == entry_start && stop == entry_start + span) {
        slot.store(0, std::memory_order_release);  // the whole entry goes: unhook
        if (old & kTableBit) Retire(old, level, inv);
      } else {
        Table* child;
        if (old & kTableBit) {
          child = PteTable(old);
        } else {
          child = Split(old, level, pre);  // keep the rest of the large page mapped
          slot.store(TablePte(child), std::memory_order_release);
        }
        UnmapLevel(child, level + 1, cur, stop, pre, inv);
        if (IsEmpty(child)) {  // empty now: unhook it so memory stays bounded
          const uint64_t linked = slot.load(std::memory_order_relaxed);
          slot.store(0, std::memory_order_release);
          Retire(linked, level, inv);
        }
      }
    }
    cur = stop;
  }
  if (level == levels_ - 1) FixPartialBlocks(t, va, end, va & ~((span << 9) - 1));
}

void PageTable::BeginWrite() {
  UDRM_DCHECK(!writer_active_.exchange(true, std::memory_order_acquire),
              "two PageTable writers at once");
}

void PageTable::EndWrite(Invalidation& inv) {
  if (inv.removed_mappings_) {
    inv.generation_ = generation_.fetch_add(1, std::memory_order_acq_rel) + 1;
  } else {
    inv.generation_ = generation_.load(std::memory_order_relaxed);
  }
  writer_active_.store(false, std::memory_order_release);
}

Invalidation PageTable::Map(uint64_t va, uint64_t size, uint64_t target, uint32_t flags,
                            PageSize page_size, Prealloc& pre) {
  UDRM_CHECK(ValidateRange(va, size, PageBytes(page_size)).ok(), "PageTable::Map: bad request");
  BeginWrite();
  Invalidation inv;
  const Leaf leaf{va, target, FlagsToPte(flags), page_size, LeafLevel(page_size)};
  MapLevel(root_, 0, va, va + size, leaf, pre, inv);
  EndWrite(inv);
  return inv;
}

Invalidation PageTable::Unmap(uint64_t va, uint64_t size, Prealloc& pre) {
  UDRM_CHECK(ValidateRange(va, size, 4096).ok(), "PageTable::Unmap: bad request");
  BeginWrite();
  Invalidation inv;
  UnmapLevel(root_, 0, va, va + size, pre, inv);
  EndWrite(inv);
  return inv;
}

void PageTable::Release(Invalidation inv) {
  if (!inv.removed_mappings_ && inv.retired_.empty()) return;
  RcuSynchronize();
  retired_tables_.fetch_sub(static_cast<int64_t>(inv.retired_.size()), std::memory_order_relaxed);
  for (Table* t : inv.retired_) {
    for (auto& slot : t->e) slot.store(0, std::memory_order_relaxed);  // no reader can see it
    Recycle(t);
  }
  inv.retired_.clear();
}

PageTable::Stats PageTable::stats() const {
  return Stats{live_tables_.load(std::memory_order_relaxed),
               reserved_tables_.load(std::memory_order_relaxed),
               retired_tables_.load(std::memory_order_relaxed)};
}

}  // namespace vm
