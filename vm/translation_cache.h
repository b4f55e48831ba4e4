// vm::TranslationCache — a per-thread software TLB in front of vm::PageTable::Translate.
//
// What it is: a small direct-mapped cache of 4 KiB-page translations owned by one reader thread
// (a page of any size is cached per 4 KiB page that was looked up). The cache registers a flag
// with its PageTable; a Map/Unmap that removed mappings (the same changes that bump the
// generation) sets every registered cache's flag after it changed the entries, and the next
// lookup of each cache then misses, drops every entry and walks the table. So a hit reads only
// the cache's own lines (its entry and its flag: no shared line, which a writer would dirty on
// every change), and all caches are invalidated at once without the writer touching entries.
// Only valid translations are cached (a fault always walks the table), because a map into a
// hole does not set the flag: after a fault, a map of the address and a retry see the new
// mapping. The RCU grace period in PageTable::Release() then guarantees that no thread still
// uses a translation from before the change.
//
// What a caller observes: Translate(va) returns what PageTable::Translate(va) returned at some
// instant since the last removal the cache saw, and once the flag store of a removal is visible
// to the thread (at the latest in a read-side section that starts after the removal's Release()
// returned), nothing from before it. A hit costs one compare of the entry's tag and the flag and
// no table walk; a miss walks the table (out of line).
//
// Cost to writers: a Map/Unmap that removed mappings takes the table's cache-registry mutex and
// stores one flag per registered cache (no allocation). Constructing or destroying a cache takes
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

namespace vm {

class TranslationCache {
 public:
  // Registers with `table` (which must outlive the cache); unregisters on destruction.
  explicit TranslationCache(const PageTable* table) : table_(table) {
    for (Entry& e : entries_) e.vpn = kEmpty;
    table_->RegisterCache(&stale_);
  }
  ~TranslationCache() { table_->UnregisterCache(&stale_); }
  TranslationCache(const TranslationCache&) = delete;
  TranslationCache& operator=(const TranslationCache&) = delete;

  Translation Translate(uint64_t va) {
    const uint64_t vpn = va >> 12;
    const Entry* e = &entries_[vpn & (kEntries - 1)];
    // One branch for both checks: the tag, and no removal since the entries were filled.
    if (__builtin_expect(((e->vpn ^ vpn) | stale_.load(std::memory_order_relaxed)) != 0, 0)) {
      // The miss returns its result in two registers and the Translation is built here: one
      // returned from an out-of-line call goes through memory, and the byte-wise stores and
      // wide reload of that copy stalled store forwarding on every miss (cold rows ran 1.3-1.6x
      // slower than the old inline miss).
      const Filled f = Fill(va);
      Translation t;
      t.valid = f.meta != 0;
      t.address = f.address;
      t.flags = static_cast<uint32_t>(f.meta) & 7;
      t.size = static_cast<PageSize>((f.meta >> 3) & 3);
      return t;
    }
    return FromEntry(*e, va);
  }

 private:
  static constexpr size_t kEntries = 256;
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // never a vpn (va >> 12 < 2^52)
  // A sparse page's tag carries this bit, so that the hit path needs no sparse branch (its
  // address is 0, not base + offset); Fill serves it without a walk.
  static constexpr uint64_t kSparseTag = uint64_t{1} << 63;
  // 24 bytes: the index scales in the load's addressing mode.
  struct Entry {
    uint64_t vpn;   // tag: va >> 12 (| kSparseTag for a sparse page), kEmpty if unused
    uint64_t base;  // address of the 4 KiB page's first byte
    uint64_t meta;  // kPte* flags (bits 0-2) | PageSize (bits 3-4)
  };

  static Translation FromEntry(const Entry& e, uint64_t va) {
    Translation t;
    t.valid = true;
    t.address = e.base + (va & 0xfff);
    t.flags = static_cast<uint32_t>(e.meta) & 7;
    t.size = static_cast<PageSize>(e.meta >> 3);
    return t;
  }

  // A miss's result: the translated address (0 for a sparse page or a fault) and the entry's
  // meta | kMetaValid, or 0 for a fault.
  struct Filled {
    uint64_t address;
    uint64_t meta;
  };
  static constexpr uint64_t kMetaValid = uint64_t{1} << 5;

  // The miss: walks the table and fills va's entry (faults are not cached). Out of line so that
  // the hit path stays a few instructions in the caller's loop.
  [[gnu::noinline]] Filled Fill(uint64_t va) {
    const uint64_t vpn = va >> 12;
    Entry& e = entries_[vpn & (kEntries - 1)];
    // Cleared before the walk (acquire: the walk sees the entries the removal wrote); a removal
    // during the walk sets the flag again and the next lookup drops what this one fills. A plain
    // load first: a miss without a removal (the common case) pays no locked instruction.
    if (stale_.load(std::memory_order_relaxed) != 0 &&
        stale_.exchange(0, std::memory_order_acq_rel) != 0) {
      for (Entry& each : entries_) each.vpn = kEmpty;
    } else if (e.vpn == (vpn | kSparseTag)) {
      return {0, e.meta | kMetaValid};  // a cached sparse page
    }
    const uint64_t pte = table_->WalkToLeaf(va);
    // Faults are not cached: a fresh map into a hole does not set the flag (that would drop
    // every thread's cache on every bind), so a cached fault would outlive the map that fixes
    // it and a fault -> bind -> retry loop would fault forever.
    if (pte == 0) return {0, 0};
    const bool sparse = (pte & internal::kSparse) != 0;
    const uint64_t address = (pte & internal::kAddrMask) + (va & internal::LeafOffsetMask(pte));
    const uint64_t meta = ((pte & internal::kFlagMask) >> 1) |
                          (((pte & internal::kSizeMask) >> internal::kSizeShift) << 3);
    e.vpn = vpn | (sparse ? kSparseTag : 0);
    e.base = address & ~uint64_t{0xfff};
    e.meta = meta;
    return {sparse ? 0 : address, meta | kMetaValid};
  }

  const PageTable* const table_;
  // Set by the table's writer when a Map/Unmap removed mappings (with the generation bump);
  // cleared by this thread's next miss, which drops every entry. Nonzero: all entries stale.
  std::atomic<uint64_t> stale_{0};
  std::array<Entry, kEntries> entries_;
};

}  // namespace vm

#endif  // UDRM_VM_TRANSLATION_CACHE_H_
