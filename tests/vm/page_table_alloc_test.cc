// vm::PageTable's no-allocation contract: after Reserve*, Map / Unmap and Invalidation::Absorb
// allocate nothing (VM_BIND applies its op list in run_job, the fence-signalling critical
// section, where allocating may deadlock against reclaim). A dedicated binary, because it
// replaces the global operator new / delete with versions that count the calls made by a thread
// while it is inside a CountAllocations scope. Also VM_BIND's op-list reservation (one Prealloc
// for a whole list of ops).
#include <cstdio>
#include <random>
#include <vector>

#include "tests/vm/alloc_count.h"
#include "tests/vm/pt_test_util.h"

namespace vm {
namespace {

using namespace vm::testing;  // NOLINT

constexpr uint32_t kRW = kPteRead | kPteWrite;

class PageTableAllocTest : public ::testing::Test {
 protected:
  void SetUp() override { pt_ = *PageTable::Create(48); }
  RcuReaderThread reader_;
  std::unique_ptr<PageTable> pt_;
};

// The counter sees allocations (so the zero counts below mean something).
TEST_F(PageTableAllocTest, CounterWorks) {
  CountAllocations c;
  auto v = std::make_unique<std::vector<int>>(100);
  EXPECT_EQ(c.count(), 2);
}

// An unmap that empties and unhooks tables records them without allocating.
TEST_F(PageTableAllocTest, UnmapRetiringTables) {
  ASSERT_TRUE(Map(*pt_, 0x200000, 64 * KiB, 0x1000000, kRW, PageSize::k4K).ok());
  auto pre = pt_->ReserveForUnmap(0x200000, 64 * KiB);
  ASSERT_TRUE(pre.ok());
  long n;
  Invalidation inv;
  {
    CountAllocations c;
    inv = pt_->Unmap(0x200000, 64 * KiB, *pre);
    n = c.count();
  }
  EXPECT_EQ(n, 0);
  EXPECT_EQ(inv.retired_tables(), 3u);
  pt_->Unreserve(*std::move(pre));
  pt_->Release(std::move(inv));
  EXPECT_EQ(pt_->stats().live_tables, 1);
}

// A 2 MiB map over a range of 4 KiB pages retires their table without allocating; so does a
// partial unmap that splits the 2 MiB page and an unmap of the rest.
TEST_F(PageTableAllocTest, MapOverTablesAndSplit) {
  ASSERT_TRUE(Map(*pt_, 0x200000, 8 * KiB, 0x1000000, kRW, PageSize::k4K).ok());
  auto pre = pt_->ReserveForMap(0x200000, 2 * MiB, 0x4000000, kRW, PageSize::k2M);
  ASSERT_TRUE(pre.ok());
  long n;
  Invalidation inv;
  {
    CountAllocations c;
    inv = pt_->Map(0x200000, 2 * MiB, 0x4000000, kRW, PageSize::k2M, *pre);
    n = c.count();
  }
  EXPECT_EQ(n, 0);
  EXPECT_EQ(inv.retired_tables(), 1u);
  pt_->Unreserve(*std::move(pre));
  pt_->Release(std::move(inv));

  auto split = pt_->ReserveForUnmap(0x210000, 64 * KiB);
  auto rest = pt_->ReserveForUnmap(0x200000, 2 * MiB);
  ASSERT_TRUE(split.ok() && rest.ok());
  {
    CountAllocations c;
    inv = pt_->Unmap(0x210000, 64 * KiB, *split);
    inv.Absorb(pt_->Unmap(0x200000, 2 * MiB, *rest));
    n = c.count();
  }
  EXPECT_EQ(n, 0);
  EXPECT_EQ(inv.retired_tables(), 3u);  // the split's table, then the emptied L2 and L1
  pt_->Unreserve(*std::move(split));
  pt_->Unreserve(*std::move(rest));
  pt_->Release(std::move(inv));
  EXPECT_EQ(pt_->stats().live_tables, 1);
}

// Random requests, each reserved before, applied and absorbed into one pending invalidation
// with zero allocations; the grace period comes at the end, for all of them.
TEST_F(PageTableAllocTest, RandomRequestsAbsorbed) {
  std::mt19937_64 rng(7);
  const PageSize sizes[] = {PageSize::k4K, PageSize::k64K, PageSize::k2M};
  const uint64_t base = 0x40000000 - 8 * MiB;  // 16 MiB window across a 1 GiB boundary
  Invalidation pending;
  long total = 0;
  for (int i = 0; i < 2000; ++i) {
    const PageSize ps = sizes[rng() % 3];
    const uint64_t unit = PageBytes(ps);
    const uint64_t pages = (16 * MiB) / unit;
    const uint64_t first = rng() % pages;
    const uint64_t count = 1 + rng() % std::min<uint64_t>(pages - first, 64);
    const uint64_t va = base + first * unit, size = count * unit;
    const bool map = rng() % 2;
    auto pre = map ? pt_->ReserveForMap(va, size, 0x100000000 + va, kRW, ps)
                   : pt_->ReserveForUnmap(va, size);
    ASSERT_TRUE(pre.ok());
    {
      CountAllocations c;
      pending.Absorb(map ? pt_->Map(va, size, 0x100000000 + va, kRW, ps, *pre)
                         : pt_->Unmap(va, size, *pre));
      total += c.count();
    }
    pt_->Unreserve(*std::move(pre));
  }
  EXPECT_EQ(total, 0);
  pt_->Release(std::move(pending));
}

// One op of a bind job's list.
struct Op {
  bool map;
  uint64_t va, size, target;
  PageSize ps;
};

// A random op of a list: half of them cut into an earlier map of the same list (a split, or a
// smaller re-map); the rest anywhere in a 16 MiB window across a 1 GiB boundary, or in a 1 GiB
// region that 1 GiB pages map.
Op RandomOp(std::mt19937_64& rng, const std::vector<Op>& earlier) {
  const PageSize sizes[] = {PageSize::k4K, PageSize::k64K, PageSize::k2M};
  uint64_t lo = GiB - 8 * MiB, hi = GiB + 8 * MiB;
  if (!earlier.empty() && rng() % 2) {
    const Op& e = earlier[rng() % earlier.size()];
    lo = e.va;
    hi = e.va + e.size;
  } else if (rng() % 4 == 0) {
    lo = 4 * GiB;
    hi = 5 * GiB;
    if (rng() % 3 == 0) return Op{true, lo, GiB, 64 * GiB, PageSize::k1G};
  }
  const bool map = rng() % 2;
  const PageSize ps = map ? sizes[rng() % 3] : PageSize::k4K;
  const uint64_t unit = PageBytes(ps);
  lo = (lo + unit - 1) / unit * unit;
  hi = hi / unit * unit;
  if (hi <= lo) return Op{false, lo & ~uint64_t{0xfff}, 4 * KiB, 0, PageSize::k4K};
  const uint64_t units = (hi - lo) / unit;
  const uint64_t first = rng() % units;
  const uint64_t count = 1 + rng() % std::min<uint64_t>(units - first, 48);
  const uint64_t va = lo + first * unit;
  return Op{map, va, count * unit, map ? 32 * GiB + (va & (GiB - 1)) : 0, ps};
}

// VM_BIND's step 3: random op lists, reserved once op by op into one Prealloc, then applied in
// order with their Invalidations absorbed into one: zero allocations, no reservation shortfall
// (it would crash), and the same table as applying each op with its own reservation.
TEST_F(PageTableAllocTest, OpListReservedOnce) {
  std::mt19937_64 rng(11);
  auto twin = *PageTable::Create(48);
  int64_t used = 0, reserved = 0;
  for (int list = 0; list < 300; ++list) {
    std::vector<Op> ops;
    const int n = 1 + rng() % 16;
    for (int i = 0; i < n; ++i) ops.push_back(RandomOp(rng, ops));
    Prealloc pre;
    for (const Op& op : ops) {
      ASSERT_TRUE((op.map ? pt_->ReserveForMap(op.va, op.size, op.target, kRW, op.ps, pre)
                          : pt_->ReserveForUnmap(op.va, op.size, pre))
                      .ok());
    }
    const size_t before = pre.size();
    Invalidation job;
    long allocs;
    {
      CountAllocations c;
      for (const Op& op : ops) {
        job.Absorb(op.map ? pt_->Map(op.va, op.size, op.target, kRW, op.ps, pre)
                          : pt_->Unmap(op.va, op.size, pre));
      }
      allocs = c.count();
    }
    ASSERT_EQ(allocs, 0) << "list " << list;
    used += static_cast<int64_t>(before - pre.size());
    reserved += static_cast<int64_t>(before);
    pt_->Unreserve(std::move(pre));
    pt_->Release(std::move(job));

    Invalidation pending;
    for (const Op& op : ops) {
      ASSERT_TRUE((op.map ? MapDeferred(*twin, op.va, op.size, op.target, kRW, op.ps, pending)
                          : UnmapDeferred(*twin, op.va, op.size, pending))
                      .ok());
    }
    twin->Release(std::move(pending));
    RcuReadSection s;
    for (uint64_t va = GiB - 8 * MiB; va < GiB + 8 * MiB; va += 4 * KiB) {
      const Translation a = pt_->Translate(va), b = twin->Translate(va);
      ASSERT_TRUE(a.valid == b.valid && a.address == b.address && a.size == b.size)
          << std::hex << va << " list " << std::dec << list;
    }
    for (uint64_t va = 4 * GiB; va < 5 * GiB; va += 4 * KiB + 4 * KiB * (rng() % 64)) {
      const Translation a = pt_->Translate(va), b = twin->Translate(va);
      ASSERT_TRUE(a.valid == b.valid && a.address == b.address && a.size == b.size)
          << std::hex << va << " list " << std::dec << list;
    }
  }
  EXPECT_EQ(pt_->stats().reserved_tables, 0);
  EXPECT_EQ(pt_->stats().retired_tables, 0);
  std::printf("op lists: %lld of %lld reserved pages used\n", static_cast<long long>(used),
              static_cast<long long>(reserved));
}

// A bad op of a list returns InvalidArgument and leaves the list's reservation as it was.
TEST_F(PageTableAllocTest, OpListBadOpChangesNothing) {
  Prealloc pre;
  ASSERT_TRUE(pt_->ReserveForMap(0x200000, 2 * MiB, 0x400000, kRW, PageSize::k2M, pre).ok());
  const size_t size = pre.size();
  const int64_t reserved = pt_->stats().reserved_tables;
  EXPECT_EQ(pt_->ReserveForMap(0x201000, 2 * MiB, 0x400000, kRW, PageSize::k2M, pre).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pt_->ReserveForUnmap(0x200000, 0, pre).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pre.size(), size);
  EXPECT_EQ(pt_->stats().reserved_tables, reserved);
  pt_->Unreserve(std::move(pre));
  EXPECT_EQ(pt_->stats().reserved_tables, 0);
}

// Reserves `ops` through one PageTable::ListBound, applies them in order (a shortfall crashes),
// checks zero allocations and the same table as applying each op with its own reservation on
// `twin`. Returns the pages reserved.
int64_t ApplyListBound(PageTable& pt, PageTable& twin, const std::vector<Op>& ops, uint64_t lo,
                       uint64_t hi) {
  PageTable::ListBound bound(pt);
  int64_t sum = 0;
  for (const Op& op : ops) {
    EXPECT_TRUE((op.map ? bound.AddMap(op.va, op.size, op.target, kRW, op.ps)
                        : bound.AddUnmap(op.va, op.size))
                    .ok());
    absl::StatusOr<Prealloc> own = op.map ? pt.ReserveForMap(op.va, op.size, op.target, kRW, op.ps)
                                          : pt.ReserveForUnmap(op.va, op.size);
    sum += static_cast<int64_t>(own->size());
    pt.Unreserve(*std::move(own));
  }
  EXPECT_LE(bound.pages(), sum);  // never more than the per-call reservations
  Prealloc pre;
  pt.Reserve(bound, pre);
  EXPECT_EQ(static_cast<int64_t>(pre.size()), bound.pages());
  Invalidation job;
  {
    CountAllocations c;
    for (const Op& op : ops) {
      job.Absorb(op.map ? pt.Map(op.va, op.size, op.target, kRW, op.ps, pre)
                        : pt.Unmap(op.va, op.size, pre));
    }
    EXPECT_EQ(c.count(), 0);
  }
  pt.Unreserve(std::move(pre));
  pt.Release(std::move(job));
  Invalidation pending;
  for (const Op& op : ops) {
    EXPECT_TRUE((op.map ? MapDeferred(twin, op.va, op.size, op.target, kRW, op.ps, pending)
                        : UnmapDeferred(twin, op.va, op.size, pending))
                    .ok());
  }
  twin.Release(std::move(pending));
  RcuReadSection s;
  for (uint64_t va = lo; va < hi; va += 4 * KiB) {
    const Translation a = pt.Translate(va), b = twin.Translate(va);
    EXPECT_TRUE(a.valid == b.valid && a.address == b.address && a.size == b.size)
        << std::hex << va;
    if (!(a.valid == b.valid && a.address == b.address && a.size == b.size)) break;
  }
  return sum;
}

// The list-level bound in one reservation (PageTable::ListBound): the random lists above (the
// sum of the calls' bounds), and lists of 4 KiB / 64 KiB maps in ascending address order (one
// table per distinct position) over a table state of 2 MiB pages, 4 KiB pages and holes, so that
// those maps split large pages, fill missing tables and overlap each other.
TEST_F(PageTableAllocTest, ListBoundCoversTheList) {
  std::mt19937_64 rng(23);
  auto twin = *PageTable::Create(48);
  const uint64_t lo = GiB - 8 * MiB, hi = GiB + 8 * MiB;
  int64_t bound_pages = 0, sum_pages = 0;
  for (int list = 0; list < 300; ++list) {
    // The state, the same on both tables: every other list runs on empty tables (so it must
    // create every table it touches: a bound one short crashes), the others after a few random
    // maps and unmaps.
    std::unique_ptr<PageTable> empty, empty_twin;
    PageTable* pt = pt_.get();
    PageTable* tw = twin.get();
    if (list % 2 == 0) {
      empty = *PageTable::Create(48);
      empty_twin = *PageTable::Create(48);
      pt = empty.get();
      tw = empty_twin.get();
    }
    std::vector<Op> state;
    for (int i = 0; i < 4 && list % 2 == 1; ++i) {
      Op op = RandomOp(rng, {});
      if (op.va < lo || op.va + op.size > hi) continue;
      state.push_back(op);
    }
    ApplyListBound(*pt, *tw, state, lo, hi);
    std::vector<Op> ops;
    if (list % 3 == 0) {
      const int n = 1 + rng() % 16;
      for (int i = 0; i < n; ++i) ops.push_back(RandomOp(rng, ops));
    } else {
      uint64_t va = lo + 4 * KiB * (rng() % 1024);
      const int n = 1 + rng() % 64;
      for (int i = 0; i < n && va < hi - 2 * MiB; ++i) {
        const PageSize ps = rng() % 4 == 0 ? PageSize::k64K : PageSize::k4K;
        const uint64_t unit = PageBytes(ps);
        const uint64_t at = (va + unit - 1) / unit * unit;
        const uint64_t size = unit * (1 + rng() % 48);
        ops.push_back(Op{true, at, size, 32 * GiB + (at & (GiB - 1)), ps});
        // The next one starts at or after this one: overlapping it, adjoining it, or further.
        va = at + (rng() % 3 == 0 ? size / 2 : size) + 4 * KiB * (rng() % 3 == 0 ? rng() % 600 : 0);
      }
    }
    const int64_t sum = ApplyListBound(*pt, *tw, ops, lo, hi);
    if (list % 3 != 0) {
      PageTable::ListBound bound(*pt);
      for (const Op& op : ops) {
        ASSERT_TRUE(bound.AddMap(op.va, op.size, op.target, kRW, op.ps).ok());
      }
      bound_pages += bound.pages();
      sum_pages += sum;
    }
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_EQ(pt_->stats().reserved_tables, 0);
  EXPECT_EQ(pt_->stats().retired_tables, 0);
  std::printf("ascending leaf-map lists: %lld pages reserved by the list bound, %lld by the "
              "per-call bounds\n",
              static_cast<long long>(bound_pages), static_cast<long long>(sum_pages));
  EXPECT_LT(bound_pages, sum_pages);
}

// The bound of vmbind_bench's batched job: 64 neighbouring 16 KiB maps in one 2 MiB region need
// the 3 tables below the root, not 3 per map; out of order, or with an unmap, the sum.
TEST_F(PageTableAllocTest, ListBoundOfNeighbouringMaps) {
  PageTable::ListBound bound(*pt_);
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(bound.AddMap(GiB + i * 16 * KiB, 16 * KiB, 0x1000000 + i * 16 * KiB, kRW,
                             PageSize::k4K)
                    .ok());
  }
  EXPECT_EQ(bound.pages(), 3);
  PageTable::ListBound reversed(*pt_);
  for (int i = 63; i >= 0; --i) {
    ASSERT_TRUE(reversed.AddMap(GiB + i * 16 * KiB, 16 * KiB, 0, kRW | kPteSparse,
                                PageSize::k4K)
                    .ok());
  }
  EXPECT_EQ(reversed.pages(), 64 * 3);
  ASSERT_TRUE(bound.AddUnmap(GiB, 16 * KiB).ok());
  // The unmap: split chains at both ends and a log page.
  EXPECT_EQ(bound.pages(), 64 * 3 + 2 * 3 + 1);
}

// A bad call returns InvalidArgument and leaves the bound as it was.
TEST_F(PageTableAllocTest, ListBoundBadCallChangesNothing) {
  PageTable::ListBound bound(*pt_);
  ASSERT_TRUE(bound.AddMap(GiB, 16 * KiB, 0x10000, kRW, PageSize::k4K).ok());
  const int64_t pages = bound.pages();
  EXPECT_EQ(bound.AddMap(GiB + 4 * KiB, 2 * MiB, 0x400000, kRW, PageSize::k2M).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bound.AddMap(0, 16 * KiB, 0x10000, 1u << 7, PageSize::k4K).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bound.AddUnmap(GiB, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bound.pages(), pages);
  // The rejected 2 MiB map did not end the leaf-maps-only case, the rejected low address did not
  // end the ascending order: the next neighbour adds no table.
  ASSERT_TRUE(bound.AddMap(GiB + 16 * KiB, 16 * KiB, 0x20000, kRW, PageSize::k4K).ok());
  EXPECT_EQ(bound.pages(), pages);
  Prealloc pre;
  pt_->Reserve(bound, pre);
  EXPECT_EQ(pt_->stats().reserved_tables, pages);
  pt_->Unreserve(std::move(pre));
  EXPECT_EQ(pt_->stats().reserved_tables, 0);
}

}  // namespace
}  // namespace vm
