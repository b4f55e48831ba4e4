// PageTable::MapAll and the software TLBs (bind12g review): one MapAll sets the stale flag of
// every cache whose footprint meets ANY map of the list that replaced a mapping, not only the
// last one — with `regions = ` in place of `regions |= ` in MapAll, both tests fail (a cache
// holding the first map's old translation keeps returning it after the list was published).
#include <atomic>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

#include "tests/vm/pt_test_util.h"
#include "vm/translation_cache.h"

namespace vm {
namespace {
using namespace vm::testing;  // NOLINT
constexpr uint32_t kRW = kPteRead | kPteWrite;

TEST(PageTableMapAllStale, StaleFlagsForEveryReplacingMap) {
  RcuReaderThread reader;
  auto pt = *PageTable::Create(48);
  const uint64_t a = 0x7000, b = GiB + 0x7000;  // regions 0 and 1: different footprint bits
  ASSERT_TRUE(Map(*pt, a, 4 * KiB, 0xa000, kRW, PageSize::k4K).ok());
  ASSERT_TRUE(Map(*pt, b, 4 * KiB, 0xd000, kRW, PageSize::k4K).ok());
  TranslationCache tlb(pt.get());
  {
    TranslationCache::Section s(tlb);
    ASSERT_EQ(s.Translate(a + 4).address, 0xa004u);  // footprint: region 0 only
  }
  std::vector<PageTable::MapArgs> maps = {{a, 4 * KiB, 0xb000, kRW, PageSize::k4K},
                                          {b, 4 * KiB, 0xc000, kRW, PageSize::k4K}};
  PageTable::ListBound bound(*pt);
  for (auto& m : maps) ASSERT_TRUE(bound.AddMap(m.va, m.size, m.target, m.flags, m.page_size).ok());
  Prealloc pre;
  pt->Reserve(bound, pre);
  Invalidation inv = pt->MapAll(maps, pre);
  pt->Unreserve(std::move(pre));
  pt->Release(std::move(inv));
  {
    TranslationCache::Section s(tlb);
    EXPECT_EQ(s.Translate(a + 4).address, 0xb004u) << "cache kept the replaced translation";
    EXPECT_EQ(s.Translate(b + 4).address, 0xc004u);
  }
  EXPECT_EQ(tlb.Translate(a + 8).address, 0xb008u);
}


// Concurrent: after MapAll of list k returned (and the publication of k, as an out-fence's
// signal), a reader whose Section starts after seeing k translates both VAs to list >= k, with
// one cache per VA (each cache's footprint meets only one map of the list).
TEST(PageTableMapAllStale, ConcurrentReadersSeeFinishedLists) {
  auto pt = *PageTable::Create(48);
  const uint64_t va[2] = {0x7000, GiB + 0x7000};
  const uint64_t kTarget = uint64_t{1} << 32;
  {
    RcuReaderThread w;
    for (uint64_t v : va) ASSERT_TRUE(Map(*pt, v, 4 * KiB, kTarget, kRW, PageSize::k4K).ok());
  }
  std::atomic<uint64_t> published{0};
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<uint64_t> checks{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      RcuReaderThread reader;
      TranslationCache tlb(pt.get());
      while (!stop.load(std::memory_order_relaxed)) {
        const uint64_t k = published.load(std::memory_order_acquire);
        TranslationCache::Section s(tlb);
        const Translation t = s.Translate(va[r] + 4);
        if (!t.valid || (t.address - kTarget - 4) / 4096 < k) bad.fetch_add(1);
        checks.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  {
    RcuReaderThread w;
    const int kLists = 20000;
    for (uint64_t k = 1; k <= kLists; ++k) {
      std::vector<PageTable::MapArgs> maps;
      for (uint64_t v : va) maps.push_back({v, 4 * KiB, kTarget + k * 4096, kRW, PageSize::k4K});
      if (k % 2) std::swap(maps[0], maps[1]);
      PageTable::ListBound bound(*pt);
      for (auto& m : maps) {
        ASSERT_TRUE(bound.AddMap(m.va, m.size, m.target, m.flags, m.page_size).ok());
      }
      Prealloc pre;
      pt->Reserve(bound, pre);
      Invalidation inv = pt->MapAll(maps, pre);
      pt->Unreserve(std::move(pre));
      published.store(k, std::memory_order_release);  // the out-fence: before the grace period
      pt->ReleaseDeferred(std::move(inv));
    }
    stop.store(true);
    for (auto& t : readers) t.join();
    pt->FlushDeferred();
  }
  EXPECT_EQ(bad.load(), 0) << "checks " << checks.load();
  EXPECT_GT(checks.load(), 1000u);
}

}  // namespace
}  // namespace vm
