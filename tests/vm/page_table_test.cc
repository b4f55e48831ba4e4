// vm::PageTable: every page size and boundary, map over map, holes, partial unmaps (splits),
// bad requests, accounting.
#include "vm/page_table.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "tests/vm/pt_test_util.h"
#include "vm/translation_cache.h"

namespace vm {
namespace {

using namespace vm::testing;  // NOLINT

constexpr uint32_t kRW = kPteRead | kPteWrite;

class PageTableTest : public ::testing::Test {
 protected:
  void SetUp() override { pt_ = *PageTable::Create(48); }
  void ExpectMapped(uint64_t va, uint64_t address, PageSize size, uint32_t flags = kRW) {
    Translation t = Lookup(*pt_, va);
    ASSERT_TRUE(t.valid) << std::hex << va;
    EXPECT_EQ(t.address, address) << std::hex << va;
    EXPECT_EQ(t.size, size) << std::hex << va;
    EXPECT_EQ(t.flags, flags) << std::hex << va;
  }
  void ExpectFault(uint64_t va) { EXPECT_FALSE(Lookup(*pt_, va).valid) << std::hex << va; }

  RcuReaderThread reader_;
  std::unique_ptr<PageTable> pt_;
};

// Every leaf size maps and translates with the offset inside the page.
TEST_F(PageTableTest, EveryPageSize) {
  struct Case {
    PageSize ps;
    uint64_t va, target;
  } cases[] = {{PageSize::k4K, 0x1000, 0x7000},
               {PageSize::k64K, 0x10000000, 0x20000000},
               {PageSize::k2M, 0x40000000, 0x80000000},
               {PageSize::k1G, 0x8000000000, 0x4000000000}};
  for (const Case& c : cases) {
    const uint64_t bytes = PageBytes(c.ps);
    ASSERT_TRUE(Map(*pt_, c.va, bytes, c.target, kRW, c.ps).ok());
    ExpectMapped(c.va, c.target, c.ps);
    ExpectMapped(c.va + bytes - 1, c.target + bytes - 1, c.ps);
    ExpectFault(c.va + bytes);
    if (c.va >= 0x1000) ExpectFault(c.va - 1);
  }
}

// Level boundaries: a 4 KiB range across a 2 MiB table boundary and a 1 GiB boundary, and a
// 2 MiB mapping straddling two level-2 tables (a 1 GiB boundary).
TEST_F(PageTableTest, LevelBoundaries) {
  ASSERT_TRUE(Map(*pt_, 2 * MiB - 8 * KiB, 16 * KiB, 0x100000, kRW, PageSize::k4K).ok());
  for (uint64_t off = 0; off < 16 * KiB; off += 4 * KiB) {
    ExpectMapped(2 * MiB - 8 * KiB + off, 0x100000 + off, PageSize::k4K);
  }
  ASSERT_TRUE(Map(*pt_, GiB - 2 * MiB, 4 * MiB, 0x200000000, kPteRead, PageSize::k2M).ok());
  ExpectMapped(GiB - 2 * MiB, 0x200000000, PageSize::k2M, kPteRead);
  ExpectMapped(GiB + 2 * MiB - 1, 0x200000000 + 4 * MiB - 1, PageSize::k2M, kPteRead);
  ASSERT_TRUE(Map(*pt_, 512 * GiB - 4 * KiB, 8 * KiB, 0x300000, kRW, PageSize::k4K).ok());
  ExpectMapped(512 * GiB - 4 * KiB, 0x300000, PageSize::k4K);
  ExpectMapped(512 * GiB, 0x301000, PageSize::k4K);  // next root entry
}

// Map over map replaces, reports removed mappings and bumps the generation; a 2 MiB map over a
// region of 4 KiB pages retires their table.
TEST_F(PageTableTest, MapOverMap) {
  ASSERT_TRUE(Map(*pt_, 0x200000, 8 * KiB, 0x1000000, kRW, PageSize::k4K).ok());
  const int64_t tables_before = pt_->stats().live_tables;
  const uint64_t gen = pt_->generation();
  auto pre = pt_->ReserveForMap(0x200000, 2 * MiB, 0x4000000, kPteRead, PageSize::k2M);
  ASSERT_TRUE(pre.ok());
  Invalidation inv = pt_->Map(0x200000, 2 * MiB, 0x4000000, kPteRead, PageSize::k2M, *pre);
  EXPECT_TRUE(inv.removed_mappings());
  EXPECT_EQ(inv.retired_tables(), 1u);
  EXPECT_GT(inv.generation(), gen);
  EXPECT_EQ(pt_->generation(), inv.generation());
  pt_->Unreserve(*std::move(pre));
  pt_->Release(std::move(inv));
  EXPECT_EQ(pt_->stats().live_tables, tables_before - 1);
  ExpectMapped(0x201000, 0x4001000, PageSize::k2M, kPteRead);
}

// A fresh map into empty space does not bump the generation (nothing to invalidate).
TEST_F(PageTableTest, FreshMapKeepsGeneration) {
  const uint64_t gen = pt_->generation();
  ASSERT_TRUE(Map(*pt_, 0x5000, 4 * KiB, 0x9000, kRW, PageSize::k4K).ok());
  EXPECT_EQ(pt_->generation(), gen);
}

// Unmap of holes (nothing mapped) is fine and changes nothing.
TEST_F(PageTableTest, UnmapHoles) {
  ASSERT_TRUE(Map(*pt_, 0x10000, 4 * KiB, 0x9000, kRW, PageSize::k4K).ok());
  ASSERT_TRUE(Unmap(*pt_, 0x20000, 64 * KiB).ok());
  ASSERT_TRUE(Unmap(*pt_, 100 * GiB, 4 * GiB).ok());
  ExpectMapped(0x10000, 0x9000, PageSize::k4K);
}

// Partial unmap of a 2 MiB page splits it: the rest stays mapped as 4 KiB pages.
TEST_F(PageTableTest, PartialUnmapSplits2M) {
  ASSERT_TRUE(Map(*pt_, 4 * MiB, 2 * MiB, 0x40000000, kRW, PageSize::k2M).ok());
  ASSERT_TRUE(Unmap(*pt_, 4 * MiB + 64 * KiB, 8 * KiB).ok());
  ExpectMapped(4 * MiB, 0x40000000, PageSize::k4K);
  ExpectFault(4 * MiB + 64 * KiB);
  ExpectFault(4 * MiB + 68 * KiB);
  ExpectMapped(4 * MiB + 72 * KiB, 0x40000000 + 72 * KiB, PageSize::k4K);
  ExpectMapped(6 * MiB - 1, 0x40000000 + 2 * MiB - 1, PageSize::k4K);
}

// Partial unmap of a 1 GiB page splits it into 2 MiB pages, and the touched one into 4 KiB.
TEST_F(PageTableTest, PartialUnmapSplits1G) {
  ASSERT_TRUE(Map(*pt_, 4 * GiB, GiB, 8 * GiB, kRW, PageSize::k1G).ok());
  ASSERT_TRUE(Unmap(*pt_, 4 * GiB + 6 * MiB, 4 * KiB).ok());
  ExpectMapped(4 * GiB, 8 * GiB, PageSize::k2M);
  ExpectMapped(4 * GiB + 6 * MiB + 4 * KiB, 8 * GiB + 6 * MiB + 4 * KiB, PageSize::k4K);
  ExpectFault(4 * GiB + 6 * MiB);
  ExpectMapped(5 * GiB - 1, 9 * GiB - 1, PageSize::k2M);
}

// Partial unmap of a 64 KiB block leaves the rest as 4 KiB pages (the block is no longer whole).
TEST_F(PageTableTest, PartialUnmap64K) {
  ASSERT_TRUE(Map(*pt_, 0x100000, 128 * KiB, 0x800000, kRW, PageSize::k64K).ok());
  ASSERT_TRUE(Unmap(*pt_, 0x100000 + 8 * KiB, 4 * KiB).ok());
  ExpectMapped(0x100000, 0x800000, PageSize::k4K);
  ExpectFault(0x100000 + 8 * KiB);
  ExpectMapped(0x100000 + 12 * KiB + 5, 0x800000 + 12 * KiB + 5, PageSize::k4K);
  ExpectMapped(0x110000, 0x810000, PageSize::k64K);  // the other block is whole
}

// Sparse mappings translate as valid, with no target.
TEST_F(PageTableTest, SparseMapping) {
  ASSERT_TRUE(Map(*pt_, 0x400000, 2 * MiB, 0, kPteSparse | kPteRead, PageSize::k2M).ok());
  Translation t = Lookup(*pt_, 0x400123);
  EXPECT_TRUE(t.valid);
  EXPECT_EQ(t.address, 0u);
  EXPECT_EQ(t.flags, kPteSparse | kPteRead);
  ASSERT_TRUE(Unmap(*pt_, 0x400000, 4 * KiB).ok());  // split keeps the rest sparse
  EXPECT_EQ(Lookup(*pt_, 0x401000).flags, kPteSparse | kPteRead);
}

// Bad requests are InvalidArgument and change nothing.
TEST_F(PageTableTest, BadRequests) {
  const auto stats = pt_->stats();
  const uint64_t gen = pt_->generation();
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, 0x1001, 4 * KiB, 0, kRW, PageSize::k4K)));
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, 0x1000, 0, 0, kRW, PageSize::k4K)));
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, 0x1000, 4 * KiB, 0x123, kRW, PageSize::k4K)));
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, 0x1000, 64 * KiB, 0, kRW, PageSize::k64K)));
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, 0x200000, MiB, 0, kRW, PageSize::k2M)));
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, pt_->va_limit(), 4 * KiB, 0, kRW, PageSize::k4K)));
  EXPECT_TRUE(absl::IsInvalidArgument(
      Map(*pt_, pt_->va_limit() - 4 * KiB, 8 * KiB, 0, kRW, PageSize::k4K)));
  EXPECT_TRUE(absl::IsInvalidArgument(
      Map(*pt_, ~uint64_t{0} & ~uint64_t{0xfff}, 8 * KiB, 0, kRW, PageSize::k4K)));
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, 0x1000, 4 * KiB, 0, 1u << 7, PageSize::k4K)));
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, 0x1000, 4 * KiB, 0x2000, kPteSparse, PageSize::k4K)));
  EXPECT_TRUE(absl::IsInvalidArgument(Unmap(*pt_, 0x1000, 0)));
  EXPECT_TRUE(absl::IsInvalidArgument(Unmap(*pt_, 0x1800, 4 * KiB)));
  // A page size outside the enum: an error, not a division by zero.
  EXPECT_TRUE(absl::IsInvalidArgument(Map(*pt_, 0x1000, 4 * KiB, 0, kRW, static_cast<PageSize>(7))));
  EXPECT_TRUE(absl::IsInvalidArgument(PageTable::Create(40).status()));
  EXPECT_EQ(pt_->stats().live_tables, stats.live_tables);
  EXPECT_EQ(pt_->stats().reserved_tables, 0);
  EXPECT_EQ(pt_->generation(), gen);
  ExpectFault(0x1000);
}

// Accounting: unmapping everything returns to just the root; nothing stays reserved or retired;
// a map/unmap storm keeps table memory bounded.
TEST_F(PageTableTest, AccountingAndBoundedMemory) {
  for (int round = 0; round < 200; ++round) {
    const uint64_t va = (round % 7) * GiB + (round % 13) * 2 * MiB + 4 * KiB * (round % 5);
    ASSERT_TRUE(Map(*pt_, va, 3 * MiB, 0x10000000, kRW, PageSize::k4K).ok());
    EXPECT_LE(pt_->stats().live_tables, 1 + 1 + 1 + 2);  // root, L1, L2, two L3
    ASSERT_TRUE(Unmap(*pt_, va, 3 * MiB).ok());
    EXPECT_EQ(pt_->stats().live_tables, 1);
  }
  auto s = pt_->stats();
  EXPECT_EQ(s.reserved_tables, 0);
  EXPECT_EQ(s.retired_tables, 0);
}

// Tables freed only at Release: until then they are counted as retired.
TEST_F(PageTableTest, RetiredUntilRelease) {
  ASSERT_TRUE(Map(*pt_, 0, 4 * KiB, 0x1000, kRW, PageSize::k4K).ok());
  auto pre = pt_->ReserveForUnmap(0, 4 * KiB);
  ASSERT_TRUE(pre.ok());
  Invalidation inv = pt_->Unmap(0, 4 * KiB, *pre);
  EXPECT_EQ(pt_->stats().retired_tables, 3);  // L3, L2, L1 became empty
  pt_->Unreserve(*std::move(pre));
  pt_->Release(std::move(inv));
  EXPECT_EQ(pt_->stats().retired_tables, 0);
  EXPECT_EQ(pt_->stats().live_tables, 1);
}

// The writer's valid-entry count (kept in bits 7-11 of a table's entries 0 and 1): translations
// through entries 0 and 1 never show it, a table is unhooked exactly when its last entry goes
// (not before, whichever entries remain), and the count matches a scan throughout. Counts that
// need both halves (33 entries: 1 in entry 0's field, 1 in entry 1's) and 512 (a split 2 MiB
// page: 0 and 16).
TEST_F(PageTableTest, ValidEntryCountUnhooksExactlyTheEmptyTables) {
  const uint64_t base = 3 * GiB;  // entry 0 of its last-level table
  for (int i = 0; i < 33; ++i) {
    ASSERT_TRUE(Map(*pt_, base + i * 4 * KiB, 4 * KiB, 0xabc000 + i * 0x10000, kRW,
                    PageSize::k4K).ok());
  }
  ASSERT_TRUE(pt_->CheckValidCountsForTesting().ok()) << pt_->CheckValidCountsForTesting();
  for (int i = 0; i < 33; ++i) ExpectMapped(base + i * 4 * KiB + 8, 0xabc008 + i * 0x10000,
                                            PageSize::k4K);
  EXPECT_EQ(pt_->stats().live_tables, 4);
  // Entries 2..32 go first, then 1, leaving entry 0: the table stays.
  ASSERT_TRUE(Unmap(*pt_, base + 8 * KiB, 31 * 4 * KiB).ok());
  ASSERT_TRUE(Unmap(*pt_, base + 4 * KiB, 4 * KiB).ok());
  ASSERT_TRUE(pt_->CheckValidCountsForTesting().ok()) << pt_->CheckValidCountsForTesting();
  EXPECT_EQ(pt_->stats().live_tables, 4);
  ExpectMapped(base + 8, 0xabc008, PageSize::k4K);
  ExpectFault(base + 4 * KiB);
  ASSERT_TRUE(Unmap(*pt_, base, 4 * KiB).ok());
  EXPECT_EQ(pt_->stats().live_tables, 1);
  // A 2 MiB page split by a partial unmap: 512 entries, then one less each unmap.
  ASSERT_TRUE(Map(*pt_, base, 2 * MiB, 0x40000000, kRW, PageSize::k2M).ok());
  ASSERT_TRUE(Unmap(*pt_, base + 4 * KiB, 4 * KiB).ok());
  ASSERT_TRUE(pt_->CheckValidCountsForTesting().ok()) << pt_->CheckValidCountsForTesting();
  ExpectMapped(base + 8, 0x40000008, PageSize::k4K);
  ExpectMapped(base + 8 * KiB + 8, 0x40002008, PageSize::k4K);
  EXPECT_EQ(pt_->stats().live_tables, 4);
  ASSERT_TRUE(Unmap(*pt_, base + 8 * KiB, 2 * MiB - 8 * KiB).ok());
  EXPECT_EQ(pt_->stats().live_tables, 4);  // entry 0 left
  ASSERT_TRUE(Unmap(*pt_, base, 4 * KiB).ok());
  EXPECT_EQ(pt_->stats().live_tables, 1);
  ASSERT_TRUE(pt_->CheckValidCountsForTesting().ok()) << pt_->CheckValidCountsForTesting();
}

// ReleaseDeferred keeps an unmap's tables until its batch is released: by FlushDeferred, or by
// the call that fills the batch (kMaxDeferredChanges changes; or kMaxDeferralMicros after the
// batch's first change, which a slow run may reach first) — never partly.
TEST_F(PageTableTest, ReleaseDeferredBatchesChanges) {
  const uint64_t generation = pt_->generation();
  int64_t pending = 0;
  for (int64_t i = 0; i < 3 * PageTable::kMaxDeferredChanges; ++i) {
    ASSERT_TRUE(Map(*pt_, 0, 4 * KiB, 0x1000, kRW, PageSize::k4K).ok());
    auto pre = pt_->ReserveForUnmap(0, 4 * KiB);
    ASSERT_TRUE(pre.ok());
    Invalidation inv = pt_->Unmap(0, 4 * KiB, *pre);
    pt_->Unreserve(*std::move(pre));
    EXPECT_EQ(pt_->stats().retired_tables, 3 * (pending + 1));  // L3, L2, L1 became empty
    pt_->ReleaseDeferred(std::move(inv));
    // The change itself is not deferred: gone for readers, generation bumped.
    ExpectFault(0);
    EXPECT_EQ(pt_->generation(), generation + static_cast<uint64_t>(i) + 1);
    const int64_t retired = pt_->stats().retired_tables;
    if (retired == 0) {
      pending = 0;  // the batch was released
    } else {
      ++pending;
      EXPECT_EQ(retired, 3 * pending);
      EXPECT_LT(pending, PageTable::kMaxDeferredChanges);  // a full batch is released at once
    }
  }
  EXPECT_EQ(pt_->stats().live_tables, 1);

  ASSERT_TRUE(Map(*pt_, 0, 4 * KiB, 0x1000, kRW, PageSize::k4K).ok());
  pt_->FlushDeferred();
  auto pre = pt_->ReserveForUnmap(0, 4 * KiB);
  ASSERT_TRUE(pre.ok());
  Invalidation inv = pt_->Unmap(0, 4 * KiB, *pre);
  pt_->Unreserve(*std::move(pre));
  pt_->ReleaseDeferred(std::move(inv));
  EXPECT_EQ(pt_->stats().retired_tables, 3);  // a batch's first change waits (below 1 ms)
  pt_->FlushDeferred();
  EXPECT_EQ(pt_->stats().retired_tables, 0);
  pt_->FlushDeferred();  // nothing deferred: returns at once
}

// A change that unhooks kMaxDeferredTables tables or more is released in its own call, and a
// change that removed nothing (a fresh map) has nothing to defer.
TEST_F(PageTableTest, ReleaseDeferredBoundsMemory) {
  const uint64_t size = static_cast<uint64_t>(PageTable::kMaxDeferredTables) * 2 * MiB;
  ASSERT_TRUE(Map(*pt_, 0, size, 0, kRW, PageSize::k4K).ok());
  auto pre = pt_->ReserveForUnmap(0, size);
  ASSERT_TRUE(pre.ok());
  Invalidation inv = pt_->Unmap(0, size, *pre);
  pt_->Unreserve(*std::move(pre));
  EXPECT_GE(pt_->stats().retired_tables, PageTable::kMaxDeferredTables);
  pt_->ReleaseDeferred(std::move(inv));
  EXPECT_EQ(pt_->stats().retired_tables, 0);

  auto map_pre = pt_->ReserveForMap(0, 4 * KiB, 0x1000, kRW, PageSize::k4K);
  ASSERT_TRUE(map_pre.ok());
  inv = pt_->Map(0, 4 * KiB, 0x1000, kRW, PageSize::k4K, *map_pre);
  pt_->Unreserve(*std::move(map_pre));
  EXPECT_FALSE(inv.removed_mappings());
  pt_->ReleaseDeferred(std::move(inv));
  ExpectMapped(0, 0x1000, PageSize::k4K);
}

// ReleaseDeferred does not wait for a reader inside its section (below the batch bounds);
// FlushDeferred does. The reader leaves its section only after the main thread has seen both.
TEST_F(PageTableTest, FlushDeferredWaitsForReaders) {
  ASSERT_TRUE(Map(*pt_, 0, 4 * KiB, 0x1000, kRW, PageSize::k4K).ok());
  std::atomic<int> phase{0};
  std::thread reader([&] {
    RcuReaderThread registered;
    RcuReadSection section;
    EXPECT_EQ(pt_->Translate(0x10).address, 0x1010u);
    phase.store(1, std::memory_order_release);
    while (phase.load(std::memory_order_acquire) != 2) std::this_thread::yield();
  });
  while (phase.load(std::memory_order_acquire) != 1) std::this_thread::yield();
  auto pre = pt_->ReserveForUnmap(0, 4 * KiB);
  ASSERT_TRUE(pre.ok());
  Invalidation inv = pt_->Unmap(0, 4 * KiB, *pre);
  pt_->Unreserve(*std::move(pre));
  pt_->ReleaseDeferred(std::move(inv));  // returns with the reader still inside its section
  std::atomic<bool> flushed{false};
  std::thread flusher([&] {
    pt_->FlushDeferred();
    flushed.store(true, std::memory_order_release);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(flushed.load(std::memory_order_acquire));  // the reader is still inside
  phase.store(2, std::memory_order_release);
  flusher.join();
  reader.join();
  EXPECT_TRUE(flushed.load());
  EXPECT_EQ(pt_->stats().retired_tables, 0);
}

// The destructor releases what is still deferred (ASan: no leak).
TEST(PageTableDeferred, DestructorReleasesTheBatch) {
  RcuReaderThread reader;
  auto pt = *PageTable::Create(48);
  ASSERT_TRUE(Map(*pt, 0, 4 * KiB, 0x1000, kRW, PageSize::k4K).ok());
  auto pre = pt->ReserveForUnmap(0, 4 * KiB);
  ASSERT_TRUE(pre.ok());
  Invalidation inv = pt->Unmap(0, 4 * KiB, *pre);
  pt->Unreserve(*std::move(pre));
  pt->ReleaseDeferred(std::move(inv));
  pt.reset();
}

// The software TLB serves repeated lookups and drops them when a change bumps the generation.
TEST_F(PageTableTest, TranslationCacheInvalidatedByGeneration) {
  ASSERT_TRUE(Map(*pt_, 0x7000, 4 * KiB, 0xa000, kRW, PageSize::k4K).ok());
  TranslationCache tlb(pt_.get());
  {
    RcuReadSection s;
    EXPECT_EQ(tlb.Translate(0x7004).address, 0xa004u);
    EXPECT_EQ(tlb.Translate(0x7008).address, 0xa008u);
  }
  ASSERT_TRUE(Map(*pt_, 0x7000, 4 * KiB, 0xb000, kRW, PageSize::k4K).ok());
  {
    RcuReadSection s;
    EXPECT_EQ(tlb.Translate(0x7004).address, 0xb004u);
  }
  ASSERT_TRUE(Unmap(*pt_, 0x7000, 4 * KiB).ok());
  {
    RcuReadSection s;
    EXPECT_FALSE(tlb.Translate(0x7004).valid);
  }
}

// Issue 10 defect 5: a fault is not remembered. An emulated GPU that faults, has the page bound
// (a fresh map: the generation does not move) and retries must see the new mapping — with the
// fault cached it faulted forever (a livelock of fault -> bind -> retry).
TEST_F(PageTableTest, TranslationCacheFaultThenMapThenRetry) {
  TranslationCache tlb(pt_.get());
  {
    RcuReadSection s;
    EXPECT_FALSE(tlb.Translate(0x9004).valid);
    EXPECT_FALSE(tlb.Translate(0x9008).valid);  // a second miss on the same page
  }
  ASSERT_TRUE(Map(*pt_, 0x9000, 4 * KiB, 0xc000, kRW, PageSize::k4K).ok());
  {
    RcuReadSection s;
    const Translation t = tlb.Translate(0x9004);
    ASSERT_TRUE(t.valid) << "the cached fault survived the map";
    EXPECT_EQ(t.address, 0xc004u);
  }
  // The same through a large page whose first access faulted, from a different page of it.
  {
    RcuReadSection s;
    EXPECT_FALSE(tlb.Translate(0x40001000).valid);
  }
  ASSERT_TRUE(Map(*pt_, 0x40000000, 2 * MiB, 0x80000000, kRW, PageSize::k2M).ok());
  {
    RcuReadSection s;
    EXPECT_EQ(tlb.Translate(0x40001010).address, 0x80001010u);
  }
}

// Every cache built on the table is invalidated by a removal (each registered its own flag), a
// destroyed cache is forgotten by the table, and a hit returns exactly what the walk returned:
// offset, flags and size for every page size, and address 0 for a sparse page, also on repeats.
TEST_F(PageTableTest, TranslationCacheHitsMatchTheWalk) {
  ASSERT_TRUE(Map(*pt_, 0x7000, 4 * KiB, 0xa000, kPteRead, PageSize::k4K).ok());
  ASSERT_TRUE(Map(*pt_, 0x10000000, 64 * KiB, 0x20000000, kRW, PageSize::k64K).ok());
  ASSERT_TRUE(Map(*pt_, 0x40000000, 2 * MiB, 0x80000000, kRW, PageSize::k2M).ok());
  ASSERT_TRUE(Map(*pt_, 0x8000000000, GiB, 0x4000000000, kPteWrite, PageSize::k1G).ok());
  ASSERT_TRUE(Map(*pt_, 0x9000, 4 * KiB, 0, kPteRead | kPteSparse, PageSize::k4K).ok());
  const uint64_t vas[] = {0x7abc, 0x1000f123, 0x401ff008, 0x8012345678, 0x9010, 0x9ff8};
  auto a = std::make_unique<TranslationCache>(pt_.get());
  TranslationCache b(pt_.get());
  {
    auto doomed = std::make_unique<TranslationCache>(pt_.get());  // registered, then destroyed
    RcuReadSection s;
    EXPECT_EQ(doomed->Translate(0x7000).address, 0xa000u);
  }
  for (int round = 0; round < 3; ++round) {  // round 0 fills, later rounds hit
    RcuReadSection s;
    for (uint64_t va : vas) {
      const Translation walk = pt_->Translate(va);
      for (TranslationCache* tlb : {a.get(), &b}) {
        const Translation t = tlb->Translate(va);
        EXPECT_EQ(t.valid, walk.valid) << std::hex << va;
        EXPECT_EQ(t.address, walk.address) << std::hex << va;
        EXPECT_EQ(t.flags, walk.flags) << std::hex << va;
        EXPECT_EQ(t.size, walk.size) << std::hex << va;
      }
    }
  }
  {
    RcuReadSection s;
    EXPECT_EQ(b.Translate(0x9010).address, 0u);
    EXPECT_EQ(b.Translate(0x9010).flags, kPteRead | kPteSparse);
  }
  ASSERT_TRUE(Unmap(*pt_, 0x9000, 4 * KiB).ok());  // sparse page removed
  ASSERT_TRUE(Unmap(*pt_, 0x40000000, 2 * MiB).ok());
  {
    RcuReadSection s;
    for (TranslationCache* tlb : {a.get(), &b}) {
      EXPECT_FALSE(tlb->Translate(0x9010).valid);
      EXPECT_FALSE(tlb->Translate(0x401ff008).valid);
      EXPECT_EQ(tlb->Translate(0x7abc).address, 0xaabcu);  // refilled after the drop
    }
  }
  a.reset();  // unregistered: the next removal must not touch it
  ASSERT_TRUE(Unmap(*pt_, 0x7000, 4 * KiB).ok());
  {
    RcuReadSection s;
    EXPECT_FALSE(b.Translate(0x7abc).valid);
  }
}

// Other VA sizes: 39 bits (3 levels) and 57 bits (5 levels).
TEST(PageTableShapes, ThreeAndFiveLevels) {
  RcuReaderThread reader;
  for (int bits : {39, 57}) {
    auto pt = *PageTable::Create(bits);
    const uint64_t top = pt->va_limit() - GiB;
    ASSERT_TRUE(Map(*pt, top, GiB, 2 * GiB, kRW, PageSize::k1G).ok());
    ASSERT_TRUE(Map(*pt, 0x3000, 4 * KiB, 0x5000, kRW, PageSize::k4K).ok());
    EXPECT_EQ(Lookup(*pt, top + 5).address, 2 * GiB + 5);
    EXPECT_EQ(Lookup(*pt, 0x3007).address, 0x5007u);
    EXPECT_FALSE(Lookup(*pt, pt->va_limit()).valid);
    ASSERT_TRUE(Unmap(*pt, top + 2 * MiB, 2 * MiB).ok());
    EXPECT_FALSE(Lookup(*pt, top + 3 * MiB).valid);
    EXPECT_EQ(Lookup(*pt, top).size, PageSize::k2M);
  }
}

}  // namespace
}  // namespace vm
