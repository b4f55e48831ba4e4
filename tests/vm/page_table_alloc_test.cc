// vm::PageTable's no-allocation contract: after Reserve*, Map / Unmap and Invalidation::Absorb
// allocate nothing (VM_BIND applies its op list in run_job, the fence-signalling critical
// section, where allocating may deadlock against reclaim). A dedicated binary, because it
// replaces the global operator new / delete with versions that count the calls made by a thread
// while it is inside a CountAllocations scope.
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include "tests/vm/pt_test_util.h"

namespace {

thread_local bool counting = false;
thread_local long allocations = 0;

void* Allocate(std::size_t n, std::size_t align) {
  if (counting) ++allocations;
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t)
                ? std::malloc(n)
                : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t n) { return Allocate(n, 0); }
void* operator new[](std::size_t n) { return Allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return Allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return Allocate(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return Allocate(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return Allocate(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace vm {
namespace {

using namespace vm::testing;  // NOLINT

constexpr uint32_t kRW = kPteRead | kPteWrite;

// Counts this thread's operator new calls during its lifetime.
class CountAllocations {
 public:
  CountAllocations() : before_(allocations) { counting = true; }
  ~CountAllocations() { counting = false; }
  long count() const { return allocations - before_; }

 private:
  long before_;
};

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

}  // namespace
}  // namespace vm
