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
// or the FlushDeferred() after its ReleaseDeferred(), returned), nothing from before it. A hit costs one compare of the entry's tag and the flag and
// no table walk; a miss walks the table (out of line). A reader that translates in batches opens
// a Section per batch instead: the flag is then checked once, when the section starts, and a
// hit is one tag compare and one add (what it may observe is stated at Section).
//
// Memory: 16-byte entries (the tag carries the page's flags and size in its low bits, the
// second word the target minus the VA), 256 of them: 4 KiB per cache, plus 32 bytes.
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

#include "vm/page_table.h"
#include "vm/rcu.h"

namespace vm {

class TranslationCache {
 public:
  // Registers with `table` (which must outlive the cache); unregisters on destruction.
  explicit TranslationCache(const PageTable* table) : table_(table) {
    for (Entry& e : entries_) e.tag = kEmpty;
    table_->RegisterCache(&flags_);
  }
  ~TranslationCache() { table_->UnregisterCache(&flags_); }
  TranslationCache(const TranslationCache&) = delete;
  TranslationCache& operator=(const TranslationCache&) = delete;

  // Table walks this cache has made (misses that walked), for tests and statistics.
  uint64_t misses() const { return misses_; }

  Translation Translate(uint64_t va) {
    const Entry& e = EntryFor(va);
    // One branch for both checks: the tag, and no removal since the entries were filled.
    if (__builtin_expect((((va ^ e.tag) >> 12) | flags_.stale.load(std::memory_order_relaxed)) != 0,
                         0)) {
      return Miss(va);
    }
    return FromEntry(e, va);
  }

  // A read-side section in which this cache is checked for removals once, when it starts, and
  // not again on each hit. Inside it, Translate(va) returns what PageTable::Translate(va)
  // returned at some instant since the last removal whose flag store was visible when the
  // section began (a miss still sees later removals and drops every entry). That is all a
  // reader can rely on anyway: a removal's Release() waits for this section to end, so a
  // section that starts after Release() returned sees nothing from before the removal, and no
  // page a translation points at is freed while the section lasts. A hit is then one tag
  // compare and one add — the cost of a flat table's load. For readers that translate in
  // batches (a workgroup, a warp); the section owns the RcuReadSection (do not nest another
  // one around the translations for the cache's sake). One thread; the cache must outlive it.
  class Section {
   public:
    explicit Section(TranslationCache& cache) : cache_(cache) { cache_.Revalidate(); }
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

    Translation Translate(uint64_t va) {
      const Entry& e = cache_.EntryFor(va);
      if (__builtin_expect(((va ^ e.tag) >> 12) != 0, 0)) return cache_.Miss(va);
      return FromEntry(e, va);
    }

   private:
    RcuReadSection rcu_;  // entered before the cache is revalidated
    TranslationCache& cache_;
  };

 private:
  static constexpr size_t kEntries = 256;
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // never matches: va < 2^52
  // A sparse page's tag carries this bit, so that the hit path needs no sparse branch (its
  // address is 0, not va + delta); Miss serves it without a walk.
  static constexpr uint64_t kSparseTag = uint64_t{1} << 63;
  // 16 bytes. The tag is the 4 KiB page's VA with the page's meta in the low 12 bits, which the
  // compare shifts out: kPte* flags (bits 0-2) | PageSize (bits 3-4). A hit needs no mask of
  // the offset: address = va + delta.
  struct Entry {
    uint64_t tag;    // va & ~0xfff | meta (| kSparseTag for a sparse page), kEmpty if unused
    uint64_t delta;  // target of the page's first byte minus its VA (mod 2^64)
  };

  const Entry& EntryFor(uint64_t va) const { return entries_[(va >> 12) & (kEntries - 1)]; }

  static Translation FromEntry(const Entry& e, uint64_t va) {
    Translation t;
    t.valid = true;
    t.address = va + e.delta;
    t.flags = static_cast<uint32_t>(e.tag) & 7;
    t.size = static_cast<PageSize>((e.tag >> 3) & 3);
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
  static constexpr uint64_t kMetaMask = 0x1f;

  // Drops every entry if a removal set the flag since the last drop (acquire: later walks see
  // the entries the removal wrote). A plain load first: no locked instruction when nothing
  // changed (the common case).
  bool Revalidate() {
    if (flags_.stale.load(std::memory_order_relaxed) != 0 &&
        flags_.stale.exchange(0, std::memory_order_acq_rel) != 0) {
      for (Entry& each : entries_) each.tag = kEmpty;
      // Nothing cached any more: no region to be told about (internal::CacheFlags).
      flags_.footprint.store(0, std::memory_order_relaxed);
      return true;
    }
    return false;
  }

  // The miss: walks the table and fills va's entry (faults are not cached). Out of line so that
  // the hit path stays a few instructions in the caller's loop.
  [[gnu::noinline]] Filled Fill(uint64_t va) {
    Entry& e = entries_[(va >> 12) & (kEntries - 1)];
    // The flag is cleared before the walk; a removal during the walk sets it again and the next
    // checked lookup (or section) drops what this one fills.
    if (!Revalidate() && (e.tag & kSparseTag) != 0 && ((va ^ e.tag) << 1 >> 13) == 0) {
      return {0, (e.tag & kMetaMask) | kMetaValid};  // a cached sparse page
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
    const uint64_t page = va & ~uint64_t{0xfff};
    e.tag = page | meta | (sparse ? kSparseTag : 0);
    e.delta = (address & ~uint64_t{0xfff}) - page;
    return {sparse ? 0 : address, meta | kMetaValid};
  }

  const PageTable* const table_;
  // stale: set by the table's writer when a Map/Unmap removed mappings in a region of the
  // footprint (with the generation bump); cleared by this thread's next miss, which drops every
  // entry and the footprint. Nonzero: all entries stale. footprint: the hashed 1 GiB regions
  // filled since the last drop (internal::CacheFlags).
  internal::CacheFlags flags_;
  uint64_t misses_ = 0;
  std::array<Entry, kEntries> entries_;
};

}  // namespace vm

#endif  // UDRM_VM_TRANSLATION_CACHE_H_
