// Internal: the page-table entry layout and the table page. Not a public API; in a header only so
// that PageTable::Translate can be inlined into readers' loops.
//
// An entry is ONE 64-bit word: bit 0 valid, bit 1 read, bit 2 write, bit 3 sparse, bit 4 "points
// to a table", bits 5-6 the leaf's PageSize, bits 12-63 the target (or table) address. Bits 7-11
// of a table's entries 0 and 1 hold the table's count of valid entries (kCountMask: the low five
// bits of the count in entry 0, the high five in entry 1, whatever those entries map): written and
// read by the table's writer only, so that an unmap knows that a table became empty without
// scanning its 512 entries. Readers never look at them (every reader masks an entry with
// kAddrMask, kFlagMask or kSizeMask, and tests kValid / kTableBit). An empty table is all zero.
#ifndef UDRM_VM_INTERNAL_PTE_H_
#define UDRM_VM_INTERNAL_PTE_H_

#include <atomic>
#include <cstdint>

namespace vm::internal {

inline constexpr uint64_t kValid = 1u << 0;
inline constexpr uint64_t kRead = 1u << 1;
inline constexpr uint64_t kWrite = 1u << 2;
inline constexpr uint64_t kSparse = 1u << 3;
inline constexpr uint64_t kTableBit = 1u << 4;
inline constexpr int kSizeShift = 5;  // 2 bits: PageSize of a leaf
inline constexpr uint64_t kSizeMask = uint64_t{3} << kSizeShift;
inline constexpr uint64_t kAddrMask = ~uint64_t{0xfff};
inline constexpr uint64_t kFlagMask = kRead | kWrite | kSparse;
inline constexpr int kCountShift = 7;  // the valid-entry count's field in entries 0 and 1
inline constexpr uint64_t kCountMask = uint64_t{0x1f} << kCountShift;

// One table page: 512 entries, 4 KiB, 4 KiB-aligned so that an entry can hold its address with
// the flag bits in the low 12 bits.
struct alignas(4096) Table {
  std::atomic<uint64_t> e[512] = {};
};
static_assert(sizeof(Table) == 4096);

// A reserved table page used as a page of an Invalidation's retire log (never seen by readers):
// e[0] the next log page, e[1] the number of roots recorded, e[2..] the roots of unhooked
// subtrees.
inline constexpr int kLogNext = 0;
inline constexpr int kLogCount = 1;
inline constexpr int kLogFirst = 2;
inline constexpr int64_t kLogCapacity = 512 - kLogFirst;

}  // namespace vm::internal

#endif  // UDRM_VM_INTERNAL_PTE_H_
