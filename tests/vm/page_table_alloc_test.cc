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

}  // namespace
}  // namespace vm
