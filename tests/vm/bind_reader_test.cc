// Readers: 4 threads translate through the page table and read BO memory while a binder maps,
// re-maps and unmaps BOs it has already released (the tree and the bind jobs hold the only
// references). Under ASan no read touches freed memory; under TSan no race. Every byte a reader
// reads is the pattern the BO was filled with before it was bound.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "base/sanitizers.h"
#include "tests/vm/bind_test_util.h"

namespace vm {
namespace {

using testing::kPage;

constexpr uint64_t kSlotPages = 16;
constexpr uint64_t kSlots = 16;
constexpr std::byte kPattern{0x5a};

// The golden rule under a bind/unbind storm with BO release, seen by concurrent readers.
TEST(BindReaderTest, ReadersNeverSeeFreedMemory) {
  const int64_t bos_before = Bo::live_count();
  {
    std::unique_ptr<BindVm> vm = *BindVm::Create("readers", {});
    std::unique_ptr<BindQueue> queue = *BindQueue::Create(*vm);
    std::atomic<bool> stop{false};
    std::atomic<int64_t> reads{0}, bad{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 4; ++r) {
      readers.emplace_back([&, r] {
        RcuReaderThread rcu;
        std::mt19937 rng(r);
        while (!stop.load(std::memory_order_relaxed)) {
          RcuReadSection section;
          for (int i = 0; i < 64; ++i) {
            const uint64_t va = (rng() % (kSlots * kSlotPages)) * kPage + rng() % kPage;
            const Translation t = vm->page_table().Translate(va);
            const std::byte* host = vm->HostAddress(t);
            if (host == nullptr) continue;
            if (*host != kPattern) bad.fetch_add(1, std::memory_order_relaxed);
            reads.fetch_add(1, std::memory_order_relaxed);
          }
        }
      });
    }
    std::mt19937 rng(99);
    const int iterations = UDRM_SANITIZER ? 300 : 1500;
    std::vector<fence::FenceRef> outs;
    for (int i = 0; i < iterations; ++i) {
      const uint64_t slot = rng() % kSlots;
      const uint64_t va = slot * kSlotPages * kPage;
      std::vector<BindOp> ops;
      Ref<Bo> bo;
      if (rng() % 3 == 0) {
        ops.push_back(BindOp::Unmap(va, kSlotPages * kPage));
      } else {
        bo = Bo::Create(kSlotPages * kPage);
        std::memset(bo->memory().data(), 0x5a, bo->memory().size());
        ops.push_back(BindOp::Map(va, kSlotPages * kPage, bo.get(), 0,
                                  rng() % 2 ? PageSize::k64K : PageSize::k4K));
        if (rng() % 2) ops.push_back(BindOp::Unmap(va + 4 * kPage, 4 * kPage));
      }
      absl::StatusOr<fence::FenceRef> f = queue->Submit(ops);
      ASSERT_TRUE(f.ok()) << f.status();
      bo.reset();  // released: only the VM keeps it alive now
      outs.push_back(*f);
      if (outs.size() == 8) {
        for (auto& o : outs) ASSERT_TRUE(o->Wait().ok());
        outs.clear();
      }
    }
    for (auto& o : outs) ASSERT_TRUE(o->Wait().ok());
    stop = true;
    for (auto& t : readers) t.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_GT(reads.load(), 0);
    EXPECT_FALSE(vm->unusable());
    queue.reset();
  }
  EXPECT_EQ(Bo::live_count(), bos_before);  // teardown freed every BO
}

}  // namespace
}  // namespace vm
