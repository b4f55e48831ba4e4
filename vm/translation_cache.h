// vm::TranslationCache — a per-thread software TLB in front of vm::PageTable::Translate.
//
// What it is: a small direct-mapped cache of 4 KiB-page translations owned by one reader thread
// (a page of any size is cached per 4 KiB page that was looked up). The cache remembers the page
// table's generation at which its entries were filled; a lookup compares the current generation
// (one acquire load of a line that only a removal writes) with it, and on a change drops every
// entry before it walks the table. So a Map/Unmap that removed mappings (which bumps the
// generation) invalidates all caches at once without touching them. Only valid translations are
// cached (a fault always walks the table), because a map into a hole does not move the
// generation: after a fault, a map of the address and a retry see the new mapping. The RCU grace
// period in PageTable::Release() then guarantees that no thread still uses a translation from
// before the change.
//
// What a caller observes: Translate(va) returns what PageTable::Translate(va) returned at some
// instant since the last generation change the cache saw, and after a removal's generation bump
// is visible to the thread, nothing from before it. A hit costs one compare of the entry's tag
// and the generation, and no table walk; a miss walks the table (out of line).
//
// Thread-safety: one thread only (no sharing). Contract as for Translate(): used inside an
// RcuReadSection on a registered thread, and the translation it returns may be used only inside
// that section. The PageTable must outlive the cache.
#ifndef UDRM_VM_TRANSLATION_CACHE_H_
#define UDRM_VM_TRANSLATION_CACHE_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "vm/page_table.h"

namespace vm {

class TranslationCache {
 public:
  explicit TranslationCache(const PageTable* table)
      : generation_(&table->generation_), table_(table) {
    for (Entry& e : entries_) e.vpn = kEmpty;
  }

  Translation Translate(uint64_t va) {
    const uint64_t vpn = va >> 12;
    const Entry& e = entries_[vpn & (kEntries - 1)];
    const uint64_t gen = generation_->load(std::memory_order_acquire);
    // One branch for both checks: the tag and the generation the entries were filled at.
    if (__builtin_expect(((e.vpn ^ vpn) | (gen ^ filled_generation_)) == 0, 1)) {
      Translation t;
      t.valid = true;
      // The offset mask is 0 for a sparse page (address 0); va has no bits at 57 and above.
      t.address = e.base + (va & e.meta);
      t.flags = static_cast<uint32_t>(e.meta >> kFlagsShift) & 7;
      t.size = static_cast<PageSize>(e.meta >> kSizeShift);
      return t;
    }
    return Miss(va, gen);
  }

 private:
  static constexpr size_t kEntries = 256;
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // never a vpn (va >> 12 < 2^52)
  static constexpr int kFlagsShift = 58;  // meta: kPte* flags (3 bits)
  static constexpr int kSizeShift = 61;   // meta: PageSize (2 bits)
  // 24 bytes: the index scales in the load's addressing mode, and a hit needs no decode branch.
  struct Entry {
    uint64_t vpn;   // tag: va >> 12, kEmpty if unused
    uint64_t base;  // address of the 4 KiB page's first byte (0 for a sparse page)
    uint64_t meta;  // offset mask (0xfff, or 0 for a sparse page) | flags | size
  };

  // Out of line so that the hit path stays a few instructions in the caller's loop.
  [[gnu::noinline]] Translation Miss(uint64_t va, uint64_t gen) {
    if (gen != filled_generation_) {  // something was removed: drop everything
      for (Entry& e : entries_) e.vpn = kEmpty;
      filled_generation_ = gen;
    }
    // `gen` was read before the walk, so a removal during the walk moves the generation past
    // filled_generation_ and the next lookup drops what this one fills.
    const Translation t = table_->Translate(va);
    // Faults are not cached: a fresh map into a hole does not move the generation (that would
    // drop every thread's cache on every bind), so a cached fault would outlive the map that
    // fixes it and a fault -> bind -> retry loop would fault forever.
    if (!t.valid) return t;
    Entry& e = entries_[(va >> 12) & (kEntries - 1)];
    const bool sparse = (t.flags & kPteSparse) != 0;
    e.vpn = va >> 12;
    e.base = sparse ? 0 : t.address & ~uint64_t{0xfff};
    e.meta = (sparse ? 0 : uint64_t{0xfff}) | (uint64_t{t.flags} << kFlagsShift) |
             (uint64_t{static_cast<uint8_t>(t.size)} << kSizeShift);
    return t;
  }

  const std::atomic<uint64_t>* const generation_;
  const PageTable* const table_;
  uint64_t filled_generation_ = 0;  // 0: nothing filled yet (generations start at 1)
  std::array<Entry, kEntries> entries_;
};

}  // namespace vm

#endif  // UDRM_VM_TRANSLATION_CACHE_H_
