// vm::TranslationCache — a per-thread software TLB in front of vm::PageTable::Translate.
//
// What it is: a small direct-mapped cache of 4 KiB-page translations owned by one reader thread
// (a page of any size is cached per 4 KiB page that was looked up). The cache registers a flag
// with its PageTable, and a footprint: the hashed 1 GiB regions (64 bits) it has filled entries
// in since it last dropped them. A Map/Unmap that removed mappings (the same changes that bump
// the generation) sets, after it changed the entries, the flag of every registered cache whose
// footprint meets the change's range, and the next lookup of each such cache then misses, drops
// every entry and walks the table. So a hit reads only the cache's own lines (its entry and its
// flag: no shared line, which a writer would dirty on every change), all caches that may hold a
// changed translation are invalidated at once without the writer touching entries, and a writer
// that maps and unmaps in other regions (issue 13) does not make this cache drop its entries
// (unless the regions' hashes collide: then it drops them, which is always safe).
// Only valid translations are cached (a fault always walks the table), because a map into a
// hole does not set the flag: after a fault, a map of the address and a retry see the new
// mapping. The RCU grace period in PageTable::Release() (or, for a change released with
// ReleaseDeferred, the FlushDeferred() after it) then guarantees that no thread still uses a
// translation from before the change.
//
// What a caller observes: Translate(va) returns what PageTable::Translate(va) returned at some
// instant since the last removal the cache saw, and once the flag store of a removal is visible
// to the thread (at the latest in a read-side section that starts after the removal's Release(),
// or the FlushDeferred() after its ReleaseDeferred(), returned), nothing from before it. A hit
// costs two loads and compare-and-branches (the entry's tag with the page number, the flag with
// 0) and one add, and no table walk; a miss walks the table (out of line). A reader that
// translates in batches opens a Section per batch instead: the flag is then checked once, when
// the section starts, and a hit is one tag compare and one add (what it may observe is stated
// at Section). Against a flat 40-bit table (one load per translate): bench/pagetable_bench's
// RATIO lines translate_hot_4k_tlb(_section) vs flat_table.
//
// Memory: 256 entries of a 64-bit tag (the page number), a 64-bit delta (the target minus the
// VA) and a meta byte (the page's flags and size), in three arrays: 4.25 KiB per cache, plus 40
// bytes (4392 in all). A hit whose caller reads the Translation's flags or size also loads the
// meta byte (a third line; one that reads only the address does not).
//
// Cost to writers: a Map/Unmap that removed mappings takes the table's cache-registry mutex, a
// full barrier, reads one footprint per registered cache and stores the flag of those it meets
// (no allocation). Cost to the cache: a miss in a region not yet in the footprint adds the
// region and a full barrier before its walk. Constructing or destroying a cache takes
// the same mutex (construction may allocate).
//
// Thread-safety: one thread only (no sharing). Contract as for Translate(): used inside an
// RcuReadSection on a registered thread, and the translation it returns may be used only inside
// that section. The PageTable must outlive the cache. Not copyable or movable.
#ifndef UDRM_VM_TRANSLATION_CACHE_H_
#define UDRM_VM_TRANSLATION_CACHE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>

#include "vm/page_table.h"
#include "vm/rcu.h"

namespace vm {

class TranslationCache {
 public:
  // Registers with `table` (which must outlive the cache); unregisters on destruction.
  explicit TranslationCache(const PageTable* table) : table_(table) {
    tags_.fill(kEmpty);
    table_->RegisterCache(&flags_);
  }
  ~TranslationCache() { table_->UnregisterCache(&flags_); }
  TranslationCache(const TranslationCache&) = delete;
  TranslationCache& operator=(const TranslationCache&) = delete;

  // Table walks this cache has made (misses that walked), for tests and statistics.
  uint64_t misses() const { return misses_; }

  Translation Translate(uint64_t va) {
    const uint64_t page = va >> 12;
    const size_t i = Index(page);
    // Two compare-and-branches: the tag (its load folded into the compare), then no removal
    // since the entries were filled (two branches measured faster than one over an or).
    if (__builtin_expect(tags_[i] != page, 0) ||
        __builtin_expect(flags_.stale.load(std::memory_order_relaxed) != 0, 0)) {
      return Miss(va);
    }
    return Hit(i, va);
  }

  // A read-side section in which this cache is checked for removals once, when it starts, and
  // not again on each hit. Inside it, Translate(va) returns what PageTable::Translate(va)
  // returned at some instant since the last removal whose flag store was visible when the
  // section began (a miss still sees later removals and drops every entry). That is all a
  // reader can rely on anyway: a removal's Release() waits for this section to end, so a
  // section that starts after Release() returned sees nothing from before the removal, and no
  // page a translation points at is freed while the section lasts. A hit is then one tag
  // compare and one add — the cost of a flat table's load. For readers that translate in
  // batches (a workgroup, a warp); the section enters the RcuReadSection (do not nest another
  // one around the translations for the cache's sake). Sections of one cache may nest: the
  // outermost one holds the RcuReadSection (kept in the cache, so that a Section's address never
  // leaves the caller's frame and its cache stays in a register across misses), each one
  // revalidates when it starts. One thread; the cache must outlive it.
  class Section {
   public:
    explicit Section(TranslationCache& cache) : cache_(cache) {
      if (cache_.open_sections_++ == 0) cache_.section_rcu_.emplace();
      cache_.Revalidate();  // after the RcuReadSection is entered
    }
    ~Section() {
      if (--cache_.open_sections_ == 0) cache_.section_rcu_.reset();
    }
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

    Translation Translate(uint64_t va) {
      const uint64_t page = va >> 12;
      const size_t i = Index(page);
      if (__builtin_expect(cache_.tags_[i] != page, 0)) return cache_.Miss(va);
      return cache_.Hit(i, va);
    }

   private:
    TranslationCache& cache_;
  };

 private:
  static constexpr size_t kEntries = 256;
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // never matches: a page number is < 2^52
  // A sparse page's tag carries this bit, so that the hit path needs no sparse branch (its
  // address is 0, not va + delta); Miss serves it without a walk.
  static constexpr uint64_t kSparseTag = uint64_t{1} << 63;

  // The entry of a page number (va >> 12): its low 8 bits (one byte-extending move).
  static size_t Index(uint64_t page) { return static_cast<uint8_t>(page); }

  // A hit in entry i: the address is va + delta (no mask of the offset); the meta byte is read
  // only by callers that use the flags or the size.
  Translation Hit(size_t i, uint64_t va) const {
    Translation t;
    t.valid = true;
    t.address = va + deltas_[i];
    t.flags = metas_[i] & 7;
    t.size = static_cast<PageSize>((metas_[i] >> 3) & 3);
    return t;
  }

  // The miss returns its result in two registers and the Translation is built here: one
  // returned from an out-of-line call goes through memory, and the byte-wise stores and wide
  // reload of that copy stalled store forwarding on every miss (cold rows ran 1.3-1.6x slower
  // than an inline miss).
  Translation Miss(uint64_t va) {
    const Filled f = Fill(va);
    Translation t;
    t.valid = f.meta != 0;
    t.address = f.address;
    t.flags = static_cast<uint32_t>(f.meta) & 7;
    t.size = static_cast<PageSize>((f.meta >> 3) & 3);
    return t;
  }

  // A miss's result: the translated address (0 for a sparse page or a fault) and the entry's
  // meta | kMetaValid, or 0 for a fault.
  struct Filled {
    uint64_t address;
    uint64_t meta;
  };
  static constexpr uint64_t kMetaValid = uint64_t{1} << 5;

  // Drops every entry if a removal set the flag since the last drop (acquire: later walks see
  // the entries the removal wrote). A plain load first: no locked instruction when nothing
  // changed (the common case).
  bool Revalidate() {
    if (flags_.stale.load(std::memory_order_relaxed) != 0 &&
        flags_.stale.exchange(0, std::memory_order_acq_rel) != 0) {
      tags_.fill(kEmpty);
      // Nothing cached any more: no region to be told about (internal::CacheFlags).
      flags_.footprint.store(0, std::memory_order_relaxed);
      return true;
    }
    return false;
  }

  // The miss: walks the table and fills va's entry (faults are not cached). Out of line so that
  // the hit path stays a few instructions in the caller's loop.
  [[gnu::noinline]] Filled Fill(uint64_t va) {
    const uint64_t page = va >> 12;
    const size_t i = Index(page);
    // The flag is cleared before the walk; a removal during the walk sets it again and the next
    // checked lookup (or section) drops what this one fills.
    if (!Revalidate() && tags_[i] == (page | kSparseTag)) {
      return {0, metas_[i] | kMetaValid};  // a cached sparse page
    }
    // The region's bit before the walk (internal::CacheFlags): a removal in it that this walk
    // does not see sets the stale flag.
    const uint64_t region = internal::RegionBit(va);
    const uint64_t footprint = flags_.footprint.load(std::memory_order_relaxed);
    if ((footprint & region) == 0) {
      flags_.footprint.store(footprint | region, std::memory_order_relaxed);
      internal::FullBarrier();
    }
    ++misses_;
    const uint64_t pte = table_->WalkToLeaf(va);
    // Faults are not cached: a fresh map into a hole does not set the flag (that would drop
    // every thread's cache on every bind), so a cached fault would outlive the map that fixes
    // it and a fault -> bind -> retry loop would fault forever.
    if (pte == 0) return {0, 0};
    const bool sparse = (pte & internal::kSparse) != 0;
    const uint64_t address = (pte & internal::kAddrMask) + (va & internal::LeafOffsetMask(pte));
    const uint64_t meta = ((pte & internal::kFlagMask) >> 1) |
                          (((pte & internal::kSizeMask) >> internal::kSizeShift) << 3);
    tags_[i] = page | (sparse ? kSparseTag : 0);
    deltas_[i] = (address & ~uint64_t{0xfff}) - (page << 12);
    metas_[i] = static_cast<uint8_t>(meta);
    return {sparse ? 0 : address, meta | kMetaValid};
  }

  const PageTable* const table_;
  // stale: set by the table's writer when a Map/Unmap removed mappings in a region of the
  // footprint (with the generation bump); cleared by this thread's next miss, which drops every
  // entry and the footprint. Nonzero: all entries stale. footprint: the hashed 1 GiB regions
  // filled since the last drop (internal::CacheFlags).
  internal::CacheFlags flags_;
  uint64_t misses_ = 0;
  // The open Sections of this cache, and the RcuReadSection the outermost one entered.
  int open_sections_ = 0;
  std::optional<RcuReadSection> section_rcu_;
  // The entries, as three arrays indexed by Index(page): a hit compares the page number with
  // its tag in one instruction (load, compare and branch) and adds its delta in one more (both
  // indexed by the same register, scaled by 8), and reads the meta byte only if it is used.
  std::array<uint64_t, kEntries> tags_;    // page number (| kSparseTag), kEmpty if unused
  std::array<uint64_t, kEntries> deltas_{};// target of the page's first byte minus its VA
  std::array<uint8_t, kEntries> metas_{};  // kPte* flags (bits 0-2) | PageSize (bits 3-4)
};

}  // namespace vm

#endif  // UDRM_VM_TRANSLATION_CACHE_H_
