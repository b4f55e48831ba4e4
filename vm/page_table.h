// vm::PageTable — the GPU page table that bind jobs write and emulated GPU threads read.
//
// What it is: a multi-level radix table over a GPU VA space of 39, 48 or 57 bits (3, 4 or 5
// levels of 512 entries over 4 KiB pages), with leaf mappings of 4 KiB, 64 KiB (16 consecutive
// 4 KiB entries, like a contiguous hint), 2 MiB and 1 GiB. Every entry is ONE atomic 64-bit word
// holding the target address and the flags together, so a reader can never see half an update.
//
// Concurrency contract:
//  - Readers: any number of threads, concurrently with everything else. A reader thread holds an
//    RcuReaderThread and calls Translate() inside an RcuReadSection (see vm/rcu.h); it may keep
//    one section open across a batch of translations (e.g. a job or a warp) — sections are
//    wait-free. Translate() is lock-free and wait-free: at most one acquire load per level. Its
//    result was the valid translation (or the fault) at some instant during the call.
//  - Writers: one at a time per PageTable (checked in debug builds). A writer first reserves
//    (ReserveForMap / ReserveForUnmap: validates the request and pre-allocates the worst-case
//    number of table pages; may fail with InvalidArgument, changing nothing), then applies it
//    (Map / Unmap, or MapAll for a list of maps: never allocate, cannot fail), then finishes
//    (Release of the returned Invalidation, and Unreserve of what was not used).
//  - Publication: a new table page is fully initialised (zeroed, or filled with the pieces of a
//    split large page) before the release-store that links it, so a reader never sees a table
//    that is not ready.
//  - Unmap (and a map that replaces mappings) follows unhook -> invalidate -> free: entries are
//    cleared or replaced at once; the returned Invalidation carries the new translation
//    generation, which software TLBs compare against, and the unhooked table pages. A change
//    that removed mappings also sets the stale flag of every vm::TranslationCache built on the
//    table whose footprint (hashed 1 GiB regions it holds entries in) meets the change's range
//    (after the entries changed), under a registry mutex that only caches' construction
//    and destruction also take: Map/Unmap still never allocate and never wait for readers.
//    Release() waits for an RCU grace period — after which no reader can still hold a
//    translation or a table pointer from before — and only then frees those pages. Backing memory
//    that the old mappings pointed to may be reused only after Release() returns.
//    ReleaseDeferred() instead batches the grace period with other changes' (one grace period
//    when the batch holds kMaxDeferredChanges changes or kMaxDeferredTables tables, or is a
//    millisecond old; bounded memory): the backing memory may then be reused only after a later
//    FlushDeferred() returns. Each grace period costs every reader
//    that is inside a section about two cache misses (vm/rcu.h), so a writer that changes the
//    table hundreds of thousands of times a second should defer.
//  - Partial unmap (or partial re-map) of a large page splits it: the rest stays mapped, as
//    smaller pages, with the same target and flags. Empty table pages are unhooked and freed (via
//    Release), so memory stays bounded under map/unmap storms. The writer knows a table is empty
//    from a count of its valid entries that it keeps in the table (bits no reader looks at),
//    not by scanning the table's 512 entries.
//
// Bad requests (misaligned, out of range, overflowing, size 0, unknown flags) return
// InvalidArgument from the Reserve* calls and change nothing.
#ifndef UDRM_VM_PAGE_TABLE_H_
#define UDRM_VM_PAGE_TABLE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vm/internal/pte.h"

namespace vm {

enum class PageSize : uint8_t { k4K = 0, k64K = 1, k2M = 2, k1G = 3 };

constexpr uint64_t PageBytes(PageSize s) {
  switch (s) {
    case PageSize::k4K:
      return uint64_t{1} << 12;
    case PageSize::k64K:
      return uint64_t{1} << 16;
    case PageSize::k2M:
      return uint64_t{1} << 21;
    case PageSize::k1G:
      return uint64_t{1} << 30;
  }
  return 0;
}

// Mapping flags.
inline constexpr uint32_t kPteRead = 1u << 0;
inline constexpr uint32_t kPteWrite = 1u << 1;
inline constexpr uint32_t kPteSparse = 1u << 2;  // a "null page": valid, reads zero; no target

struct Translation {
  bool valid = false;    // false: a fault (nothing mapped)
  uint64_t address = 0;  // target address of the translated VA (0 for sparse)
  uint32_t flags = 0;    // kPte* bits
  PageSize size = PageSize::k4K;
};

// Table pages reserved for one request: the worst case of new tables (missing levels and split
// large pages) and of pages for the request's retire log (the unhooked subtrees that its
// Invalidation carries to Release). Move-only; must be handed back with PageTable::Unreserve()
// (what Map/Unmap did not use is kept for reuse or freed, and un-counted).
class Prealloc {
 public:
  Prealloc() = default;
  Prealloc(Prealloc&&) = default;
  Prealloc& operator=(Prealloc&&) = default;
  ~Prealloc();
  size_t size() const { return pages_.size(); }

 private:
  friend class PageTable;
  std::vector<internal::Table*> pages_;
};

// The result of a Map or Unmap: what readers must stop using before memory is reused. It owns the
// unhooked tables until PageTable::Release(); dropping or overwriting one that still holds
// tables is a contract violation (crash).
class Invalidation {
 public:
  Invalidation() = default;
  Invalidation(Invalidation&& other) noexcept { *this = std::move(other); }
  Invalidation& operator=(Invalidation&& other) noexcept;
  ~Invalidation();
  // The translation generation after the change: a cached translation tagged with an older
  // generation must not be used.
  uint64_t generation() const { return generation_; }
  size_t retired_tables() const { return retired_count_; }
  // True if the change replaced or removed a valid mapping (so a grace period is needed before
  // the old backing memory is reused).
  bool removed_mappings() const { return removed_mappings_; }
  // Takes over `later`'s pending work, so that one Release() (one grace period) covers both —
  // what a bind job does for all the ops of its list. Constant time; never allocates.
  void Absorb(Invalidation&& later);

 private:
  friend class PageTable;
  uint64_t generation_ = 0;
  bool removed_mappings_ = false;
  size_t retired_count_ = 0;  // tables in the unhooked subtrees
  // The retire log: a chain of reserved table pages (internal::LogPage layout) holding the roots
  // of the unhooked subtrees. Pages, not a vector, so that recording and Absorb never allocate.
  internal::Table* log_head_ = nullptr;
  internal::Table* log_tail_ = nullptr;
};

class TranslationCache;

namespace internal {
// The offset bits of `va` inside the page of the valid leaf entry `pte` (any page size): one
// load from a 32-byte table that stays in L1, indexed by the entry's PageSize bits.
inline constexpr uint64_t kLeafOffsetMask[4] = {(uint64_t{1} << 12) - 1, (uint64_t{1} << 16) - 1,
                                                (uint64_t{1} << 21) - 1, (uint64_t{1} << 30) - 1};
inline uint64_t LeafOffsetMask(uint64_t pte) {
  return kLeafOffsetMask[(pte & kSizeMask) >> kSizeShift];
}

// A TranslationCache's words that the table's writer reads and writes (registered with the
// table). `stale`: set by a removal that may touch what the cache holds. `footprint`: one bit per
// hashed 1 GiB region (RegionBit) that the cache has filled an entry in since its last drop; a
// removal sets `stale` only if its range's regions meet the footprint, so a writer of a disjoint
// region leaves the cache's lines alone. Protocol (a Dekker pair, each side a full barrier
// between its store and its load): the cache sets a region's bit, then FullBarrier(), then
// walks; the writer changes the entries, then FullBarrier(), then reads the footprint. Either the
// writer sees the bit (and sets `stale`), or the cache's walk sees the change. (FullBarrier:
// vm/rcu.h.)
struct CacheFlags {
  std::atomic<uint64_t> stale{0};
  std::atomic<uint64_t> footprint{0};
};
inline uint64_t RegionBit(uint64_t va) {
  const uint64_t r = va >> 30;
  return uint64_t{1} << ((r ^ (r >> 6) ^ (r >> 12) ^ (r >> 18)) & 63);
}
// The translation of `va` by the valid leaf entry `pte` (any page size).
inline Translation LeafTranslation(uint64_t pte, uint64_t va) {
  Translation out;
  out.valid = true;
  out.flags = static_cast<uint32_t>((pte & kFlagMask) >> 1);
  out.size = static_cast<PageSize>((pte & kSizeMask) >> kSizeShift);
  out.address = (pte & kSparse) ? 0 : (pte & kAddrMask) + (va & LeafOffsetMask(pte));
  return out;
}
}  // namespace internal

class PageTable {
 public:
  struct Stats {
    int64_t live_tables;      // linked into the tree (root included)
    int64_t reserved_tables;  // pre-allocated, not yet used or returned
    int64_t retired_tables;   // unhooked, waiting for Release()
  };

  // va_bits: 39, 48 or 57. InvalidArgument otherwise.
  static absl::StatusOr<std::unique_ptr<PageTable>> Create(int va_bits = 48);
  // Releases the deferred batch (FlushDeferred: a grace period if anything was deferred).
  // Contract: not inside an RcuReadSection (the grace period would wait for the caller), and no
  // other thread uses the table any more (no Release/ReleaseDeferred running).
  ~PageTable();
  PageTable(const PageTable&) = delete;
  PageTable& operator=(const PageTable&) = delete;

  int va_bits() const { return va_bits_; }
  uint64_t va_limit() const { return uint64_t{1} << va_bits_; }

  // Reader. Contract: inside an RcuReadSection on a registered thread. Inline: it is the hot path
  // of every emulated GPU access.
  Translation Translate(uint64_t va) const {
    const uint64_t pte = WalkToLeaf(va);
    if (!(pte & internal::kValid)) return Translation{};
    return internal::LeafTranslation(pte, va);
  }
  // The generation software TLBs compare against. Memory ordering: acquire.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  // Writer, step 1: validate and pre-allocate the worst case. InvalidArgument on bad input.
  absl::StatusOr<Prealloc> ReserveForMap(uint64_t va, uint64_t size, uint64_t target,
                                         uint32_t flags, PageSize page_size);
  absl::StatusOr<Prealloc> ReserveForUnmap(uint64_t va, uint64_t size);
  // Writer, step 1 for an op LIST (a VM_BIND job): adds one op's worst case to `list`, so that
  // one reservation covers every op of the list applied in order with the same Prealloc (maps,
  // unmaps, splits of earlier maps of the list), whatever the table holds when they run: each
  // op's bound holds in any state, and the pages are interchangeable. The ops' Invalidations
  // fold into one with Absorb (one Release, one grace period). InvalidArgument on bad input,
  // and then `list` is unchanged. May allocate; may run while another Prealloc is applied.
  absl::Status ReserveForMap(uint64_t va, uint64_t size, uint64_t target, uint32_t flags,
                             PageSize page_size, Prealloc& list);
  absl::Status ReserveForUnmap(uint64_t va, uint64_t size, Prealloc& list);
  // Writer, step 1 for an op list in ONE reservation (a bind job reserves once, not once per
  // call): add every Map/Unmap call of the list to a ListBound in the order they will run, then
  // Reserve(bound, list) once. Each Add* validates its call as ReserveForMap/ReserveForUnmap do
  // (InvalidArgument, and the bound is unchanged). The bound covers the calls applied in that
  // order with the same Prealloc, in any table state: the sum of the calls' own bounds (what the
  // per-call overloads above reserve) — except when every call is a map whose leaves are at the
  // last level (4 KiB / 64 KiB pages) and the calls come in ascending address order: such a
  // map never unhooks a table (it replaces leaves only, and splits a large page into a table
  // that stays), so each table position receives at most one new table while the list runs,
  // and the bound is the number of distinct table positions the calls touch (64 neighbouring
  // 16 KiB maps: 3 tables instead of 192). Plain data; no allocation.
  class ListBound {
   public:
    explicit ListBound(const PageTable& pt) : pt_(&pt) {}
    absl::Status AddMap(uint64_t va, uint64_t size, uint64_t target, uint32_t flags,
                        PageSize page_size);
    absl::Status AddUnmap(uint64_t va, uint64_t size);
    // The table pages Reserve(*this, list) reserves.
    int64_t pages() const;

   private:
    friend class PageTable;
    static constexpr int kMaxLevels = 5;
    const PageTable* pt_;
    int64_t sum_ = 0;             // the calls' own bounds, summed
    bool leaf_maps_only_ = true;  // every call so far: a map at the last level
    bool ascending_ = true;       // every call starts at or after the previous call's start
    uint64_t last_va_ = 0;
    int64_t distinct_ = 0;        // distinct table positions, while both flags hold
    // Per table level l >= 1: the highest index (va >> Shift(l - 1)) counted so far, plus one.
    uint64_t next_index_[kMaxLevels] = {};
  };
  // Adds `bound.pages()` pages to `list` in one step (the pool's lock taken once). Contract
  // (crash): `bound` was made for this page table.
  void Reserve(const ListBound& bound, Prealloc& list) ABSL_LOCKS_EXCLUDED(pool_mu_);
  // Writer, step 2: cannot fail, never allocates (new tables and the retire log come from
  // `pre`). Contract: the request is the one validated by the matching Reserve* (re-checked; a
  // mismatch crashes), with `pre` from it.
  Invalidation Map(uint64_t va, uint64_t size, uint64_t target, uint32_t flags,
                   PageSize page_size, Prealloc& pre);
  Invalidation Unmap(uint64_t va, uint64_t size, Prealloc& pre);
  // One Map call's arguments (MapAll).
  struct MapArgs {
    uint64_t va = 0;
    uint64_t size = 0;
    uint64_t target = 0;
    uint32_t flags = 0;
    PageSize page_size = PageSize::k4K;
  };
  // Writer, step 2 for a list of maps: Map of each of `maps` in order, in one writer section —
  // the same entries stored, in the same order, with the same release stores, as the Map calls
  // would; a map at the last level (4 KiB, 64 KiB pages) that stays inside the last-level table
  // the previous one wrote writes into that table without walking down from the root again
  // (a 4 KiB or 64 KiB map never unhooks a table; only a 2 MiB or 1 GiB map replaces one, and
  // that one walks from the root). The returned Invalidation is the Map calls'
  // absorbed into one, except that the generation is bumped, and the stale flags of the caches
  // whose footprint meets a replaced map's range are set, once, at the end (as one Map over a
  // range does), when any map replaced mappings. Contract as Map (each request re-checked,
  // before anything is written; a mismatch crashes). Never allocates.
  Invalidation MapAll(std::span<const MapArgs> maps, Prealloc& pre);
  // Writer, step 3: frees what was reserved and not used.
  void Unreserve(Prealloc pre);
  // Waits for a grace period, then frees the unhooked tables. After it returns, no reader holds
  // a translation from before the change. Contract: not inside an RcuReadSection.
  void Release(Invalidation inv);
  // Writer, step 3, deferred form: for a writer that does not need the old backing memory back
  // at once (a map/unmap storm). The change is already visible to readers as with Release (the
  // entries changed in Map/Unmap, the generation was bumped and the caches' stale flags set);
  // what is deferred is the grace period and the freeing of the unhooked tables. `inv` joins a
  // batch (Absorb: no allocation) that one grace period releases, in this call when the batch
  // holds kMaxDeferredTables unhooked tables or kMaxDeferredChanges invalidations or its first
  // one was deferred kMaxDeferral ago or more (and then this call waits, as Release does), else
  // in a later call, FlushDeferred() or the destructor. So a writer that defers every change
  // makes readers live through one grace period per kMaxDeferredChanges changes (sooner when the
  // batch holds kMaxDeferredTables tables or is a millisecond old: at least one of those per
  // grace period), where one Release per change is one grace period each — what
  // pagetable_bench's concurrent writer costs the readers (issue 13).
  // Memory bound: between calls at most kMaxDeferredTables - 1 unhooked tables and
  // kMaxDeferredChanges - 1 retire-log pages wait (under 1.3 MiB). The old backing memory of a
  // deferred change may be reused only after a FlushDeferred() that began after the call
  // returned. Any thread (the batch has its own lock, never taken by readers). Contract: not
  // inside an RcuReadSection.
  static constexpr int64_t kMaxDeferredTables = 256;
  static constexpr int64_t kMaxDeferredChanges = 64;
  static constexpr int64_t kMaxDeferralMicros = 1000;
  void ReleaseDeferred(Invalidation inv) ABSL_LOCKS_EXCLUDED(defer_mu_);
  // Releases the deferred batch: waits for a grace period (if anything was deferred) and frees
  // its tables; then waits until batches other threads' ReleaseDeferred took out earlier are
  // freed as well (it waits until no batch is in flight, so it may also wait for one taken
  // while it waits). After it returns, no reader holds a translation from before any change
  // deferred before the call began, and no table unhooked by such a change is left unfreed.
  // Contract: not inside an RcuReadSection.
  void FlushDeferred() ABSL_LOCKS_EXCLUDED(defer_mu_);

  Stats stats() const;

  // Test hook: every linked table's valid-entry count (kept by the writer in the spare bits of
  // its entries 0 and 1, vm/internal/pte.h, so that an unmap knows a table became empty without
  // scanning it) against a scan of its entries. InternalError naming the first mismatch.
  // Contract: no writer at the same time.
  absl::Status CheckValidCountsForTesting() const;

 private:
  friend class TranslationCache;  // registers its stale flag (below); walks with WalkToLeaf
  explicit PageTable(int va_bits);

  // Software TLBs (vm::TranslationCache) register their flags (internal::CacheFlags): a
  // Map/Unmap that removed mappings sets the stale flag of every cache whose footprint meets
  // the change's range, so that their hit path reads their own line instead of the generation.
  void RegisterCache(internal::CacheFlags* flags) const ABSL_LOCKS_EXCLUDED(caches_mu_);
  void UnregisterCache(internal::CacheFlags* flags) const ABSL_LOCKS_EXCLUDED(caches_mu_);

  // Reader (as Translate): the valid leaf entry that maps `va`, or 0 (a fault).
  uint64_t WalkToLeaf(uint64_t va) const {
    if (va >> va_bits_) return 0;
    const internal::Table* t = root_;
    for (int shift = top_shift_;; shift -= 9) {
      const uint64_t pte = t->e[(va >> shift) & 511].load(std::memory_order_acquire);
      if (!(pte & internal::kValid)) return 0;
      if (!(pte & internal::kTableBit)) return pte;
      t = reinterpret_cast<const internal::Table*>(pte & internal::kAddrMask);
    }
  }

  struct Leaf;
  int levels() const { return levels_; }
  int Shift(int level) const { return 12 + 9 * (levels_ - 1 - level); }
  int LeafLevel(PageSize s) const;
  absl::Status ValidateRange(uint64_t va, uint64_t size, uint64_t align) const;
  int64_t TablesForRange(uint64_t va, uint64_t size, int leaf_level) const;
  int64_t EntriesTouched(uint64_t va, uint64_t size, int level) const;
  int64_t UnmapRetireRoots(uint64_t va, uint64_t size) const;
  // Adds `pages` reserved pages to `pre` (the pool's most recently recycled first).
  void ReserveInto(int64_t pages, Prealloc& pre) ABSL_LOCKS_EXCLUDED(pool_mu_);
  int64_t MapBound(uint64_t va, uint64_t size, PageSize page_size) const;
  int64_t UnmapBound(uint64_t va, uint64_t size) const;
  absl::Status ValidateMap(uint64_t va, uint64_t size, uint64_t target, uint32_t flags,
                           PageSize page_size) const;
  // Zeroed table pages are kept for reuse (pool_), so map/unmap storms do not hit the
  // allocator. Recycles `n` zeroed pages, in order, under one acquisition of the pool's lock;
  // what does not fit is freed.
  void RecycleBatch(internal::Table* const* tables, size_t n) ABSL_LOCKS_EXCLUDED(pool_mu_);

  internal::Table* Take(Prealloc& pre);
  internal::Table* TakeRaw(Prealloc& pre);
  internal::Table* Split(uint64_t leaf_pte, int level, Prealloc& pre);
  // `empty`: the unhooked table has no valid entry (counted as one table, recycled unread).
  void Retire(uint64_t table_pte, int level, Prealloc& pre, Invalidation& inv, bool empty = false);
  void MapLevel(internal::Table* t, int level, uint64_t va, uint64_t end, const Leaf& leaf,
                Prealloc& pre, Invalidation& inv);
  void UnmapLevel(internal::Table* t, int level, uint64_t va, uint64_t end, Prealloc& pre,
                  Invalidation& inv);
  void FixPartialBlocks(internal::Table* t, uint64_t va, uint64_t end, uint64_t table_base);
  void BeginWrite();
  // `va`, `size`: the request's range (a removal sets the stale flags of the caches whose
  // footprint meets it).
  void EndWrite(Invalidation& inv, uint64_t va, uint64_t size);
  // EndWrite with the RegionBits of the ranges a removal may have touched.
  void EndWriteRegions(Invalidation& inv, uint64_t regions);
  // Writer-only: the last-level table holding `va`'s entry (the tables above it are linked).
  internal::Table* LastLevelTable(uint64_t va) const;

  // Cache-line layout (issue 13: with one writer, readers ran 1.45x slower because the fields
  // every Translate reads shared a line with the counters every Map/Unmap writes):
  //  - line 1, read by every Translate, never written after construction;
  //  - line 2, the generation: read by every TranslationCache lookup, written once per Map/Unmap
  //    that removed mappings (so a reader misses on it at most once per such change);
  //  - the rest, touched by writers and Reserve* only.
  alignas(64) const int va_bits_;
  const int levels_;
  const int top_shift_;  // Shift(0)
  internal::Table* const root_;
  alignas(64) std::atomic<uint64_t> generation_{1};
  alignas(64) std::atomic<bool> writer_active_{false};
  std::atomic<int64_t> live_tables_{1};
  std::atomic<int64_t> reserved_tables_{0};
  std::atomic<int64_t> retired_tables_{0};
  // Reserve* may run while a Map/Unmap is applied (a bind call reserving while an earlier bind
  // job runs), so the pool has its own lock. Never taken by readers.
  absl::Mutex pool_mu_;
  std::vector<internal::Table*> pool_ ABSL_GUARDED_BY(pool_mu_);
  // The registered caches' stale flags. Taken by the writer once per removal (never allocates:
  // only RegisterCache grows the vector) and by caches when they are built or destroyed.
  // Mutable: readers' caches register through a const PageTable*.
  mutable absl::Mutex caches_mu_;
  mutable std::vector<internal::CacheFlags*> caches_ ABSL_GUARDED_BY(caches_mu_);
  // ReleaseDeferred's batch: the deferred invalidations absorbed into one, how many, and when
  // the first one came (steady clock, microseconds). Writers only.
  absl::Mutex defer_mu_;
  Invalidation deferred_ ABSL_GUARDED_BY(defer_mu_);
  int64_t deferred_changes_ ABSL_GUARDED_BY(defer_mu_) = 0;
  int64_t deferred_since_us_ ABSL_GUARDED_BY(defer_mu_) = 0;
  int64_t deferred_in_flight_ ABSL_GUARDED_BY(defer_mu_) = 0;  // batches taken, not yet released
  // The batch, emptied (counted as in flight if it held anything), for ReleaseBatch.
  Invalidation TakeDeferred() ABSL_EXCLUSIVE_LOCKS_REQUIRED(defer_mu_);
  void ReleaseBatch(Invalidation batch) ABSL_LOCKS_EXCLUDED(defer_mu_);
};

}  // namespace vm

#endif  // UDRM_VM_PAGE_TABLE_H_
