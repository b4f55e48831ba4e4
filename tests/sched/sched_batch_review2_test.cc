// The second review of the batched rounds (issue 13), findings R1, R3, R4 and R5 (R2 went with
// the deferred PrepareJob that R4 removed): each test builds the reviewer's scenario
// deterministically and checks what scheduler.h promises.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
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

// R1: a Stop on another thread while the work item resolves J's dependencies (mu_ released):
// J is still selected. Its credits are charged once and returned once: after Stop none are in
// use, and after Start and J's completion none either (before: credit_count_ wrapped).
TEST(SchedBatchReview2, StopFromAnotherThreadDuringSelectionBalancesCredits) {
  HookBackend backend;
  backend.SetReturnNull(true);
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted j = SubmitMock(e.get());
    std::thread stopper;
    absl::Notification started;
    backend.SetPrepare([&](Job& job) -> fence::FenceRef {
      if (job.finished() == j.finished && !started.HasBeenNotified()) {
        stopper = std::thread([&] { s->Stop(nullptr); });
        while (!s->IsStopped()) std::this_thread::yield();  // Stop waits for the round
        started.Notify();
      }
      return nullptr;
    });
    s->Start(absl::OkStatus());
    ASSERT_TRUE(started.WaitForNotificationWithTimeout(kWait));
    stopper.join();
    EXPECT_EQ(s->credit_count(), 0u) << "Stop returned credits never charged";
    EXPECT_FALSE(j.scheduled->IsSignaledFlag());
    s->Start(absl::OkStatus());
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
    EXPECT_TRUE(j.finished->error().ok()) << j.finished->error();
    EXPECT_EQ(backend.runs(), 1);
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// R3 (a): Stop on the executor thread inside the backend's RunJob(J), J with a hardware fence.
// Stop leaves J to its RunJob, which detaches it like Stop the others (hardware fence dropped,
// credits returned); ResubmitJobs runs it again, Start charges it and attaches the new hardware
// fence once; it finishes once, with that fence.
TEST(SchedBatchReview2, StopInsideRunJobThenStart) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    absl::Notification stopped;
    backend.SetAfterRun([&](Job&) {
      s->Stop(nullptr);
      stopped.Notify();
    });
    Submitted j = SubmitMock(e.get());
    ASSERT_TRUE(stopped.WaitForNotificationWithTimeout(kWait));
    ASSERT_TRUE(j.scheduled->Wait(kWait).ok());
    backend.SetAfterRun(nullptr);
    s->ResubmitJobs();  // waits for J's RunJob to settle J (scheduler.h)
    s->Start(absl::OkStatus());
    EXPECT_EQ(s->credit_count(), 1u);
    EXPECT_FALSE(j.finished->IsSignaledFlag());
    EXPECT_EQ(backend.Advance(2), 2);  // the first hardware fence has no callback any more
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
    EXPECT_TRUE(j.finished->error().ok()) << j.finished->error();
    EXPECT_EQ(backend.runs(), 2);
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// R3: Stop and Start, both inside the backend's RunJob(J): J goes on as if nothing happened.
TEST(SchedBatchReview2, StopAndStartInsideRunJob) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    backend.SetAfterRun([&](Job&) {
      s->Stop(nullptr);
      s->Start(absl::OkStatus());
    });
    Submitted j = SubmitMock(e.get());
    ASSERT_TRUE(j.scheduled->Wait(kWait).ok());
    const absl::Time deadline = absl::Now() + kWait;
    while (backend.Advance(1) == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
    EXPECT_TRUE(j.finished->error().ok()) << j.finished->error();
    EXPECT_EQ(backend.runs(), 1);
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// R3 (b): Stop from a callback on J's scheduled fence (the executor thread, in RunJob(J)), J
// with a hardware fence not yet attached: no self-deadlock; J is detached (its hardware fence
// dropped), so a Start without ResubmitJobs fails it with ECANCELED, once (drm_sched_start).
TEST(SchedBatchReview2, StopFromScheduledCallbackWithHardwareFence) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted j = SubmitMock(e.get());
    absl::Notification stopped;
    fence::FenceCallback cb;
    ASSERT_TRUE(j.scheduled
                    ->AddCallback(&cb,
                                  [&](fence::Fence&) {
                                    s->Stop(nullptr);
                                    stopped.Notify();
                                  })
                    .ok());
    s->Start(absl::OkStatus());
    ASSERT_TRUE(stopped.WaitForNotificationWithTimeout(kWait)) << "Stop deadlocked";
    s->Start(absl::OkStatus());
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
    EXPECT_TRUE(absl::IsCancelled(j.finished->error())) << j.finished->error();
    EXPECT_EQ(backend.Advance(1), 1);  // its hardware fence reaches nothing
    EXPECT_EQ(backend.runs(), 1);
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// R3 (b) without a hardware fence: J completes in its RunJob; the Start after the Stop from its
// scheduled fence's callback does not complete it again.
TEST(SchedBatchReview2, StopFromScheduledCallbackJobCompletingAtOnce) {
  HookBackend backend;
  backend.SetReturnNull(true);
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted j = SubmitMock(e.get());
    absl::Notification stopped;
    fence::FenceCallback cb;
    ASSERT_TRUE(j.scheduled
                    ->AddCallback(&cb,
                                  [&](fence::Fence&) {
                                    s->Stop(nullptr);
                                    stopped.Notify();
                                  })
                    .ok());
    s->Start(absl::OkStatus());
    ASSERT_TRUE(stopped.WaitForNotificationWithTimeout(kWait));
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
    s->Start(absl::OkStatus());
    EXPECT_TRUE(j.finished->error().ok()) << j.finished->error();
    EXPECT_EQ(backend.runs(), 1);
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// R4: A, B and K pushed together (FIFO); B depends on A (same scheduler), and B's PrepareJob
// returns K's finished fence. Only B's entity waits for it: K runs, then B (before: K was
// selected behind B and the whole batch waited for K: deadlock).
TEST(SchedBatchReview2, PrepareJobFenceOnALaterJobParksOnlyItsEntity) {
  HookBackend backend;
  backend.SetReturnNull(true);
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto ea = *Entity::Create({s.get()});
    auto eb = *Entity::Create({s.get()});
    auto ek = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted a = SubmitMock(ea.get());
    Submitted b = SubmitMock(eb.get(), absl::ZeroDuration(), {a.finished});
    Submitted k = SubmitMock(ek.get());
    std::atomic<int> b_prepares{0};
    backend.SetPrepare([&](Job& job) -> fence::FenceRef {
      if (job.finished() == b.finished && b_prepares.fetch_add(1) == 0) return k.finished;
      return nullptr;
    });
    s->Start(absl::OkStatus());
    ASSERT_TRUE(b.finished->Wait(kWait).ok())
        << "B never ran: " << backend.Events({a.finished, b.finished, k.finished});
    EXPECT_TRUE(k.finished->IsSignaledFlag());
    EXPECT_EQ(backend.Events({a.finished, b.finished, k.finished}), "P0 R0 P1 P2 R2 P1 R1 ");
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// R5: a round selects G1 and G2 of one entity; a callback on G1's finished fence marks the
// entity's context guilty and stops the scheduler (G2 selected, not run). After Start, G2 is
// cancelled as a guilty context's job is at selection (before: it ran without an error).
TEST(SchedBatchReview2, GuiltyContextsSelectedJobIsCancelledAfterRecovery) {
  HookBackend backend;
  backend.SetReturnNull(true);
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto guilty = std::make_shared<std::atomic<bool>>(false);
    auto e = *Entity::Create({s.get()}, Priority::kNormal, guilty);
    s->Stop(nullptr);
    Submitted g1 = SubmitMock(e.get());
    Submitted g2 = SubmitMock(e.get());
    absl::Notification stopped;
    fence::FenceCallback cb;
    ASSERT_TRUE(g1.finished
                    ->AddCallback(&cb,
                                  [&](fence::Fence&) {
                                    guilty->store(true);
                                    s->Stop(nullptr);
                                    stopped.Notify();
                                  })
                    .ok());
    s->Start(absl::OkStatus());
    ASSERT_TRUE(stopped.WaitForNotificationWithTimeout(kWait));
    EXPECT_FALSE(g2.scheduled->IsSignaledFlag());
    s->Start(absl::OkStatus());
    ASSERT_TRUE(g2.finished->Wait(kWait).ok());
    EXPECT_TRUE(absl::IsCancelled(g2.finished->error())) << g2.finished->error();
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

}  // namespace
}  // namespace sched
