// VM_BIND failslab (the kernel's fault injection into slab allocations): for several bind
// shapes, fail the k-th allocation site of the bind for k = 1, 2, ... until the bind succeeds;
// after every failure the VM must be exactly as before (VA tree, page table, resv fences, BO and
// VmBo reference counts, page-table reservations) and nothing may leak (run under ASan).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "tests/vm/bind_test_util.h"
#include "vm/internal/failslab.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

using testing::kPage;

constexpr uint64_t k2M = uint64_t{2} << 20;
constexpr uint64_t kWindow = 8 * k2M;  // every shape stays inside [0, kWindow)

// Fails the k-th site reached (1-based); counts every site.
class FailKth final : public internal::FailslabHook {
 public:
  explicit FailKth(int k) : k_(k) {}
  bool ShouldFail(const char* site) override {
    const int n = ++count_;
    if (n == k_) failed_site_ = site;
    return n == k_;
  }
  int count() const { return count_; }
  const char* failed_site() const { return failed_site_; }

 private:
  const int k_;
  std::atomic<int> count_{0};
  const char* failed_site_ = nullptr;
};

struct Snapshot {
  std::vector<std::tuple<uint64_t, uint64_t, const Bo*, uint64_t, uint32_t>> vas;
  std::vector<std::tuple<bool, uint64_t, uint32_t, PageSize>> pages;
  std::vector<std::vector<std::pair<const fence::Fence*, fence::ResvUsage>>> resvs;
  std::vector<int> bo_refs;
  int64_t vm_bos = 0;
  size_t extobjs = 0;
  int64_t live_tables = 0, reserved_tables = 0, retired_tables = 0;
  int64_t jobs = 0;
  friend bool operator==(const Snapshot&, const Snapshot&) = default;
};

std::vector<std::pair<const fence::Fence*, fence::ResvUsage>> Fences(const fence::Resv& r) {
  std::vector<std::pair<const fence::Fence*, fence::ResvUsage>> out;
  for (const auto& e : r.GetFences(fence::ResvUsage::kBookkeep)) {
    out.emplace_back(e.fence.get(), e.usage);
  }
  return out;
}

class BindFailslabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vm_ = *BindVm::Create("failslab", {});
    queue_ = *BindQueue::Create(*vm_);
    bos_ = {Bo::Create(64 * kPage), Bo::Create(64 * kPage), Bo::Create(2 * k2M)};
  }
  void TearDown() override {
    internal::SetFailslabHook(nullptr);
    queue_.reset();
    vm_.reset();
    for (auto& b : bos_) EXPECT_EQ(b->refs_for_testing(), 1);
    EXPECT_EQ(VmBo::live_count(), 0);
  }

  Snapshot Take() {
    vm_->WaitIdle();
    Snapshot s;
    for (Gpuva* va : vm_->gpuvm().All()) {
      s.vas.emplace_back(va->addr, va->range, va->bo, va->offset, va->flags);
    }
    for (uint64_t p = 0; p < kWindow; p += kPage) {
      const Translation t = testing::TranslateOnce(vm_->page_table(), p);
      s.pages.emplace_back(t.valid, t.address, t.flags, t.size);
    }
    s.resvs.push_back(Fences(vm_->gpuvm().resv()));
    for (auto& b : bos_) {
      s.resvs.push_back(Fences(b->resv()));
      s.bo_refs.push_back(b->refs_for_testing());
    }
    s.vm_bos = VmBo::live_count();
    s.extobjs = vm_->gpuvm().ExtobjsForTesting().size();
    const PageTable::Stats st = vm_->page_table().stats();
    s.live_tables = st.live_tables;
    s.reserved_tables = st.reserved_tables;
    s.retired_tables = st.retired_tables;
    s.jobs = vm_->jobs_in_flight();
    return s;
  }

  // Fails the k-th site for k = 1, 2, ... until the bind succeeds. Returns the number of sites a
  // successful bind of `ops` reaches (= the failing cases run). With `gate`, the bind waits for
  // that unsignalled in-fence, so it is queued (pushed to the scheduler) rather than run on the
  // CPU fast path; the gate is signalled once the bind has been accepted. `failed_sites`, when
  // given, receives the name of every site failed.
  int FailEachSiteInTurn(std::span<const BindOp> ops, fence::FenceRef gate = nullptr,
                         std::map<std::string, int>* failed_sites = nullptr) {
    const Snapshot before = Take();
    std::map<std::string, int> sites;
    for (int k = 1;; ++k) {
      FailKth hook(k);
      internal::SetFailslabHook(&hook);
      absl::StatusOr<fence::FenceRef> f =
          gate == nullptr ? queue_->Submit(ops) : queue_->Submit(ops, {&gate, 1});
      internal::SetFailslabHook(nullptr);
      if (f.ok()) {
        if (gate != nullptr) gate->Signal();
        EXPECT_EQ(hook.count(), k - 1);
        EXPECT_TRUE((*f)->Wait().ok());
        EXPECT_TRUE((*f)->error().ok());
        EXPECT_NE(Take(), before);
        for (const auto& [site, n] : sites)
          std::printf("  site %-18s failed %d time(s)\n", site.c_str(), n);
        if (failed_sites != nullptr) *failed_sites = sites;
        return k - 1;
      }
      EXPECT_EQ(f.status().code(), absl::StatusCode::kResourceExhausted) << f.status();
      ++sites[hook.failed_site()];
      const Snapshot after = Take();
      EXPECT_TRUE(after == before)
          << "k = " << k << " (" << hook.failed_site() << ") changed the VM";
      if (!(after == before)) return -1;
    }
  }

  RcuReaderThread rcu_;
  std::unique_ptr<BindVm> vm_;
  std::unique_ptr<BindQueue> queue_;
  std::vector<Ref<Bo>> bos_;
};

// A plain map of an external BO.
TEST_F(BindFailslabTest, Map) {
  const BindOp op = BindOp::Map(16 * kPage, 4 * kPage, bos_[0].get(), 0);
  const int n = FailEachSiteInTurn({&op, 1});
  std::printf("map: %d failing cases\n", n);
  EXPECT_GT(n, 0);
}

// An unmap of 4 KiB in the middle of a 2 MiB page.
TEST_F(BindFailslabTest, UnmapSplitting2MiBPage) {
  const BindOp map = BindOp::Map(k2M, k2M, bos_[2].get(), 0, PageSize::k2M);
  ASSERT_TRUE(queue_->Bind({&map, 1}).ok());
  const BindOp op = BindOp::Unmap(k2M + 5 * kPage, kPage);
  const int n = FailEachSiteInTurn({&op, 1});
  std::printf("unmap splitting a 2 MiB page: %d failing cases\n", n);
  EXPECT_GT(n, 0);
}

// Overlapping map and unmap in one list, over existing VAs of two BOs (remaps on both sides).
TEST_F(BindFailslabTest, OverlappingMapAndUnmapInOneList) {
  const BindOp setup[] = {BindOp::Map(0, 8 * kPage, bos_[1].get(), 0),
                          BindOp::Map(8 * kPage, 16 * kPage, bos_[0].get(), 0)};
  ASSERT_TRUE(queue_->Bind(setup).ok());
  const BindOp ops[] = {BindOp::Map(4 * kPage, 16 * kPage, bos_[0].get(), 32 * kPage),
                        BindOp::Unmap(6 * kPage, 4 * kPage),
                        BindOp::Map(7 * kPage, 2 * kPage, bos_[1].get(), 8 * kPage)};
  const int n = FailEachSiteInTurn(ops);
  std::printf("overlapping map + unmap: %d failing cases\n", n);
  EXPECT_GT(n, 0);
}

// A sparse (MAP_NULL) range with 2 MiB pages over an existing mapping, then a hole punched in it.
TEST_F(BindFailslabTest, Sparse) {
  const BindOp setup = BindOp::Map(2 * k2M + 16 * kPage, 4 * kPage, bos_[0].get(), 0);
  ASSERT_TRUE(queue_->Bind({&setup, 1}).ok());
  const BindOp ops[] = {BindOp::MapNull(2 * k2M, 4 * k2M, PageSize::k2M),
                        BindOp::Unmap(3 * k2M + kPage, kPage)};
  const int n = FailEachSiteInTurn(ops);
  std::printf("sparse: %d failing cases\n", n);
  EXPECT_GT(n, 0);
}

// A map that waits for an unsignalled in-fence: the bind is queued, so it reaches the sites only
// a pushed bind has (the range tracker's nodes, PreallocPush) as well as the tree and BO ones;
// every failure must still leave the VM as it was (nothing pushed, no fence added, no VmBo left).
TEST_F(BindFailslabTest, QueuedMapBehindAnInFence) {
  const BindOp setup = BindOp::Map(8 * kPage, 8 * kPage, bos_[1].get(), 0);
  ASSERT_TRUE(queue_->Bind({&setup, 1}).ok());
  fence::FenceContext ctx;
  const BindOp ops[] = {BindOp::Map(4 * kPage, 8 * kPage, bos_[0].get(), 0),
                        BindOp::Unmap(14 * kPage, kPage)};
  std::map<std::string, int> failed;
  const int n = FailEachSiteInTurn(ops, ctx.NewFence(), &failed);
  std::printf("queued map behind an in-fence: %d failing cases\n", n);
  EXPECT_GT(n, 0);
  EXPECT_TRUE(failed.contains("range tracker")) << "the queued path's own site was never failed";
}

}  // namespace
}  // namespace vm
