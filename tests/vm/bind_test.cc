// VM_BIND: each step alone, the seed's cases (overlapping ops in one bind, map → partial unmap →
// re-map in one list, unmap splitting a 2 MiB page), the unusable VM, teardown, and several
// queues and threads converging.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

#include "exec/exec.h"
#include "fence/fence_context.h"
#include "tests/vm/bind_test_util.h"
#include "vm/bind_steps.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

using testing::CheckConverged;
using testing::kPage;
using testing::TranslateOnce;

constexpr uint64_t k2M = uint64_t{2} << 20;

class BindTest : public testing::BindFixture {
 protected:
  // Runs the steps by hand up to Apply and returns the job (the VM resv stays locked by `exec`).
  std::unique_ptr<BindJob> ApplyByHand(exec::Exec& exec, std::span<const BindOp> ops) {
    EXPECT_TRUE(ValidateBind(*vm_, ops, {}).ok());
    EXPECT_TRUE(LockBind(*vm_, exec, ops).ok());
    auto job = PreallocBind(*vm_, queue_->entity(), ops, {});
    EXPECT_TRUE(job.ok()) << job.status();
    ApplyBind(*vm_, ops, **job);
    return *std::move(job);
  }
};

// A map becomes visible through the page table and reaches the BO's memory.
TEST_F(BindTest, MapTranslatesToBoMemory) {
  BindOp op = BindOp::Map(16 * kPage, 4 * kPage, a_.get(), 2 * kPage);
  ASSERT_TRUE(queue_->Bind({&op, 1}).ok());
  const Translation t = TranslateOnce(vm_->page_table(), 17 * kPage + 5);
  ASSERT_TRUE(t.valid);
  EXPECT_EQ(vm_->HostAddress(t), a_->memory().data() + 3 * kPage + 5);
  EXPECT_EQ(Converged(), "");
}

// Validation: every bad op is rejected with InvalidArgument and nothing changes.
TEST_F(BindTest, ValidateRejectsBadOpsChangingNothing) {
  const std::vector<BindOp> bad = {
      BindOp::Map(0, 0, a_.get(), 0),                          // size 0
      BindOp::Map(100, kPage, a_.get(), 0),                    // misaligned va
      BindOp::Map(0, kPage, a_.get(), 100),                    // misaligned offset
      BindOp::Map(0, 65 * kPage, a_.get(), 0),                 // beyond the BO
      BindOp::Map(0, kPage, a_.get(), 64 * kPage),             // offset at the BO's end
      BindOp::Map(0, kPage, nullptr, 0),                       // MAP without a BO
      BindOp::Map(kPage, kPage, a_.get(), 0, PageSize::k64K),  // va not aligned to the hint
      {BindOpKind::kMapNull, 0, kPage, a_.get(), 0, kBindRead, PageSize::k4K},  // null with BO
      {BindOpKind::kUnmap, 0, kPage, nullptr, kPage, 0, PageSize::k4K},         // unmap offset
      {BindOpKind::kMap, 0, kPage, a_.get(), 0, 1u << 7, PageSize::k4K},        // unknown flag
      {BindOpKind::kMap, 0, kPage, a_.get(), 0, 0, PageSize::k4K},              // no access
      {static_cast<BindOpKind>(9), 0, kPage, nullptr, 0, 0, PageSize::k4K},     // unknown kind
      BindOp::Unmap(~uint64_t{0} - kPage + 1, 2 * kPage),                       // overflow
      BindOp::Unmap(uint64_t{1} << 48, kPage),                                  // outside the VM
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    absl::StatusOr<fence::FenceRef> f = queue_->Submit({&bad[i], 1});
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << i;
  }
  const BindOp ok = BindOp::Map(0, kPage, a_.get(), 0);
  fence::FenceRef null_fence;
  EXPECT_EQ(queue_->Submit({&ok, 1}, {&null_fence, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(queue_->Submit({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(vm_->gpuvm().va_count(), 0u);
  EXPECT_EQ(vm_->jobs_in_flight(), 0);
  EXPECT_EQ(a_->refs_for_testing(), 1);
}

// The seed's case: a map and an overlapping unmap in one bind queue MAP, then UNMAP of the hole.
TEST_F(BindTest, OverlappingMapAndUnmapInOneBind) {
  const BindOp ops[] = {BindOp::Map(0, 16 * kPage, a_.get(), 0),
                        BindOp::Unmap(4 * kPage, 4 * kPage)};
  std::optional<exec::Exec> holder;
  holder.emplace(exec::Exec::kIgnoreDuplicates | exec::Exec::kInterruptibleWait);
  exec::Exec& exec = *holder;
  std::unique_ptr<BindJob> job = ApplyByHand(exec, ops);
  const auto& e = job->entries();
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].kind, BindEntry::Kind::kMap);
  EXPECT_EQ(e[0].va, 0u);
  EXPECT_EQ(e[0].range, 16 * kPage);
  EXPECT_EQ(e[1].kind, BindEntry::Kind::kUnmap);
  EXPECT_EQ(e[1].va, 4 * kPage);
  EXPECT_EQ(e[1].range, 4 * kPage);
  EXPECT_EQ(e[1].bo.get(), a_.get());  // the unmap holds the BO until cleanup
  EXPECT_EQ(vm_->gpuvm().va_count(), 2u);
  fence::FenceRef f = vm_->PushLocked(queue_->entity(), std::move(job), ops);
  holder.reset();  // unlock
  ASSERT_TRUE(f->Wait().ok());
  EXPECT_EQ(Converged(), "");
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 5 * kPage).valid);
  EXPECT_TRUE(TranslateOnce(vm_->page_table(), 8 * kPage).valid);
}

// Map, partial unmap, re-map of the hole with another BO, all in one list.
TEST_F(BindTest, MapPartialUnmapRemapInOneList) {
  const BindOp ops[] = {BindOp::Map(0, 16 * kPage, a_.get(), 0),
                        BindOp::Unmap(4 * kPage, 4 * kPage),
                        BindOp::Map(4 * kPage, 4 * kPage, b_.get(), 8 * kPage)};
  std::optional<exec::Exec> holder;
  holder.emplace(exec::Exec::kIgnoreDuplicates | exec::Exec::kInterruptibleWait);
  exec::Exec& exec = *holder;
  std::unique_ptr<BindJob> job = ApplyByHand(exec, ops);
  const auto& e = job->entries();
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].kind, BindEntry::Kind::kMap);
  EXPECT_EQ(e[1].kind, BindEntry::Kind::kUnmap);
  EXPECT_EQ(e[1].va, 4 * kPage);
  EXPECT_EQ(e[2].kind, BindEntry::Kind::kMap);
  EXPECT_EQ(e[2].bo.get(), b_.get());
  EXPECT_EQ(e[2].op, 2u);
  EXPECT_EQ(vm_->gpuvm().va_count(), 3u);
  fence::FenceRef f = vm_->PushLocked(queue_->entity(), std::move(job), ops);
  holder.reset();  // unlock
  ASSERT_TRUE(f->Wait().ok());
  EXPECT_EQ(Converged(), "");
  const Translation t = TranslateOnce(vm_->page_table(), 5 * kPage);
  EXPECT_EQ(vm_->HostAddress(t), b_->memory().data() + 9 * kPage);
}

// The worst-case bound covers a bind whose op meets VAs sticking out on both sides.
TEST_F(BindTest, WorstCaseBoundsCoverRemapsOnBothSides) {
  const BindOp setup[] = {BindOp::Map(0, 8 * kPage, a_.get(), 0),
                          BindOp::Map(8 * kPage, 8 * kPage, b_.get(), 0)};
  ASSERT_TRUE(queue_->Bind(setup).ok());
  const BindOp ops[] = {BindOp::MapNull(4 * kPage, 8 * kPage)};
  const BindPlan b = *PlanBind(vm_->gpuvm(), ops);
  EXPECT_EQ(b.vas, 3u);
  EXPECT_EQ(b.entries.size(), 3u);
  EXPECT_EQ(b.removed, 2u);
  std::optional<exec::Exec> holder;
  holder.emplace(exec::Exec::kIgnoreDuplicates | exec::Exec::kInterruptibleWait);
  exec::Exec& exec = *holder;
  std::unique_ptr<BindJob> job = ApplyByHand(exec, ops);
  EXPECT_EQ(job->entries().size(), 3u);  // two hole unmaps and the map: the bound is exact
  fence::FenceRef f = vm_->PushLocked(queue_->entity(), std::move(job), ops);
  holder.reset();  // unlock
  ASSERT_TRUE(f->Wait().ok());
  EXPECT_EQ(Converged(), "");
}

// One bind mapping the same external BO twice adds its out-fence to the BO's resv once (the
// exec reserved one slot per resv); found by bind_diff_test as a crash in Resv::AddFence.
TEST_F(BindTest, SameExternalBoTwiceInOneBind) {
  const BindOp ops[] = {BindOp::Map(0, 4 * kPage, a_.get(), 0),
                        BindOp::Map(8 * kPage, 4 * kPage, a_.get(), 4 * kPage)};
  absl::StatusOr<fence::FenceRef> f = queue_->Submit(ops);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Wait().ok());
  EXPECT_EQ(Converged(), "");
}

// The same with more external BOs than the prealloc step checks one by one (it then sorts the
// list): 20 BOs in pairs sharing a resv, each mapped twice, on the queued path (an in-fence holds
// the job), so the out-fence goes into every resv — once each.
TEST_F(BindTest, ManyExternalBosTwiceInOneBind) {
  std::vector<Ref<Bo>> bos;
  std::vector<BindOp> ops;
  for (int i = 0; i < 20; ++i) {
    bos.push_back(i % 2 == 0 ? Bo::Create(8 * kPage)
                             : Bo::CreateSharingResv(8 * kPage, *bos[i - 1]));
  }
  for (int i = 0; i < 40; ++i) {
    ops.push_back(
        BindOp::Map((256 + 8 * i) * kPage, 4 * kPage, bos[i % 20].get(), 4 * kPage * (i / 20)));
  }
  fence::FenceContext ctx;
  fence::FenceRef gate = ctx.NewFence();
  absl::StatusOr<fence::FenceRef> f = queue_->Submit(ops, {&gate, 1});
  ASSERT_TRUE(f.ok()) << f.status();
  for (const Ref<Bo>& bo : bos) {
    int found = 0;
    for (const auto& e : bo->resv().GetFences(fence::ResvUsage::kBookkeep)) {
      if (e.fence == *f) ++found;
    }
    EXPECT_EQ(found, 1);
  }
  gate->Signal();
  ASSERT_TRUE((*f)->Wait().ok());
  EXPECT_EQ(CheckConverged(*vm_, 256 * kPage, 576 * kPage), "");
  const BindOp unmap = BindOp::Unmap(256 * kPage, 320 * kPage);
  ASSERT_TRUE(queue_->Bind({&unmap, 1}).ok());
}

// Unmapping 4 KiB from the middle of a 2 MiB page leaves the rest mapped, as smaller pages.
TEST_F(BindTest, UnmapSplitsA2MiBPage) {
  Ref<Bo> big = Bo::Create(2 * k2M);
  const BindOp map = BindOp::Map(k2M, k2M, big.get(), 0, PageSize::k2M);
  ASSERT_TRUE(queue_->Bind({&map, 1}).ok());
  EXPECT_EQ(TranslateOnce(vm_->page_table(), k2M).size, PageSize::k2M);
  const BindOp unmap = BindOp::Unmap(k2M + 5 * kPage, kPage);
  ASSERT_TRUE(queue_->Bind({&unmap, 1}).ok());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), k2M + 5 * kPage).valid);
  const Translation t = TranslateOnce(vm_->page_table(), k2M + 6 * kPage);
  ASSERT_TRUE(t.valid);
  EXPECT_NE(t.size, PageSize::k2M);
  EXPECT_EQ(vm_->HostAddress(t), big->memory().data() + 6 * kPage);
  EXPECT_EQ(CheckConverged(*vm_, k2M, 2 * k2M), "");
  queue_.reset();
  vm_.reset();
  EXPECT_EQ(big->refs_for_testing(), 1);
}

// Lock: a cancelled bind waiting for a BO lock returns Cancelled and changes nothing.
TEST_F(BindTest, CancelledLockChangesNothing) {
  std::optional<exec::Exec> holder;
  holder.emplace();
  ASSERT_TRUE(holder->UntilAllLocked([&](exec::Exec& e) { return e.LockObj(a_.get()); }).ok());
  std::stop_source cancel;
  cancel.request_stop();
  const BindOp op = BindOp::Map(0, kPage, a_.get(), 0);
  std::thread t([&] {
    EXPECT_EQ(queue_->Submit({&op, 1}, {}, cancel.get_token()).status().code(),
              absl::StatusCode::kCancelled);
  });
  t.join();
  holder.reset();
  EXPECT_EQ(vm_->gpuvm().va_count(), 0u);
  EXPECT_EQ(a_->refs_for_testing(), 1);
}

// A simulated page-table fault in RunJob makes the VM unusable: the failing job stops mapping,
// later queued jobs still unmap, and Submit fails with FailedPrecondition.
TEST_F(BindTest, RunJobFaultMakesVmUnusableButUnmapsStillRun) {
  const BindOp first = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  ASSERT_TRUE(queue_->Bind({&first, 1}).ok());
  fence::FenceContext ctx;
  fence::FenceRef gate = ctx.NewFence();
  const BindOp failing = BindOp::Map(8 * kPage, 4 * kPage, b_.get(), 0);
  absl::StatusOr<fence::FenceRef> f1 = queue_->Submit({&failing, 1}, {&gate, 1});
  ASSERT_TRUE(f1.ok());
  const BindOp unmap = BindOp::Unmap(0, 4 * kPage);
  absl::StatusOr<fence::FenceRef> f2 = queue_->Submit({&unmap, 1});
  ASSERT_TRUE(f2.ok());
  vm_->InjectRunFault(0);
  gate->Signal();
  ASSERT_TRUE((*f1)->Wait().ok());
  EXPECT_EQ((*f1)->error().code(), absl::StatusCode::kInternal);
  ASSERT_TRUE((*f2)->Wait().ok());
  EXPECT_TRUE(vm_->unusable());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 8 * kPage).valid);  // the map was skipped
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);          // the unmap ran
  EXPECT_EQ(queue_->Submit({&unmap, 1}).status().code(), absl::StatusCode::kFailedPrecondition);
}

// An in-fence carrying an error makes the VM unusable; the job's unmaps still happen.
TEST_F(BindTest, InFenceErrorMakesVmUnusable) {
  const BindOp first = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  ASSERT_TRUE(queue_->Bind({&first, 1}).ok());
  fence::FenceContext ctx;
  fence::FenceRef bad = ctx.NewFence();
  const BindOp ops[] = {BindOp::Unmap(0, 4 * kPage), BindOp::Map(8 * kPage, kPage, b_.get(), 0)};
  absl::StatusOr<fence::FenceRef> f = queue_->Submit(ops, {&bad, 1});
  ASSERT_TRUE(f.ok());
  bad->SetError(absl::AbortedError("producer failed"));
  bad->Signal();
  ASSERT_TRUE((*f)->Wait().ok());
  vm_->WaitIdle();
  EXPECT_TRUE(vm_->unusable());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 8 * kPage).valid);
}

// A bind job killed with its queue never runs; its unmaps are still executed (catch-up) and
// its references dropped; the VM becomes unusable.
TEST_F(BindTest, KilledJobStillUnmaps) {
  const BindOp first = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  ASSERT_TRUE(queue_->Bind({&first, 1}).ok());
  fence::FenceContext ctx;
  fence::FenceRef gate = ctx.NewFence();
  const BindOp unmap = BindOp::Unmap(0, 4 * kPage);
  ASSERT_TRUE(queue_->Submit({&unmap, 1}, {&gate, 1}).ok());
  queue_->entity().Kill();
  gate->Signal();
  vm_->WaitIdle();
  EXPECT_TRUE(vm_->unusable());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);
  EXPECT_EQ(a_->refs_for_testing(), 1);
}

// Close unmaps everything and drops every reference; later binds fail.
TEST_F(BindTest, CloseUnmapsEverything) {
  const BindOp ops[] = {BindOp::Map(0, 4 * kPage, a_.get(), 0), BindOp::MapNull(8 * kPage, kPage),
                        BindOp::Map(16 * kPage, 4 * kPage, b_.get(), 0)};
  ASSERT_TRUE(queue_->Bind(ops).ok());
  EXPECT_GT(a_->refs_for_testing(), 1);
  vm_->Close();
  EXPECT_EQ(vm_->gpuvm().va_count(), 0u);
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 8 * kPage).valid);
  EXPECT_EQ(a_->refs_for_testing(), 1);
  EXPECT_EQ(b_->refs_for_testing(), 1);
  EXPECT_EQ(queue_->Submit(ops).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Several queues whose in-fences signal in random order, and several submitting threads: the
// page table converges to the tree.
TEST_F(BindTest, QueuesAndThreadsConverge) {
  std::vector<std::unique_ptr<BindQueue>> queues;
  for (int i = 0; i < 3; ++i) queues.push_back(*BindQueue::Create(*vm_));
  fence::FenceContext ctx;
  std::vector<fence::FenceRef> gates;
  std::vector<fence::FenceRef> outs;
  absl::Mutex mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 60; ++i) {
        const uint64_t va = (rng() % 64) * kPage;
        const uint64_t len = (1 + rng() % 8) * kPage;
        BindOp op = (rng() % 3 == 0)   ? BindOp::Unmap(va, len)
                    : (rng() % 2 == 0) ? BindOp::MapNull(va, len)
                                       : BindOp::Map(va, len, (t % 2 ? a_ : b_).get(), va);
        fence::FenceRef gate;
        {
          absl::MutexLock l(&mu);
          gate = ctx.NewFence();
          gates.push_back(gate);
        }
        absl::StatusOr<fence::FenceRef> f = queues[t]->Submit({&op, 1}, {&gate, 1});
        ASSERT_TRUE(f.ok()) << f.status();
        absl::MutexLock l(&mu);
        outs.push_back(*f);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::mt19937 rng(7);
  std::shuffle(gates.begin(), gates.end(), rng);
  for (auto& g : gates) g->Signal();
  for (auto& f : outs) ASSERT_TRUE(f->Wait().ok());
  for (auto& f : outs) EXPECT_TRUE(f->error().ok());
  EXPECT_FALSE(vm_->unusable());
  EXPECT_EQ(Converged(), "");
  queues.clear();
}

// Several queues: a bind on queue B whose in-fence is signalled completes while queue A's bind
// on another range still waits for its in-fence (before per-range tracking every bind job
// depended on the VM's previous one, and B waited for A).
TEST_F(BindTest, DisjointRangesFromTwoQueuesCompleteOutOfOrder) {
  std::unique_ptr<BindQueue> qb = *BindQueue::Create(*vm_);
  fence::FenceContext ctx;
  fence::FenceRef gate_a = ctx.NewFence();
  fence::FenceRef gate_b = ctx.NewFence();
  const BindOp op_a = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  const BindOp op_b = BindOp::Map(16 * kPage, 4 * kPage, b_.get(), 0);
  absl::StatusOr<fence::FenceRef> fa = queue_->Submit({&op_a, 1}, {&gate_a, 1});
  ASSERT_TRUE(fa.ok());
  absl::StatusOr<fence::FenceRef> fb = qb->Submit({&op_b, 1}, {&gate_b, 1});
  ASSERT_TRUE(fb.ok());
  gate_b->Signal();
  absl::StatusOr<absl::Duration> waited = (*fb)->Wait(absl::Seconds(30));
  ASSERT_TRUE(waited.ok()) << "B waited for A: " << waited.status();
  EXPECT_FALSE((*fa)->IsSignaledFlag());
  EXPECT_TRUE(TranslateOnce(vm_->page_table(), 16 * kPage).valid);
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);
  gate_a->Signal();
  ASSERT_TRUE((*fa)->Wait().ok());
  EXPECT_EQ(Converged(), "");
  qb.reset();
}

// Several queues: a bind on queue B overlapping queue A's pending bind depends on it, so the page
// table ends as the tree says (B's unmap after A's map) although B's in-fence signals first.
TEST_F(BindTest, OverlappingRangeFromAnotherQueueWaitsForItsWork) {
  std::unique_ptr<BindQueue> qb = *BindQueue::Create(*vm_);
  std::unique_ptr<BindQueue> qc = *BindQueue::Create(*vm_);
  fence::FenceContext ctx;
  fence::FenceRef gate_a = ctx.NewFence();
  const BindOp map = BindOp::Map(0, 8 * kPage, a_.get(), 0);
  const BindOp unmap = BindOp::Unmap(2 * kPage, 2 * kPage);
  absl::StatusOr<fence::FenceRef> fa = queue_->Submit({&map, 1}, {&gate_a, 1});
  ASSERT_TRUE(fa.ok());
  absl::StatusOr<fence::FenceRef> fb = qb->Submit({&unmap, 1});
  ASSERT_TRUE(fb.ok());
  // A later bind on a third queue and a disjoint range completes: the scheduler ran what it could.
  const BindOp other = BindOp::MapNull(64 * kPage, kPage);
  ASSERT_TRUE(qc->Bind({&other, 1}).ok());
  EXPECT_FALSE((*fb)->IsSignaledFlag());
  gate_a->Signal();
  ASSERT_TRUE((*fb)->Wait().ok());
  EXPECT_TRUE((*fa)->IsSignaledFlag());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 2 * kPage).valid);
  EXPECT_TRUE(TranslateOnce(vm_->page_table(), 5 * kPage).valid);
  EXPECT_EQ(Converged(), "");
  qb.reset();
  qc.reset();
}

// A killed bind job on queue A and a bind on queue B over the same range: B depends on A, sees
// A's error, so A's unmaps are caught up before B's entries, B's maps are skipped, the VM is
// unusable, and no reference is left behind. A later bind over the range fails.
TEST_F(BindTest, KilledJobOnOneQueueIsCaughtUpBeforeAnOverlappingBindOfAnother) {
  std::unique_ptr<BindQueue> qb = *BindQueue::Create(*vm_);
  const BindOp first = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  ASSERT_TRUE(queue_->Bind({&first, 1}).ok());
  fence::FenceContext ctx;
  fence::FenceRef gate = ctx.NewFence();
  const BindOp unmap = BindOp::Unmap(0, 4 * kPage);
  absl::StatusOr<fence::FenceRef> fa = queue_->Submit({&unmap, 1}, {&gate, 1});
  ASSERT_TRUE(fa.ok());
  const BindOp remap = BindOp::Map(kPage, 2 * kPage, b_.get(), 0);
  absl::StatusOr<fence::FenceRef> fb = qb->Submit({&remap, 1});
  ASSERT_TRUE(fb.ok());
  queue_->entity().Kill();
  gate->Signal();
  ASSERT_TRUE((*fb)->Wait().ok());
  vm_->WaitIdle();
  EXPECT_TRUE(vm_->unusable());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);      // A's unmap ran
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), kPage).valid);  // B's map was skipped
  EXPECT_EQ(qb->Submit({&unmap, 1}).status().code(), absl::StatusCode::kFailedPrecondition);
  qb.reset();
}

// Submit pre-allocates under the VM resv before it locks the BOs; when a BO lock backs off
// (everything unlocked) and another bind changes the tree meanwhile, the pre-allocation is made
// again on the new tree. Here a map over A's VA waits for B, held by an older transaction, while
// another thread unmaps A's VA: the map must not apply its stale plan (which unmaps a VA that is
// gone) and ends as the only VA of the range.
TEST_F(BindTest, PreallocationIsMadeAgainWhenTheTreeChangedDuringABackoff) {
  const BindOp map_a = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  ASSERT_TRUE(queue_->Bind({&map_a, 1}).ok());
  std::optional<exec::Exec> holder;
  holder.emplace();  // older than the map's transaction
  ASSERT_TRUE(holder->UntilAllLocked([&](exec::Exec& e) { return e.LockObj(b_.get()); }).ok());
  const BindOp map_b = BindOp::Map(0, 4 * kPage, b_.get(), 0);
  absl::Status mapped;
  std::thread mapper([&] { mapped = queue_->Bind({&map_b, 1}); });
  // Let the map plan, meet B and back off (it then waits for B holding nothing); if it has not
  // got there yet, the unmap below simply comes first.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::thread unmapper([&] {
    const BindOp unmap = BindOp::Unmap(0, 4 * kPage);
    EXPECT_TRUE(queue_->Bind({&unmap, 1}).ok());
  });
  unmapper.join();
  holder.reset();  // B free: the map goes on
  mapper.join();
  ASSERT_TRUE(mapped.ok()) << mapped;
  vm_->WaitIdle();
  const Gpuva* va = vm_->gpuvm().FindFirst(0, 4 * kPage);
  ASSERT_NE(va, nullptr);
  EXPECT_EQ(va->bo, b_.get());
  EXPECT_EQ(va->range, 4 * kPage);
  EXPECT_EQ(vm_->gpuvm().va_count(), 1u + (vm_->gpuvm().kernel_node().range != 0));
  EXPECT_EQ(Converged(), "");
}

}  // namespace
}  // namespace vm
