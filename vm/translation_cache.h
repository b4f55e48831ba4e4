// vm::TranslationCache — a per-thread software TLB in front of vm::PageTable::Translate.
//
// What it is: a small direct-mapped cache of 4 KiB-page translations owned by one reader thread.
// Every entry is tagged with the page table's generation when it was filled; a lookup first reads
// the current generation (one acquire load) and treats every entry of an older generation as
// invalid, so a Map/Unmap that removed mappings (which bumps the generation) invalidates all
// caches at once without touching them. Only valid translations are cached (a fault always walks
// the table), because a map into a hole does not move the generation: after a fault, a map of the
// address and a retry see the new mapping. The RCU grace period in PageTable::Release() then
// guarantees that no thread still uses a translation from before the change.
//
// Thread-safety: one thread only (no sharing). Contract as for Translate(): used inside an
// RcuReadSection on a registered thread, and the translation it returns may be used only inside
// that section.
#ifndef UDRM_VM_TRANSLATION_CACHE_H_
#define UDRM_VM_TRANSLATION_CACHE_H_

#include <array>
#include <cstdint>

#include "vm/page_table.h"

namespace vm {

class TranslationCache {
 public:
  explicit TranslationCache(const PageTable* table) : table_(table) {}

  Translation Translate(uint64_t va) {
    const uint64_t gen = table_->generation();
    const uint64_t vpn = va >> 12;
    Entry& e = entries_[vpn & (kEntries - 1)];
    if (e.generation == gen && e.vpn == vpn) {
      Translation t = e.page;
      if (t.valid && !(t.flags & kPteSparse)) t.address += va & 0xfff;
      return t;
    }
    Translation t = table_->Translate(va);
    // Faults are not cached: a fresh map into a hole does not move the generation (that would
    // drop every thread's cache on every bind), so a cached fault would outlive the map that
    // fixes it and a fault -> bind -> retry loop would fault forever.
    if (!t.valid) return t;
    e.generation = gen;
    e.vpn = vpn;
    e.page = t;
    if (t.valid && !(t.flags & kPteSparse)) e.page.address -= va & 0xfff;
    return t;
  }

 private:
  static constexpr size_t kEntries = 256;
  struct Entry {
    uint64_t generation = 0;  // 0: never filled (generations start at 1)
    uint64_t vpn = 0;
    Translation page;  // translation of the page's first byte
  };
  const PageTable* const table_;
  std::array<Entry, kEntries> entries_{};
};

}  // namespace vm

#endif  // UDRM_VM_TRANSLATION_CACHE_H_
