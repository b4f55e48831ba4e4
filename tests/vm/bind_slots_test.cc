// Device-address slots of a BindVm (vm/bind_vm.h): a slot is reused once no Gpuva and no bind job
// refers to it and the grace period of its unmap has passed — so a VM maps any number of
// BindOps in its life, and no reader ever translates through a reused slot to the new memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "base/sanitizers.h"
#include "tests/vm/bind_test_util.h"

namespace vm {
namespace {

using testing::kPage;

// Reads the host memory `va` translates to, in one read-side section.
const std::byte* HostOf(const BindVm& vm, uint64_t va) {
  RcuReadSection section;
  return vm.HostAddress(vm.page_table().Translate(va));
}

// More mapped BindOps than the default window has slots (2^18), on one VM: kOps maps a job (each
// its own slot), then their unmap; every map's translations point at its BO's memory. Under the
// sanitizers the same with a window of 1024 slots (kept fast). Big jobs, so that few thread
// hand-offs are needed (each costs milliseconds on a loaded machine); slots in use go back to 0.
TEST(BindSlotsTest, MoreMapsThanSlotsOnOneVm) {
  RcuReaderThread rcu;
  BindVmOptions options;
#if UDRM_SANITIZER
  options.device_slots = 1024;
#endif
  std::unique_ptr<BindVm> vm = *BindVm::Create("slots", options);
  const size_t slots = options.device_slots == 0 ? BindVm::kSlots : options.device_slots;
  std::unique_ptr<BindQueue> queue = *BindQueue::Create(*vm);
  const int kOps = static_cast<int>(std::min<size_t>(2048, slots / 4));
  std::vector<Ref<Bo>> bos = {Bo::Create(kOps * kPage), Bo::Create(kOps * kPage)};
  const size_t rounds = slots / kOps + 4;  // > slots maps in total
  std::vector<BindOp> maps, unmaps = {BindOp::Unmap(0, kOps * kPage)};
  int full = 0;
  for (size_t r = 0; r < rounds; ++r) {
    Bo* bo = bos[r % 2].get();
    maps.clear();
    for (int i = 0; i < kOps; ++i) maps.push_back(BindOp::Map(i * kPage, kPage, bo, i * kPage));
    // Submitted back to back: the unmap's slots are freed while later maps are being assigned.
    absl::StatusOr<fence::FenceRef> m = queue->Submit(maps);
    if (m.status().code() == absl::StatusCode::kResourceExhausted) {
      // Every slot is still referenced by unmapped VAs waiting for their grace period (a
      // small window under the sanitizers): once they are cleaned up, the slots are free.
      ++full;
      vm->WaitIdle();
      m = queue->Submit(maps);
    }
    ASSERT_TRUE(m.ok()) << "round " << r << ": " << m.status();
    ASSERT_TRUE((*m)->Wait().ok());
    ASSERT_TRUE((*m)->error().ok());
    for (int i = 0; i < kOps; i += 61) {
      ASSERT_EQ(HostOf(*vm, i * kPage + 8), bo->memory().data() + i * kPage + 8)
          << "round " << r << " page " << i;
    }
    ASSERT_LE(vm->device_slots_in_use(), slots - 1);
    ASSERT_TRUE(queue->Submit(unmaps).ok());
  }
  vm->WaitIdle();
  EXPECT_EQ(vm->device_slots_in_use(), 0u);
  EXPECT_EQ(HostOf(*vm, 0), nullptr);
  std::printf("%zu maps through a window of %zu slots (window full %d times)\n", rounds * kOps,
              slots, full);
  queue.reset();
  vm.reset();
  for (auto& b : bos) EXPECT_EQ(b->refs_for_testing(), 1);
}

// A reader inside its read-side section holds off the reuse of the slot it translated through:
// with a window of one usable slot, a map after the unmap finds no free slot until the reader
// leaves its section; then it gets the slot, and translations reach the new BO.
TEST(BindSlotsTest, NoReuseBeforeTheGracePeriod) {
  RcuReaderThread rcu;
  BindVmOptions options;
  options.device_slots = 2;  // slot 0 is never used
  std::unique_ptr<BindVm> vm = *BindVm::Create("slots", options);
  std::unique_ptr<BindQueue> queue = *BindQueue::Create(*vm);
  Ref<Bo> a = Bo::Create(4 * kPage), b = Bo::Create(4 * kPage);
  const BindOp map_a = BindOp::Map(0, 4 * kPage, a.get(), 0);
  const BindOp map_b = BindOp::Map(0, 4 * kPage, b.get(), 0);
  const BindOp unmap = BindOp::Unmap(0, 4 * kPage);
  ASSERT_TRUE(queue->Bind({&map_a, 1}).ok());
  {
    RcuReadSection section;  // a reader that has translated into A
    const Translation t = vm->page_table().Translate(kPage);
    ASSERT_EQ(vm->HostAddress(t), a->memory().data() + kPage);
    ASSERT_TRUE(queue->Bind({&unmap, 1}).ok());  // the out-fence needs no grace period
    // A's Gpuva (and its slot) can only be freed after a grace period, which this section holds
    // off: the window stays full.
    absl::StatusOr<fence::FenceRef> f = queue->Submit({&map_b, 1});
    EXPECT_EQ(f.status().code(), absl::StatusCode::kResourceExhausted) << f.status();
    EXPECT_EQ(vm->device_slots_in_use(), 1u);
    EXPECT_EQ(vm->HostAddress(t), a->memory().data() + kPage);  // still A's memory
  }
  vm->WaitIdle();
  EXPECT_EQ(vm->device_slots_in_use(), 0u);
  ASSERT_TRUE(queue->Bind({&map_b, 1}).ok());
  EXPECT_EQ(HostOf(*vm, 2 * kPage), b->memory().data() + 2 * kPage);
  EXPECT_EQ(vm->device_slots_in_use(), 1u);
  queue.reset();
  vm.reset();
  EXPECT_EQ(a->refs_for_testing(), 1);
  EXPECT_EQ(b->refs_for_testing(), 1);
}

// A remap keeps its pieces in the slot of the VA it split; the slot is free only once the last
// piece is gone. A failed bind returns the slot it was assigned at once.
TEST(BindSlotsTest, RemapPiecesShareTheSlot) {
  RcuReaderThread rcu;
  BindVmOptions options;
  options.device_slots = 3;
  std::unique_ptr<BindVm> vm = *BindVm::Create("slots", options);
  std::unique_ptr<BindQueue> queue = *BindQueue::Create(*vm);
  Ref<Bo> a = Bo::Create(16 * kPage);
  const BindOp map = BindOp::Map(0, 16 * kPage, a.get(), 0);
  ASSERT_TRUE(queue->Bind({&map, 1}).ok());
  const BindOp hole = BindOp::Unmap(4 * kPage, 4 * kPage);  // two pieces survive
  ASSERT_TRUE(queue->Bind({&hole, 1}).ok());
  vm->WaitIdle();
  EXPECT_EQ(vm->device_slots_in_use(), 1u);
  EXPECT_EQ(HostOf(*vm, 12 * kPage), a->memory().data() + 12 * kPage);
  const BindOp first = BindOp::Unmap(0, 4 * kPage);
  ASSERT_TRUE(queue->Bind({&first, 1}).ok());
  vm->WaitIdle();
  EXPECT_EQ(vm->device_slots_in_use(), 1u);  // the second piece still refers to it
  EXPECT_EQ(HostOf(*vm, 12 * kPage), a->memory().data() + 12 * kPage);
  // A bind that fails after one of its slots was assigned (the window runs out) returns it.
  const BindOp bad[] = {BindOp::Map(32 * kPage, kPage, a.get(), 0),
                        BindOp::Map(40 * kPage, kPage, a.get(), 0),
                        BindOp::Map(48 * kPage, kPage, a.get(), 0)};  // 3 slots, 1 free
  EXPECT_EQ(queue->Submit(bad).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(vm->device_slots_in_use(), 1u);
  const BindOp second = BindOp::Unmap(8 * kPage, 8 * kPage);
  ASSERT_TRUE(queue->Bind({&second, 1}).ok());
  vm->WaitIdle();
  EXPECT_EQ(vm->device_slots_in_use(), 0u);
  queue.reset();
  vm.reset();
  EXPECT_EQ(a->refs_for_testing(), 1);
}

}  // namespace
}  // namespace vm
