// VM_BIND step 3: the plan is exact (ApplyBind appends exactly the planned entries) and the ONE
// page-table reservation of a bind's op list covers the whole list applied in order — for the
// seed's cases and for random lists over random table states with 64 KiB, 2 MiB and 1 GiB pages,
// splits of large pages, and maps split by later ops of the same list.
#include <gtest/gtest.h>

#include <cstdio>
#include <optional>
#include <random>
#include <vector>

#include "base/sanitizers.h"
#include "exec/exec.h"
#include "tests/vm/bind_test_util.h"
#include "vm/bind_plan.h"
#include "vm/bind_steps.h"

namespace vm {
namespace {

using testing::CheckConverged;
using testing::kPage;

constexpr uint64_t k2M = uint64_t{2} << 20;
constexpr uint64_t k1G = uint64_t{1} << 30;

class BindPreallocTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vm_ = *BindVm::Create("prealloc", {});
    queue_ = *BindQueue::Create(*vm_);
    bo_ = Bo::Create(8 * k2M);
  }
  void TearDown() override {
    queue_.reset();
    vm_.reset();
    EXPECT_EQ(bo_->refs_for_testing(), 1);
  }

  // Validate, lock, prealloc, apply — then executes the op list on the page table by hand as
  // RunJob does, with the job's one reservation (running short would crash in PageTable::Take).
  // Returns {reserved, used} page counts. No bind job is in flight.
  std::pair<size_t, size_t> BindByHand(std::span<const BindOp> ops) {
    std::optional<exec::Exec> exec;
    exec.emplace(exec::Exec::kIgnoreDuplicates);
    EXPECT_TRUE(ValidateBind(*vm_, ops, {}).ok());
    EXPECT_TRUE(LockBind(*vm_, *exec, ops).ok());
    const BindPlan plan = *PlanBind(vm_->gpuvm(), ops);
    absl::StatusOr<std::unique_ptr<BindJob>> job = PreallocBind(*vm_, queue_->entity(), ops, {});
    EXPECT_TRUE(job.ok()) << job.status();
    if (!job.ok()) return {0, 0};
    BindJob& j = **job;
    EXPECT_EQ(j.free_vas_.size(), plan.vas);
    ApplyBind(*vm_, ops, j);  // crashes if an entry differs from the plan
    EXPECT_EQ(j.entries().size(), plan.entries.size());
    EXPECT_TRUE(j.free_vas_.empty());  // the Gpuva count is exact too
    EXPECT_EQ(j.removed_vas_.size(), plan.removed);
    const size_t reserved = j.tables_.size();
    PageTable& pt = vm_->page_table();
    Invalidation inv;
    // One page-table call per map entry and per run of adjacent unmap entries, as RunJob.
    const std::vector<BindEntry>& es = j.entries();
    for (size_t k = 0; k < es.size();) {
      const BindEntry& e = es[k];
      const size_t end = PageTableCallEnd(es, k);
      inv.Absorb(e.kind == BindEntry::Kind::kMap
                     ? pt.Map(e.va, e.range, e.target, e.pte_flags, e.page_size, j.tables_)
                     : pt.Unmap(e.va, es[end - 1].va + es[end - 1].range - e.va, j.tables_));
      k = end;
    }
    const size_t used = reserved - j.tables_.size();
    pt.Release(std::move(inv));
    job->reset();
    exec.reset();
    return {reserved, used};
  }

  RcuReaderThread rcu_;
  std::unique_ptr<BindVm> vm_;
  std::unique_ptr<BindQueue> queue_;
  Ref<Bo> bo_;
};

// The seed's cases, each as one list: overlapping map and unmap; map, partial unmap, re-map;
// an unmap splitting a 2 MiB page that the same list mapped; a 1 GiB sparse range punched.
TEST_F(BindPreallocTest, SeedCasesStayWithinTheReservation) {
  const std::vector<std::vector<BindOp>> lists = {
      {BindOp::Map(0, 16 * kPage, bo_.get(), 0), BindOp::Unmap(4 * kPage, 4 * kPage)},
      {BindOp::Map(0, 16 * kPage, bo_.get(), 0), BindOp::Unmap(4 * kPage, 4 * kPage),
       BindOp::Map(4 * kPage, 4 * kPage, bo_.get(), 8 * kPage)},
      {BindOp::Map(k2M, k2M, bo_.get(), 0, PageSize::k2M), BindOp::Unmap(k2M + 5 * kPage, kPage)},
      {BindOp::MapNull(k1G, k1G, PageSize::k1G), BindOp::Unmap(k1G + k2M + kPage, kPage),
       BindOp::Map(k1G + 4 * k2M, k2M, bo_.get(), k2M, PageSize::k2M)},
  };
  for (size_t i = 0; i < lists.size(); ++i) {
    const auto [reserved, used] = BindByHand(lists[i]);
    EXPECT_LE(used, reserved) << "list " << i;
    EXPECT_EQ(CheckConverged(*vm_, 0, 8 * k2M), "") << "list " << i;
    EXPECT_EQ(CheckConverged(*vm_, k1G, k1G + 8 * k2M), "") << "list " << i;
  }
}

// Random lists of 1-8 ops over a 16 MiB window (4 KiB, 64 KiB and 2 MiB pages; maps, sparse
// maps, unmaps, often overlapping each other and the existing VAs) never exceed their one
// reservation, and the page table equals the tree afterwards.
TEST_F(BindPreallocTest, RandomListsStayWithinTheReservation) {
  constexpr uint64_t kWindow = 8 * k2M;
  std::mt19937_64 rng(20261202);
  const int rounds = UDRM_SANITIZER ? 120 : 400;
  size_t total_reserved = 0, total_used = 0;
  for (int n = 0; n < rounds; ++n) {
    std::vector<BindOp> ops;
    const int count = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < count; ++i) {
      const int s = static_cast<int>(rng() % 3);
      const PageSize size = s == 0 ? PageSize::k4K : s == 1 ? PageSize::k64K : PageSize::k2M;
      const uint64_t unit = PageBytes(size);
      const uint64_t units = kWindow / unit;
      const uint64_t len = unit * (1 + rng() % std::min<uint64_t>(units, s == 2 ? 3 : 48));
      const uint64_t va = unit * (rng() % ((kWindow - len) / unit + 1));
      switch (rng() % 3) {
        case 0:
          ops.push_back(BindOp::Unmap(va, len));
          break;
        case 1:
          ops.push_back(BindOp::MapNull(va, len, size));
          break;
        default:
          ops.push_back(BindOp::Map(va, len, bo_.get(), unit * (rng() % 4), size));
      }
    }
    const auto [reserved, used] = BindByHand(ops);
    ASSERT_LE(used, reserved) << "round " << n;
    total_reserved += reserved;
    total_used += used;
    ASSERT_EQ(CheckConverged(*vm_, 0, kWindow), "") << "round " << n;
  }
  std::printf("%d random lists: %zu of %zu reserved table pages used\n", rounds, total_used,
              total_reserved);
}

}  // namespace
}  // namespace vm
