// VM_BIND's no-allocation contract (issue 12 steps 4 and 6): once a bind's prealloc step has
// succeeded, ApplyBind (the VA-tree changes and the op list) allocates nothing, and neither does
// the bind job's RunJob (the page-table update: the fence-signalling critical section). Counted
// with a replaced global operator new (tests/vm:alloc_count), for the seed's cases and random
// lists over a growing tree.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <optional>
#include <random>
#include <vector>

#include "base/sanitizers.h"
#include "exec/exec.h"
#include "tests/vm/alloc_count.h"
#include "tests/vm/bind_test_util.h"
#include "vm/bind_steps.h"
#include "vm/gpuvm_exec.h"

namespace vm {
namespace {

using testing::CheckConverged;
using testing::CountAllocations;
using testing::kPage;

constexpr uint64_t k2M = uint64_t{2} << 20;

// Forwards to BindBackend, counting the operator new calls made inside RunJob.
class CountingBackend final : public sched::Backend {
 public:
  absl::StatusOr<fence::FenceRef> RunJob(sched::Job& job) override {
    CountAllocations count;
    absl::StatusOr<fence::FenceRef> r = inner_.RunJob(job);
    allocations_.fetch_add(count.count(), std::memory_order_relaxed);
    runs_.fetch_add(1, std::memory_order_relaxed);
    return r;
  }
  void FreeJob(std::unique_ptr<sched::Job> job) override { inner_.FreeJob(std::move(job)); }
  long allocations() const { return allocations_.load(std::memory_order_relaxed); }
  int runs() const { return runs_.load(std::memory_order_relaxed); }

 private:
  BindBackend inner_;
  std::atomic<long> allocations_{0};
  std::atomic<int> runs_{0};
};

class BindAllocTest : public ::testing::Test {
 protected:
  void SetUp() override {
    scheduler_ = *CreateBindScheduler(&backend_, "bind-alloc");
    BindVmOptions o;
    o.scheduler = scheduler_.get();
    vm_ = *BindVm::Create("alloc", o);
    queue_ = *BindQueue::Create(*vm_);
    bos_ = {Bo::Create(4 * k2M), Bo::Create(64 * kPage)};
  }
  void TearDown() override {
    queue_.reset();
    vm_.reset();
    scheduler_.reset();
  }

  // The bind steps by hand; returns the allocations ApplyBind made. Waits for the job.
  long Bind(std::span<const BindOp> ops) {
    std::optional<exec::Exec> exec;
    exec.emplace(exec::Exec::kIgnoreDuplicates);
    EXPECT_TRUE(ValidateBind(*vm_, ops, {}).ok());
    EXPECT_TRUE(LockBind(*vm_, *exec, ops).ok());
    absl::StatusOr<std::unique_ptr<BindJob>> job = PreallocBind(*vm_, queue_->entity(), ops, {});
    EXPECT_TRUE(job.ok()) << job.status();
    if (!job.ok()) return -1;
    long allocations;
    {
      CountAllocations count;
      ApplyBind(*vm_, ops, **job);
      allocations = count.count();
    }
    fence::FenceRef f = vm_->PushLocked(queue_->entity(), *std::move(job), ops);
    exec.reset();
    EXPECT_TRUE(f->Wait().ok());
    EXPECT_TRUE(f->error().ok());
    return allocations;
  }

  RcuReaderThread rcu_;
  CountingBackend backend_;
  std::unique_ptr<sched::Scheduler> scheduler_;
  std::unique_ptr<BindVm> vm_;
  std::unique_ptr<BindQueue> queue_;
  std::vector<Ref<Bo>> bos_;
};

// The seed's cases: overlapping map and unmap; map, partial unmap, re-map; an unmap splitting a
// 2 MiB page; a sparse range punched.
TEST_F(BindAllocTest, SeedCasesAllocateNothingAfterPrealloc) {
  const std::vector<std::vector<BindOp>> lists = {
      {BindOp::Map(0, 16 * kPage, bos_[1].get(), 0), BindOp::Unmap(4 * kPage, 4 * kPage)},
      {BindOp::Map(0, 16 * kPage, bos_[1].get(), 0), BindOp::Unmap(4 * kPage, 4 * kPage),
       BindOp::Map(4 * kPage, 4 * kPage, bos_[0].get(), 8 * kPage)},
      {BindOp::Map(k2M, k2M, bos_[0].get(), 0, PageSize::k2M)},
      {BindOp::Unmap(k2M + 5 * kPage, kPage)},
      {BindOp::MapNull(2 * k2M, 2 * k2M, PageSize::k2M), BindOp::Unmap(3 * k2M + kPage, kPage)},
  };
  for (size_t i = 0; i < lists.size(); ++i) EXPECT_EQ(Bind(lists[i]), 0) << "list " << i;
  EXPECT_EQ(backend_.runs(), static_cast<int>(lists.size()));
  EXPECT_EQ(backend_.allocations(), 0);
  EXPECT_EQ(CheckConverged(*vm_, 0, 4 * k2M), "");
}

// Random lists of 1-6 ops over a 8 MiB window, the tree growing to hundreds of VAs.
TEST_F(BindAllocTest, RandomListsAllocateNothingAfterPrealloc) {
  std::mt19937_64 rng(77);
  long apply = 0;
  constexpr int kLists = 300;
  for (int n = 0; n < kLists; ++n) {
    std::vector<BindOp> ops;
    const int count = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < count; ++i) {
      const bool big = rng() % 5 == 0;
      const uint64_t unit = big ? 16 * kPage : kPage;
      const uint64_t len = unit * (1 + rng() % (big ? 3 : 16));
      const uint64_t va = unit * (rng() % ((4 * k2M - len) / unit + 1));
      const PageSize size = big ? PageSize::k64K : PageSize::k4K;
      switch (rng() % 3) {
        case 0:
          ops.push_back(BindOp::Unmap(va, len));
          break;
        case 1:
          ops.push_back(BindOp::MapNull(va, len, size));
          break;
        default:
          ops.push_back(BindOp::Map(va, len, bos_[0].get(), unit * (rng() % 8), size));
      }
    }
    const long a = Bind(ops);
    ASSERT_GE(a, 0);
    apply += a;
  }
  std::printf("%d lists, %zu VAs at the end: ApplyBind %ld, RunJob %ld allocations\n", kLists,
              vm_->gpuvm().va_count(), apply, backend_.allocations());
  EXPECT_EQ(apply, 0);
  EXPECT_EQ(backend_.runs(), kLists);
  EXPECT_EQ(backend_.allocations(), 0);
  EXPECT_EQ(CheckConverged(*vm_, 0, 4 * k2M), "");
}

// The batched bind of vmbind_bench (BM_Batched): a job of 64 maps (4 pages each, 8 BOs) and a
// job of the 64 unmaps, through BindQueue::Bind (the CPU fast path when nothing is pending).
// Counts the submitting thread's operator new calls per op (issue 12's throughput: every
// allocation on the submit path is paid per bind) once the cleanup worker has caught up, and how
// many of them are the VA tree's node reservation (Gpuvm::ReserveInserts, counted alone on the
// same tree).
TEST(BindAllocCountTest, BatchedBindAllocationsPerOp) {
  RcuReaderThread rcu;
  std::unique_ptr<BindVm> vm = *BindVm::Create("batched", {});
  std::unique_ptr<BindQueue> queue = *BindQueue::Create(*vm);
  constexpr int kOps = 64;
  constexpr uint64_t kBase = uint64_t{1} << 30;
  std::vector<Ref<Bo>> bos;
  for (int i = 0; i < 8; ++i) bos.push_back(Bo::Create(8 * 4 * kPage));
  std::vector<BindOp> maps, unmaps;
  for (int i = 0; i < kOps; ++i) {
    const uint64_t va = kBase + i * 4 * kPage;
    maps.push_back(BindOp::Map(va, 4 * kPage, bos[i % 8].get(), (i / 8) * 4 * kPage));
    unmaps.push_back(BindOp::Unmap(va, 4 * kPage));
  }
  for (auto& bo : bos) bo->memory();
  constexpr int kRounds = 50;
  long map_allocs = 0, unmap_allocs = 0, tree_allocs = 0;
  for (int r = 0; r < kRounds + 2; ++r) {  // the first two rounds warm the pools up
    long m, u;
    vm->WaitIdle();  // the cleanup worker has returned what the last round freed
    {
      CountAllocations count;
      ASSERT_TRUE(queue->Bind(maps).ok());
      m = count.count();
    }
    vm->WaitIdle();
    {
      CountAllocations count;
      ASSERT_TRUE(queue->Bind(unmaps).ok());
      u = count.count();
    }
    if (r >= 2) {
      map_allocs += m;
      unmap_allocs += u;
    }
  }
  {
    exec::Exec exec;
    ASSERT_TRUE(exec.UntilAllLocked([&](exec::Exec& e) { return PrepareVm(vm->gpuvm(), e, 0); })
                    .ok());
    CountAllocations count;
    absl::StatusOr<Gpuvm::InsertReservation> res = vm->gpuvm().ReserveInserts(kOps);
    ASSERT_TRUE(res.ok());
    res->Release();
    tree_allocs = count.count();
  }
  vm->WaitIdle();
  std::printf(
      "per op: map job %.2f, unmap job %.2f allocations (map job %.1f, unmap job %.1f per job; "
      "of the map job's, %ld are Gpuvm::ReserveInserts(%d)); %lld binds inline\n",
      static_cast<double>(map_allocs) / (kRounds * kOps),
      static_cast<double>(unmap_allocs) / (kRounds * kOps),
      static_cast<double>(map_allocs) / kRounds, static_cast<double>(unmap_allocs) / kRounds,
      tree_allocs, kOps, static_cast<long long>(vm->binds_run_inline()));
#if !UDRM_SANITIZER  // sanitizer builds keep no Gpuva or page-table pool: every node is new
  // Bounds with some room (measured: 14 and 6): the job, its fences and range-tracker nodes, the
  // locked-object list of the exec, one VmBo per BO — not one allocation per op.
  EXPECT_LE(static_cast<double>(map_allocs) / kRounds - static_cast<double>(tree_allocs), 24);
  EXPECT_LE(static_cast<double>(unmap_allocs) / kRounds, 10);
#endif
  EXPECT_EQ(CheckConverged(*vm, kBase, kBase + kOps * 4 * kPage), "");
}

}  // namespace
}  // namespace vm
