#include "vm/page_table.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "base/check.h"
#include "base/sanitizers.h"
#include "vm/rcu.h"

namespace vm {

using internal::Table;

namespace {

using internal::kAddrMask;
using internal::kCountMask;
using internal::kCountShift;
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

// Writer-only: whether `t` has no valid entry, by a scan (debug checks and the test hook: the
// writer keeps a count, ValidCount). Eight entries per test.
[[maybe_unused]] bool IsEmpty(const Table* t) {
  for (int i = 0; i < 512; i += 8) {
    uint64_t any = 0;
    for (int k = 0; k < 8; ++k) any |= t->e[i + k].load(std::memory_order_relaxed);
    if (any & kValid) return false;
  }
  return true;
}

// Writer-only: the count of valid entries of `t`, kept in bits 7-11 of its entries 0 and 1
// (vm/internal/pte.h).
int ValidCount(const Table* t) {
  const uint64_t lo = (t->e[0].load(std::memory_order_relaxed) & kCountMask) >> kCountShift;
  const uint64_t hi = (t->e[1].load(std::memory_order_relaxed) & kCountMask) >> kCountShift;
  return static_cast<int>(lo | (hi << 5));
}

// Writer-only: adds `delta` to the valid-entry count of `t`. Release stores, as every store of
// a linked table's entry: the entry's mapping bits do not change.
void AddValidCount(Table* t, int delta) {
  if (delta == 0) return;
  const int n = ValidCount(t) + delta;
  UDRM_DCHECK(n >= 0 && n <= 512, "PageTable: valid-entry count out of range");
  for (int i = 0; i < 2; ++i) {
    const uint64_t bits = (static_cast<uint64_t>(n >> (5 * i)) & 31) << kCountShift;
    const uint64_t old = t->e[i].load(std::memory_order_relaxed);
    if ((old & kCountMask) != bits) {
      t->e[i].store((old & ~kCountMask) | bits, std::memory_order_release);
    }
  }
}

// Writer-only: stores `pte` in `slot`, whose value is `old`, keeping the count bits `old` holds
// (entries 0 and 1 of a table carry its valid-entry count).
void StoreEntry(std::atomic<uint64_t>& slot, uint64_t old, uint64_t pte) {
  slot.store(pte | (old & kCountMask), std::memory_order_release);
}

constexpr uint64_t k64K = uint64_t{1} << 16;

// A retire-log entry: the subtree root's address, its levels above the last table level (at
// most 3), and whether the root is an empty table.
constexpr uint64_t kRetiredBelowMask = 7;
constexpr uint64_t kRetiredEmpty = 8;

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

Invalidation& Invalidation::operator=(Invalidation&& other) noexcept {
  UDRM_CHECK(log_head_ == nullptr || this == &other,
             "Invalidation overwritten without PageTable::Release");
  generation_ = other.generation_;
  removed_mappings_ = std::exchange(other.removed_mappings_, false);
  retired_count_ = std::exchange(other.retired_count_, 0);
  log_head_ = std::exchange(other.log_head_, nullptr);
  log_tail_ = std::exchange(other.log_tail_, nullptr);
  return *this;
}

void Invalidation::Absorb(Invalidation&& later) {
  generation_ = std::max(generation_, later.generation_);
  removed_mappings_ = removed_mappings_ || std::exchange(later.removed_mappings_, false);
  retired_count_ += std::exchange(later.retired_count_, 0);
  Table* head = std::exchange(later.log_head_, nullptr);
  Table* tail = std::exchange(later.log_tail_, nullptr);
  if (head == nullptr) return;
  if (log_tail_ == nullptr) {
    log_head_ = head;
  } else {
    log_tail_->e[internal::kLogNext].store(reinterpret_cast<uint64_t>(head),
                                           std::memory_order_relaxed);
  }
  log_tail_ = tail;
}

Invalidation::~Invalidation() {
  UDRM_CHECK(log_head_ == nullptr, "Invalidation dropped without PageTable::Release");
}

absl::StatusOr<std::unique_ptr<PageTable>> PageTable::Create(int va_bits) {
  if (va_bits != 39 && va_bits != 48 && va_bits != 57) {
    return absl::InvalidArgumentError("va_bits must be 39, 48 or 57");
  }
  return std::unique_ptr<PageTable>(new PageTable(va_bits));
}

// Sanitizer builds keep no pool: every released page is really freed, so a premature free would
// be a use-after-free that ASan/TSan report. The grace-period logic is the same in every build.
#if UDRM_SANITIZER
constexpr size_t kMaxPooledTables = 0;
#else
// 4 MiB: enough for a 2 GiB map of 4 KiB pages (1028 tables). When a request's tables do not fit,
// Release frees the rest and the next Reserve allocates them again; glibc then trims the freed top
// of the heap (brk) and every table page faults in again: with 256, a 1 GiB 4 KiB-page map+unmap
// (514 tables) cost ~6x the pooled time (~420 page faults per round; gone with
// GLIBC_TUNABLES=glibc.malloc.trim_threshold=1e9 or with this pool).
constexpr size_t kMaxPooledTables = 1024;
#endif

PageTable::PageTable(int va_bits)
    : va_bits_(va_bits),
      levels_((va_bits - 12) / 9),
      top_shift_(12 + 9 * (levels_ - 1)),
      root_(new Table) {
  absl::MutexLock l(&pool_mu_);
  pool_.reserve(kMaxPooledTables);  // recycling never allocates
}

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

int64_t LogPages(int64_t roots) {
  return (roots + internal::kLogCapacity - 1) / internal::kLogCapacity;
}
}  // namespace

PageTable::~PageTable() {
  FlushDeferred();
  {
    absl::MutexLock l(&caches_mu_);
    UDRM_CHECK(caches_.empty(), "PageTable destroyed before its TranslationCaches");
  }
  FreeSubtree(root_, 0, levels_);
  absl::MutexLock l(&pool_mu_);
  for (Table* t : pool_) delete t;
}

void PageTable::RecycleBatch(Table* const* tables, size_t n) {
  size_t kept;
  {
    absl::MutexLock l(&pool_mu_);
    kept = std::min(n, kMaxPooledTables - pool_.size());
    pool_.insert(pool_.end(), tables, tables + kept);
  }
  for (size_t i = kept; i < n; ++i) delete tables[i];
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
  // Page sizes are powers of two: masks, not two 64-bit divisions (2.7% of vmbind_bench's
  // BM_Batched<Udrm>, which validates every map at reservation and again at Map).
  if (align == 0 || (align & (align - 1)) != 0) {
    return absl::InvalidArgumentError("unknown page size");
  }
  if (((va | size) & (align - 1)) != 0) {
    return absl::InvalidArgumentError("va or size not aligned to the page size");
  }
  if (va + size < va) return absl::InvalidArgumentError("range overflows");
  if (va + size > va_limit()) return absl::InvalidArgumentError("range beyond the VA space");
  return absl::OkStatus();
}

// Entries of a table at `level` that [va, va+size) touches (across all tables of that level).
int64_t PageTable::EntriesTouched(uint64_t va, uint64_t size, int level) const {
  return static_cast<int64_t>(((va + size - 1) >> Shift(level)) - (va >> Shift(level)) + 1);
}

// Worst case of subtrees an unmap unhooks: at each level that holds tables, the entries it
// touches; an unmap descends only into the (at most two) entries it covers partially, so below
// the root it visits at most 2 tables, 1024 entries, per level.
int64_t PageTable::UnmapRetireRoots(uint64_t va, uint64_t size) const {
  int64_t n = 0;
  for (int l = 0; l + 1 < levels_; ++l) n += std::min<int64_t>(EntriesTouched(va, size, l), 1024);
  return n;
}

// Worst case: every table between the root and the leaf level is missing. A table at level l
// serves one entry of level l-1, so the count at level l is the number of level l-1 entries the
// range touches. (Splitting a large page creates a table in a position counted here too.)
int64_t PageTable::TablesForRange(uint64_t va, uint64_t size, int leaf_level) const {
  int64_t n = 0;
  for (int l = 1; l <= leaf_level; ++l) n += EntriesTouched(va, size, l - 1);
  return n;
}

void PageTable::ReserveInto(int64_t pages, Prealloc& pre) {
  if (pages <= 0) return;
  std::vector<Table*>& v = pre.pages_;
  const size_t base = v.size();
  v.resize(base + static_cast<size_t>(pages));
  size_t pooled;
  {
    // The pool's most recently recycled pages, in the pool's order, at the back: TakeRaw takes
    // from the back, so the page most likely still in cache is used first (taking the reverse
    // order made a 1 GiB map+unmap in 2 MiB pages ~12 % slower: every map wrote into the coldest
    // page).
    absl::MutexLock l(&pool_mu_);
    pooled = std::min(pool_.size(), static_cast<size_t>(pages));
    std::copy(pool_.end() - pooled, pool_.end(), v.end() - pooled);
    pool_.resize(pool_.size() - pooled);
  }
  for (size_t i = base; i < v.size() - pooled; ++i) v[i] = new Table;  // fresh: taken last
  reserved_tables_.fetch_add(pages, std::memory_order_relaxed);
}

absl::Status PageTable::ValidateMap(uint64_t va, uint64_t size, uint64_t target, uint32_t flags,
                                    PageSize page_size) const {
  const uint64_t align = PageBytes(page_size);
  if (absl::Status st = ValidateRange(va, size, align); !st.ok()) return st;
  if (flags & ~(kPteRead | kPteWrite | kPteSparse)) {
    return absl::InvalidArgumentError("unknown mapping flags");
  }
  if (flags & kPteSparse) {
    if (target != 0) return absl::InvalidArgumentError("a sparse mapping has no target");
  } else {
    if ((target & (align - 1)) != 0) {
      return absl::InvalidArgumentError("target not aligned to the page size");
    }
    if (target + size < target) return absl::InvalidArgumentError("target range overflows");
  }
  return absl::OkStatus();
}

int64_t PageTable::MapBound(uint64_t va, uint64_t size, PageSize page_size) const {
  // A map unhooks subtrees only where a leaf replaces a table: one per leaf entry above the last
  // level.
  const int leaf_level = LeafLevel(page_size);
  const int64_t roots = leaf_level + 1 < levels_ ? EntriesTouched(va, size, leaf_level) : 0;
  return TablesForRange(va, size, leaf_level) + LogPages(roots);
}

int64_t PageTable::UnmapBound(uint64_t va, uint64_t size) const {
  // Only the two ends can split a large page, each into a chain of at most levels-1 tables.
  return 2 * (levels_ - 1) + LogPages(UnmapRetireRoots(va, size));
}

absl::StatusOr<Prealloc> PageTable::ReserveForMap(uint64_t va, uint64_t size, uint64_t target,
                                                  uint32_t flags, PageSize page_size) {
  if (absl::Status st = ValidateMap(va, size, target, flags, page_size); !st.ok()) return st;
  Prealloc pre;
  ReserveInto(MapBound(va, size, page_size), pre);
  return pre;
}

absl::StatusOr<Prealloc> PageTable::ReserveForUnmap(uint64_t va, uint64_t size) {
  if (absl::Status st = ValidateRange(va, size, PageBytes(PageSize::k4K)); !st.ok()) return st;
  Prealloc pre;
  ReserveInto(UnmapBound(va, size), pre);
  return pre;
}

absl::Status PageTable::ReserveForMap(uint64_t va, uint64_t size, uint64_t target,
                                      uint32_t flags, PageSize page_size, Prealloc& list) {
  if (absl::Status st = ValidateMap(va, size, target, flags, page_size); !st.ok()) return st;
  ReserveInto(MapBound(va, size, page_size), list);
  return absl::OkStatus();
}

absl::Status PageTable::ReserveForUnmap(uint64_t va, uint64_t size, Prealloc& list) {
  if (absl::Status st = ValidateRange(va, size, PageBytes(PageSize::k4K)); !st.ok()) return st;
  ReserveInto(UnmapBound(va, size), list);
  return absl::OkStatus();
}

absl::Status PageTable::ListBound::AddMap(uint64_t va, uint64_t size, uint64_t target,
                                          uint32_t flags, PageSize page_size) {
  if (absl::Status st = pt_->ValidateMap(va, size, target, flags, page_size); !st.ok()) return st;
  sum_ += pt_->MapBound(va, size, page_size);
  const int leaf_level = pt_->LeafLevel(page_size);
  if (leaf_level != pt_->levels_ - 1) leaf_maps_only_ = false;
  if (va < last_va_) ascending_ = false;
  last_va_ = va;
  if (!leaf_maps_only_ || !ascending_) return absl::OkStatus();
  // Starts in ascending order: of the positions counted so far, this call touches at a level
  // exactly those from its first one up to the highest one counted (the call that reached the
  // highest started at or before this one, so it covers that stretch), so only the ones above
  // are new.
  for (int l = 1; l <= leaf_level; ++l) {
    const int shift = pt_->Shift(l - 1);
    const uint64_t first = std::max(va >> shift, next_index_[l]);
    const uint64_t last = (va + size - 1) >> shift;
    if (last < first) continue;
    distinct_ += static_cast<int64_t>(last - first + 1);
    next_index_[l] = last + 1;
  }
  return absl::OkStatus();
}

absl::Status PageTable::ListBound::AddUnmap(uint64_t va, uint64_t size) {
  if (absl::Status st = pt_->ValidateRange(va, size, PageBytes(PageSize::k4K)); !st.ok()) {
    return st;
  }
  sum_ += pt_->UnmapBound(va, size);
  leaf_maps_only_ = false;
  return absl::OkStatus();
}

int64_t PageTable::ListBound::pages() const {
  return leaf_maps_only_ && ascending_ ? distinct_ : sum_;
}

void PageTable::Reserve(const ListBound& bound, Prealloc& list) {
  UDRM_CHECK(bound.pt_ == this, "PageTable::Reserve: a ListBound of another page table");
  ReserveInto(bound.pages(), list);
}

void PageTable::Unreserve(Prealloc pre) {
  std::vector<Table*>& v = pre.pages_;
  reserved_tables_.fetch_sub(static_cast<int64_t>(v.size()), std::memory_order_relaxed);
  RecycleBatch(v.data(), v.size());  // never linked: still zero; one lock for the whole list
  v.clear();
}

// A zeroed reserved page, no longer counted as reserved.
Table* PageTable::TakeRaw(Prealloc& pre) {
  UDRM_CHECK(!pre.pages_.empty(), "page-table reservation exhausted (reserve with Reserve*)");
  Table* t = pre.pages_.back();
  pre.pages_.pop_back();
  reserved_tables_.fetch_sub(1, std::memory_order_relaxed);
  return t;
}

// A reserved page that becomes a table of the tree.
Table* PageTable::Take(Prealloc& pre) {
  Table* t = TakeRaw(pre);
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
  AddValidCount(t, 512);  // a fresh page: the count was 0
  return t;
}

namespace {
// Writer-only: the number of tables in the subtree rooted at `t`, a table `below` levels above
// the last (whose entries are never tables, so they are not read).
int64_t CountSubtree(const Table* t, int below) {
  int64_t n = 1;
  if (below == 0) return n;
  for (const auto& slot : t->e) {
    const uint64_t pte = slot.load(std::memory_order_relaxed);
    if ((pte & kValid) && (pte & kTableBit)) n += CountSubtree(PteTable(pte), below - 1);
  }
  return n;
}

// After a grace period: zeroes and hands every table of the subtree to `recycle`.
template <typename F>
void FreeRetired(Table* t, int below, F& recycle) {
  for (auto& slot : t->e) {
    if (below > 0) {
      const uint64_t pte = slot.load(std::memory_order_relaxed);
      if ((pte & kValid) && (pte & kTableBit)) FreeRetired(PteTable(pte), below - 1, recycle);
    }
    slot.store(0, std::memory_order_relaxed);
  }
  recycle(t);
}
}  // namespace

// Unhooked subtree: its root goes to the retire log (a page from `pre` when the current one is
// full), and its tables are freed by Release() after a grace period.
void PageTable::Retire(uint64_t table_pte, int level, Prealloc& pre, Invalidation& inv,
                       bool empty) {
  using internal::kLogCount;
  Table* log = inv.log_tail_;
  if (log == nullptr ||
      static_cast<int64_t>(log->e[kLogCount].load(std::memory_order_relaxed)) ==
          internal::kLogCapacity) {
    Table* page = TakeRaw(pre);
    if (log == nullptr) {
      inv.log_head_ = page;
    } else {
      log->e[internal::kLogNext].store(reinterpret_cast<uint64_t>(page), std::memory_order_relaxed);
    }
    inv.log_tail_ = log = page;
  }
  const uint64_t n = log->e[kLogCount].load(std::memory_order_relaxed);
  // The root's levels above the last table level in the low bits (tables are page-aligned),
  // and whether it is an empty table (nothing to walk or zero at Release: no one writes an
  // unhooked table).
  const int below = levels_ - 2 - level;
  log->e[internal::kLogFirst + n].store(
      (table_pte & kAddrMask) | static_cast<uint64_t>(below) | (empty ? kRetiredEmpty : 0),
      std::memory_order_relaxed);
  log->e[kLogCount].store(n + 1, std::memory_order_relaxed);
  const int64_t tables = empty ? 1 : CountSubtree(PteTable(table_pte), below);
  inv.retired_count_ += static_cast<size_t>(tables);
  live_tables_.fetch_sub(tables, std::memory_order_relaxed);
  retired_tables_.fetch_add(tables, std::memory_order_relaxed);
}

// Rewrites the entries of 64 KiB blocks that [va, end) cuts through, outside the range, as
// 4 KiB entries: the block is no longer whole. `t` is a leaf-level table based at `table_base`.
// The entries of a 64 KiB-aligned block are all 64 KiB entries (one mapping: only a 64 KiB map
// writes them, always whole blocks) or none is (every cut goes through here), so one entry of the
// block outside the range tells whether there is anything to rewrite.
void PageTable::FixPartialBlocks(Table* t, uint64_t va, uint64_t end, uint64_t table_base) {
  for (uint64_t edge : {va, end}) {
    if (edge % k64K == 0) continue;
    const uint64_t block = edge & ~(k64K - 1);
    if (block < table_base || block >= table_base + (uint64_t{1} << Shift(levels_ - 2))) continue;
    // Outside the range: the block's first entry below `va`, the entry at `end` above it.
    const uint64_t probe = edge == va ? block : end;
    const uint64_t probed = t->e[(probe >> 12) & 511].load(std::memory_order_relaxed);
    if (!(probed & kValid) || PteSize(probed) != PageSize::k64K) continue;
    for (uint64_t at = block; at < block + k64K; at += 4096) {
      if (at >= va && at < end) continue;
      auto& slot = t->e[(at >> 12) & 511];
      const uint64_t pte = slot.load(std::memory_order_relaxed);
      if (!(pte & kValid) || PteSize(pte) != PageSize::k64K) continue;
      const uint64_t addr = (pte & kSparse) ? 0 : (pte & kAddrMask) + (at - block);
      StoreEntry(slot, pte, LeafPte(addr, pte & kFlagMask, PageSize::k4K));
    }
  }
}

void PageTable::MapLevel(Table* t, int level, uint64_t va, uint64_t end, const Leaf& leaf,
                         Prealloc& pre, Invalidation& inv) {
  const int shift = Shift(level);
  const uint64_t span = uint64_t{1} << shift;
  int added = 0;  // entries of `t` that became valid (the count is updated once, at the end)
  for (uint64_t cur = va; cur < end;) {
    const uint64_t entry_end = (cur & ~(span - 1)) + span;
    const uint64_t stop = std::min(end, entry_end);
    std::atomic<uint64_t>& slot = t->e[(cur >> shift) & 511];
    const uint64_t old = slot.load(std::memory_order_relaxed);
    if (level == leaf.level) {
      StoreEntry(slot, old, leaf.Pte(cur));
      if (old & kValid) {
        inv.removed_mappings_ = true;
        if (old & kTableBit) Retire(old, level, pre, inv);
      } else {
        ++added;
      }
    } else {
      Table* child;
      if (!(old & kValid)) {
        child = Take(pre);  // empty: readers may see it before it fills, as "not mapped yet"
        StoreEntry(slot, old, TablePte(child));
        ++added;
      } else if (old & kTableBit) {
        child = PteTable(old);
      } else {
        child = Split(old, level, pre);
        StoreEntry(slot, old, TablePte(child));
      }
      MapLevel(child, level + 1, cur, stop, leaf, pre, inv);
    }
    cur = stop;
  }
  AddValidCount(t, added);
  if (level == levels_ - 1) FixPartialBlocks(t, va, end, va & ~((span << 9) - 1));
}

void PageTable::UnmapLevel(Table* t, int level, uint64_t va, uint64_t end, Prealloc& pre,
                           Invalidation& inv) {
  const int shift = Shift(level);
  const uint64_t span = uint64_t{1} << shift;
  int removed = 0;  // valid entries of `t` cleared (the count is updated once, at the end)
  for (uint64_t cur = va; cur < end;) {
    const uint64_t entry_start = cur & ~(span - 1);
    const uint64_t stop = std::min(end, entry_start + span);
    std::atomic<uint64_t>& slot = t->e[(cur >> shift) & 511];
    const uint64_t old = slot.load(std::memory_order_relaxed);
    if (old & kValid) {
      inv.removed_mappings_ = true;
      if (cur == entry_start && stop == entry_start + span) {
        StoreEntry(slot, old, 0);  // the whole entry goes: unhook
        ++removed;
        if (old & kTableBit) Retire(old, level, pre, inv);
      } else {
        Table* child;
        if (old & kTableBit) {
          child = PteTable(old);
        } else {
          child = Split(old, level, pre);  // keep the rest of the large page mapped
          StoreEntry(slot, old, TablePte(child));
        }
        UnmapLevel(child, level + 1, cur, stop, pre, inv);
        // Empty now (its count, not a scan of 512 entries): unhook it so memory stays bounded.
        if (ValidCount(child) == 0) {
          UDRM_DCHECK(IsEmpty(child), "PageTable: a table counted empty has a valid entry");
          const uint64_t linked = slot.load(std::memory_order_relaxed);
          StoreEntry(slot, linked, 0);
          ++removed;
          Retire(linked, level, pre, inv, /*empty=*/true);
        }
      }
    }
    cur = stop;
  }
  AddValidCount(t, -removed);
  if (level == levels_ - 1) FixPartialBlocks(t, va, end, va & ~((span << 9) - 1));
}

namespace {
// The first table under `t` (at `level`; `t` included) whose valid-entry count differs from a
// scan of its entries, described; empty if none.
std::string CountMismatch(const Table* t, int level, int levels) {
  int scanned = 0;
  for (const auto& slot : t->e) scanned += (slot.load(std::memory_order_relaxed) & kValid) != 0;
  if (scanned != ValidCount(t)) {
    return "table at level " + std::to_string(level) + ": count " +
           std::to_string(ValidCount(t)) + ", " + std::to_string(scanned) + " valid entries";
  }
  if (level + 1 >= levels) return "";
  for (const auto& slot : t->e) {
    const uint64_t pte = slot.load(std::memory_order_relaxed);
    if (!(pte & kValid) || !(pte & kTableBit)) continue;
    if (std::string m = CountMismatch(PteTable(pte), level + 1, levels); !m.empty()) return m;
  }
  return "";
}
}  // namespace

absl::Status PageTable::CheckValidCountsForTesting() const {
  const std::string m = CountMismatch(root_, 0, levels_);
  if (m.empty()) return absl::OkStatus();
  return absl::InternalError("PageTable valid-entry count: " + m);
}

void PageTable::BeginWrite() {
  UDRM_DCHECK(!writer_active_.exchange(true, std::memory_order_acquire),
              "two PageTable writers at once");
}

namespace {
// The RegionBits of every 1 GiB region that [va, va + size) touches (all bits past 64 regions).
uint64_t RangeRegionBits(uint64_t va, uint64_t size) {
  const uint64_t first = va >> 30, last = (va + size - 1) >> 30;
  if (last - first >= 64) return ~uint64_t{0};
  uint64_t bits = 0;
  for (uint64_t r = first; r <= last; ++r) bits |= internal::RegionBit(r << 30);
  return bits;
}
}  // namespace

void PageTable::EndWrite(Invalidation& inv, uint64_t va, uint64_t size) {
  EndWriteRegions(inv, inv.removed_mappings_ ? RangeRegionBits(va, size) : 0);
}

void PageTable::EndWriteRegions(Invalidation& inv, uint64_t regions) {
  if (inv.removed_mappings_) {
    inv.generation_ = generation_.fetch_add(1, std::memory_order_acq_rel) + 1;
    absl::MutexLock l(&caches_mu_);
    // The entries' stores before the footprints' loads (internal::CacheFlags): a cache whose
    // footprint misses the range filled nothing in it before this point, and its later walks
    // see the change.
    internal::FullBarrier();
    for (internal::CacheFlags* c : caches_) {
      // After the entries changed (release): a cache that sees its flag set also sees them.
      if (c->footprint.load(std::memory_order_relaxed) & regions) {
        c->stale.store(1, std::memory_order_release);
      }
    }
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
  EndWrite(inv, va, size);
  return inv;
}

internal::Table* PageTable::LastLevelTable(uint64_t va) const {
  Table* t = root_;
  for (int level = 0; level + 1 < levels_; ++level) {
    const uint64_t pte = t->e[(va >> Shift(level)) & 511].load(std::memory_order_relaxed);
    UDRM_CHECK((pte & kValid) && (pte & kTableBit), "PageTable: no last-level table at va");
    t = PteTable(pte);
  }
  return t;
}

Invalidation PageTable::MapAll(std::span<const MapArgs> maps, Prealloc& pre) {
  for (const MapArgs& m : maps) {
    UDRM_CHECK(ValidateRange(m.va, m.size, PageBytes(m.page_size)).ok(),
               "PageTable::Map: bad request");
  }
  BeginWrite();
  Invalidation inv;
  uint64_t regions = 0;  // of the maps that replaced mappings
  const uint64_t table_span = uint64_t{1} << Shift(levels_ - 2);  // a last-level table's VA
  Table* last = nullptr;  // the last-level table covering [last_base, last_base + table_span)
  uint64_t last_base = 0;
  for (const MapArgs& m : maps) {
    const Leaf leaf{m.va, m.target, FlagsToPte(m.flags), m.page_size, LeafLevel(m.page_size)};
    const uint64_t base = m.va & ~(table_span - 1);
    const bool one_table = leaf.level == levels_ - 1 && m.va + m.size <= base + table_span;
    const bool removed_before = inv.removed_mappings_;
    inv.removed_mappings_ = false;
    if (one_table && last != nullptr && base == last_base) {
      MapLevel(last, levels_ - 1, m.va, m.va + m.size, leaf, pre, inv);
    } else {
      MapLevel(root_, 0, m.va, m.va + m.size, leaf, pre, inv);
      last = one_table ? LastLevelTable(m.va) : nullptr;
      last_base = base;
    }
    if (inv.removed_mappings_) regions |= RangeRegionBits(m.va, m.size);
    inv.removed_mappings_ |= removed_before;
  }
  EndWriteRegions(inv, regions);
  return inv;
}

Invalidation PageTable::Unmap(uint64_t va, uint64_t size, Prealloc& pre) {
  UDRM_CHECK(ValidateRange(va, size, 4096).ok(), "PageTable::Unmap: bad request");
  BeginWrite();
  Invalidation inv;
  UnmapLevel(root_, 0, va, va + size, pre, inv);
  EndWrite(inv, va, size);
  return inv;
}

void PageTable::Release(Invalidation inv) {
  if (!inv.removed_mappings_ && inv.log_head_ == nullptr) return;
  RcuSynchronize();  // after it, no reader can see the unhooked tables
  retired_tables_.fetch_sub(static_cast<int64_t>(inv.retired_count_), std::memory_order_relaxed);
  // Each page is recycled as soon as it is zeroed (one pool lock per page: recycling them in
  // batches of 64 measured ~10 % slower on pagetable_bench's 1 GiB map+unmap).
  auto recycle = [this](Table* t) { RecycleBatch(&t, 1); };
  for (Table* log = inv.log_head_; log != nullptr;) {
    const uint64_t n = log->e[internal::kLogCount].load(std::memory_order_relaxed);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t root = log->e[internal::kLogFirst + i].load(std::memory_order_relaxed);
      if (root & kRetiredEmpty) {
        recycle(PteTable(root));  // still all zero
      } else {
        FreeRetired(PteTable(root), static_cast<int>(root & kRetiredBelowMask), recycle);
      }
    }
    Table* next = PteTable(log->e[internal::kLogNext].load(std::memory_order_relaxed));
    for (uint64_t i = 0; i < internal::kLogFirst + n; ++i) {
      log->e[i].store(0, std::memory_order_relaxed);
    }
    recycle(log);
    log = next;
  }
  inv.log_head_ = inv.log_tail_ = nullptr;
  inv.retired_count_ = 0;
}

namespace {
int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void PageTable::ReleaseDeferred(Invalidation inv) {
  if (!inv.removed_mappings_ && inv.log_head_ == nullptr) return;  // nothing to wait for
  Invalidation batch;
  {
    absl::MutexLock l(&defer_mu_);
    const int64_t now = NowMicros();
    if (deferred_changes_ == 0) deferred_since_us_ = now;
    deferred_.Absorb(std::move(inv));
    ++deferred_changes_;
    if (static_cast<int64_t>(deferred_.retired_count_) < kMaxDeferredTables &&
        deferred_changes_ < kMaxDeferredChanges && now - deferred_since_us_ < kMaxDeferralMicros) {
      return;
    }
    batch = TakeDeferred();
  }
  ReleaseBatch(std::move(batch));
}

void PageTable::FlushDeferred() {
  Invalidation batch;
  {
    absl::MutexLock l(&defer_mu_);
    if (deferred_changes_ == 0 && deferred_in_flight_ == 0) return;
    batch = TakeDeferred();
  }
  if (batch.removed_mappings_ || batch.log_head_ != nullptr) ReleaseBatch(std::move(batch));
  // A batch another thread took out is released (grace period and freeing) by that thread:
  // wait until it has, so that no unhooked table is still unfreed when this returns (and the
  // destructor never frees the pool under another thread's Release).
  absl::MutexLock l(&defer_mu_);
  defer_mu_.Await(absl::Condition(
      +[](int64_t* in_flight) { return *in_flight == 0; }, &deferred_in_flight_));
}

Invalidation PageTable::TakeDeferred() {
  Invalidation batch = std::move(deferred_);
  deferred_ = Invalidation();
  if (deferred_changes_ != 0) ++deferred_in_flight_;
  deferred_changes_ = 0;
  return batch;
}

// Outside defer_mu_: other writers may defer meanwhile.
void PageTable::ReleaseBatch(Invalidation batch) {
  Release(std::move(batch));
  absl::MutexLock l(&defer_mu_);
  --deferred_in_flight_;
}

void PageTable::RegisterCache(internal::CacheFlags* flags) const {
  absl::MutexLock l(&caches_mu_);
  caches_.push_back(flags);
}

void PageTable::UnregisterCache(internal::CacheFlags* flags) const {
  absl::MutexLock l(&caches_mu_);
  auto it = std::find(caches_.begin(), caches_.end(), flags);
  UDRM_CHECK(it != caches_.end(), "TranslationCache not registered");
  *it = caches_.back();
  caches_.pop_back();
}

PageTable::Stats PageTable::stats() const {
  return Stats{live_tables_.load(std::memory_order_relaxed),
               reserved_tables_.load(std::memory_order_relaxed),
               retired_tables_.load(std::memory_order_relaxed)};
}

}  // namespace vm
