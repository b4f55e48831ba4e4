// The lead's review of the batched rounds (issue 13), findings 1, 4, 5, 6 and 7 (9:
// sched_basic_test.cc, InfinitePastDeadlineForwardedAsInfinitePast): each test
// builds the reviewer's scenario deterministically (jobs queued while the scheduler is stopped,
// so that one round selects them all) and checks what scheduler.h and backend.h promise.
#include <atomic>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/sched_fence.h"
#include "sched/scheduler.h"
#include "tests/sched/hook_backend.h"
#include "tests/sched/mock_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::HookBackend;
using testing::kWait;
using testing::MockBackend;
using testing::Opts;
using testing::Submitted;
using testing::SubmitMock;

// Records RunJob per job (by finished fence) and whether the scheduler was stopped at the time.
class CountingBackend : public MockBackend {
 public:
  absl::StatusOr<fence::FenceRef> RunJob(Job& job) override {
    {
      absl::MutexLock l(&mu_);
      ++runs_[job.finished().get()];
      if (Scheduler* sch = scheduler.load(); sch != nullptr && sch->IsStopped()) {
        ++runs_while_stopped_;
      }
    }
    return MockBackend::RunJob(job);
  }
  int runs(const fence::FenceRef& finished) {
    absl::MutexLock l(&mu_);
    auto it = runs_.find(finished.get());
    return it == runs_.end() ? 0 : it->second;
  }
  int runs_while_stopped() {
    absl::MutexLock l(&mu_);
    return runs_while_stopped_;
  }
  std::atomic<Scheduler*> scheduler{nullptr};

 private:
  absl::Mutex mu_;
  std::map<const fence::Fence*, int> runs_ ABSL_GUARDED_BY(mu_);
  int runs_while_stopped_ ABSL_GUARDED_BY(mu_) = 0;
};

// Finding 1: a round selects A and B; A completes in RunJob and a callback on its finished fence
// stops the scheduler (on the executor thread, mid-batch). B must not run while stopped; Stop
// returns its credits; after Start it runs exactly once, and the credits balance.
TEST(SchedBatchReview, StopFromACallbackMidBatchThenStart) {
  CountingBackend backend;
  backend.SetReturnNull(true);  // jobs complete inside RunJob
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  backend.scheduler = s.get();
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted a = SubmitMock(e.get());
    Submitted b = SubmitMock(e.get());
    absl::Notification stopped;
    fence::FenceCallback cb;
    ASSERT_TRUE(a.finished
                    ->AddCallback(&cb,
                                  [&](fence::Fence&) {
                                    s->Stop(nullptr);
                                    stopped.Notify();
                                  })
                    .ok());
    s->Start(absl::OkStatus());  // one round selects A and B
    ASSERT_TRUE(stopped.WaitForNotificationWithTimeout(kWait));
    s->Stop(nullptr);  // a second Stop: waits for the round to end; returns no credit twice
    EXPECT_FALSE(b.scheduled->IsSignaledFlag()) << "B ran while the scheduler was stopped";
    EXPECT_EQ(s->credit_count(), 0u) << "Stop did not return the credits of the job not run";
    int on_hardware = 0;
    s->ForEachPendingJob([&](Job&) { ++on_hardware; });
    EXPECT_EQ(on_hardware, 0) << "a job never handed to the backend counted as on the hardware";
    s->Start(absl::OkStatus());
    ASSERT_TRUE(b.finished->Wait(kWait).ok());
    EXPECT_TRUE(b.finished->error().ok()) << b.finished->error();
    EXPECT_EQ(backend.runs(a.finished), 1);
    EXPECT_EQ(backend.runs(b.finished), 1);
    EXPECT_EQ(backend.runs_while_stopped(), 0);
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// Finding 1, the whole recovery inside the callback (Stop, then Start): B runs once, after A.
TEST(SchedBatchReview, StopAndStartFromACallbackMidBatch) {
  CountingBackend backend;
  backend.SetReturnNull(true);
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted a = SubmitMock(e.get());
    Submitted b = SubmitMock(e.get());
    fence::FenceCallback cb;
    ASSERT_TRUE(a.finished
                    ->AddCallback(&cb,
                                  [&](fence::Fence&) {
                                    s->Stop(nullptr);
                                    s->Start(absl::OkStatus());
                                  })
                    .ok());
    s->Start(absl::OkStatus());
    ASSERT_TRUE(b.finished->Wait(kWait).ok());
    EXPECT_TRUE(b.finished->error().ok()) << b.finished->error();
    EXPECT_EQ(backend.runs(b.finished), 1);
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// Finding 4: limit 3, X (1 credit) on the hardware; one round selects L1, then M1 — whose
// PrepareJob pushes a high-priority H1 and completes X — then would select L2 with X's freed
// credit. H1's push returned before that credit was freed, so H1 competes for it (scheduler.h)
// and, by priority, wins: L2 must not be run before H1.
TEST(SchedBatchReview, CreditFreedDuringARoundGoesToTheNextRound) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.credit_limit = 3, .policy = Policy::kFifo}));
  {
    auto ex = *Entity::Create({s.get()});
    auto el = *Entity::Create({s.get()});
    auto em = *Entity::Create({s.get()});
    auto eh = *Entity::Create({s.get()}, Priority::kHigh);
    Submitted x = SubmitMock(ex.get());
    ASSERT_TRUE(x.scheduled->Wait(kWait).ok());
    // Keep X on the hardware across a Stop: resubmitted, then re-attached by Start.
    s->Stop(nullptr);
    s->ResubmitJobs();
    Submitted l1 = SubmitMock(el.get());
    Submitted m1 = SubmitMock(em.get());
    Submitted l2 = SubmitMock(el.get());
    Submitted h1;
    backend.SetPrepare([&](Job& job) -> fence::FenceRef {
      if (job.finished() == m1.finished) {
        h1 = SubmitMock(eh.get());
        // X's hardware fences: the first (detached by Stop) and the resubmitted one.
        EXPECT_EQ(backend.Advance(2), 2);
      }
      return nullptr;
    });
    s->Start(absl::OkStatus());
    ASSERT_TRUE(m1.scheduled->Wait(kWait).ok());
    // Whichever of H1 and L2 runs next: with L1 and M1 on the hardware only one credit is free.
    const absl::Time deadline = absl::Now() + kWait;
    while (!l2.scheduled->IsSignaledFlag() &&
           (h1.scheduled == nullptr || !h1.scheduled->IsSignaledFlag()) &&
           absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    ASSERT_NE(h1.scheduled, nullptr);
    EXPECT_TRUE(h1.scheduled->IsSignaledFlag()) << "H1 did not get X's credit";
    EXPECT_FALSE(l2.scheduled->IsSignaledFlag())
        << "L2 took the credit X freed during the round: " << backend.Events(
               {x.finished, l1.finished, m1.finished, l2.finished, h1.finished});
    backend.Advance(100);  // L1, M1, H1: L2 gets the credits
    ASSERT_TRUE(l2.scheduled->Wait(kWait).ok());
    backend.Advance(100);
    ASSERT_TRUE(l2.finished->Wait(kWait).ok());
    ASSERT_TRUE(h1.finished->Wait(kWait).ok());
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// Finding 5: G runs, the scheduler is stopped, G's context is found guilty and ResubmitJobs gives
// G an error (ECANCELED) and runs it again. C (another entity, depending on G's finished fence),
// pushed while stopped, must wait for G's finished fence after Start — not run at once because G
// was selected in an earlier round. D, independent and pushed after C, runs first (FIFO).
TEST(SchedBatchReview, ResubmittedGuiltyDependencyIsWaitedForUntilFinished) {
  MockBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto eg = *Entity::Create({s.get()});
    auto ec = *Entity::Create({s.get()});
    auto ed = *Entity::Create({s.get()});
    Submitted g = SubmitMock(eg.get());
    ASSERT_TRUE(g.scheduled->Wait(kWait).ok());
    s->Stop(nullptr);
    Submitted c = SubmitMock(ec.get(), absl::ZeroDuration(), {g.finished});
    Submitted d = SubmitMock(ed.get());
    Scheduler::IncreaseKarma(*g.job);  // karma 1 > hang_limit 0: G's context is guilty
    s->ResubmitJobs();
    ASSERT_FALSE(g.finished->error().ok());
    s->Start(absl::OkStatus());
    ASSERT_TRUE(d.scheduled->Wait(kWait).ok());
    EXPECT_FALSE(c.scheduled->IsSignaledFlag())
        << "C ran while its errored dependency G had not finished";
    backend.Advance(2);  // G's first and resubmitted hardware fences
    ASSERT_TRUE(g.finished->Wait(kWait).ok());
    ASSERT_TRUE(c.scheduled->Wait(kWait).ok());
    backend.Advance(100);
    ASSERT_TRUE(c.finished->Wait(kWait).ok());
    ASSERT_TRUE(d.finished->Wait(kWait).ok());
  }
  s.reset();
}

// Finding 6: B depends on A (same scheduler, another entity) and both are selected in one round:
// PrepareJob(B) comes only after RunJob(A), as in the kernel (backend.h).
TEST(SchedBatchReview, PrepareJobOfADependantFollowsItsDependencysRunJob) {
  HookBackend backend;
  backend.SetReturnNull(true);
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto ea = *Entity::Create({s.get()});
    auto eb = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted a = SubmitMock(ea.get());
    Submitted b = SubmitMock(eb.get(), absl::ZeroDuration(), {a.finished});
    s->Start(absl::OkStatus());
    ASSERT_TRUE(b.finished->Wait(kWait).ok());
    EXPECT_EQ(backend.Events({a.finished, b.finished}), "P0 R0 P1 R1 ");
  }
  s.reset();
}

// Finding 6, B's PrepareJob (after A's RunJob) returns a fence: B waits for it, and only B's
// entity does (second review, R4: C runs meanwhile; the deferred PrepareJob that held up the rest
// of the round is gone); B then gets its final PrepareJob call.
TEST(SchedBatchReview, DeferredPrepareJobFenceIsWaitedFor) {
  HookBackend backend;
  backend.SetReturnNull(true);
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto ea = *Entity::Create({s.get()});
    auto eb = *Entity::Create({s.get()});
    auto ec = *Entity::Create({s.get()});
    fence::FenceRef gate = fence::Fence::Create(fence::FenceContext::Allocate(), 1);
    s->Stop(nullptr);
    Submitted a = SubmitMock(ea.get());
    Submitted b = SubmitMock(eb.get(), absl::ZeroDuration(), {a.finished});
    Submitted c = SubmitMock(ec.get());
    std::atomic<int> b_prepares{0};
    backend.SetPrepare([&](Job& job) -> fence::FenceRef {
      if (job.finished() == b.finished && b_prepares.fetch_add(1) == 0) return gate;
      return nullptr;
    });
    s->Start(absl::OkStatus());
    ASSERT_TRUE(a.finished->Wait(kWait).ok());
    ASSERT_TRUE(c.finished->Wait(kWait).ok()) << "C waited for B's PrepareJob fence";
    ASSERT_EQ(b_prepares.load(), 1);
    EXPECT_FALSE(b.scheduled->IsSignaledFlag()) << "B ran before its PrepareJob fence signalled";
    gate->Signal();
    ASSERT_TRUE(b.finished->Wait(kWait).ok());
    EXPECT_EQ(b_prepares.load(), 2);
    // A's round ends at B (A selected, not run); the next one prepares B, which waits, and C.
    EXPECT_EQ(backend.Events({a.finished, b.finished, c.finished}), "P0 R0 P1 P2 R2 P1 R1 ");
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// Finding 7: with a backend that completes every job at once (no hardware time), the fair policy
// still serves a normal and a low priority entity in their weight ratio (kernel vruntime shifts:
// NORMAL 4, LOW 7, so 8 normal jobs per low one), not one entity's whole queue first.
TEST(SchedBatchReview, FairPolicyWeighsJobsThatCompleteAtOnce) {
  HookBackend backend;
  backend.SetReturnNull(true);
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFair}));
  {
    auto normal = *Entity::Create({s.get()}, Priority::kNormal);
    auto low = *Entity::Create({s.get()}, Priority::kLow);
    constexpr int kJobs = 600;
    s->Stop(nullptr);
    std::vector<fence::FenceRef> low_jobs;
    for (int i = 0; i < kJobs; ++i) {
      SubmitMock(normal.get());
      low_jobs.push_back(SubmitMock(low.get()).finished);
    }
    s->Start(absl::OkStatus());
    ASSERT_TRUE(low_jobs.back()->Wait(kWait).ok());
    // Among the first 540 jobs run, the low entity's share (8:1 gives 60).
    std::vector<const fence::Fence*> order = backend.RunOrder();
    ASSERT_EQ(order.size(), 2u * kJobs);
    std::set<const fence::Fence*> low_set;
    for (const auto& f : low_jobs) low_set.insert(f.get());
    int low_runs = 0;
    for (int i = 0; i < 540; ++i) low_runs += low_set.count(order[i]);
    EXPECT_GE(low_runs, 30) << "the low priority entity was starved";
    EXPECT_LE(low_runs, 120) << "priority weighting lost";
  }
  s.reset();
}

}  // namespace
}  // namespace sched
