// The fourth review of the batched rounds (issue 13), findings A-C (adapted from the reviewer's
// reproductions). A: a Stop on the executor thread inside RunJob(J) when J's hardware fence has
// already signalled completes J with that fence's status (as Stop completes every job whose
// fence signalled), instead of detaching it. B: the TDR timeout counts from the last hand-off to
// the backend, not from the round's selection. C: at teardown a killed job never signals before
// the pending job it is chained behind.
#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "tests/sched/hook_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::HookBackend;
using testing::kWait;
using testing::Opts;
using testing::Submitted;
using testing::SubmitMock;

// Submits J on `e` and Stops `s` inside the backend's RunJob(J) (executor thread), after
// `complete_first` (true: the hardware completes J, OK, before RunJob returns). Returns once
// the Stop returned; the hook is removed.
Submitted SubmitAndStopInsideRunJob(HookBackend& backend, Scheduler& s, Entity* e,
                                    bool complete_first) {
  absl::Notification stopped;
  backend.SetAfterRun([&](Job&) {
    if (complete_first) {
      EXPECT_EQ(backend.Advance(1), 1);
    }
    s.Stop(nullptr);
    stopped.Notify();
  });
  Submitted j = SubmitMock(e);
  EXPECT_TRUE(stopped.WaitForNotificationWithTimeout(kWait));
  backend.SetAfterRun(nullptr);
  return j;
}

// A, Stop inside the backend's RunJob(J), after the hardware completed J (OK): J finishes OK at
// Start, is not failed with ECANCELED, and no ResubmitJobs would run it again (it is finished).
TEST(SchedBatchReview4, StopInRunJobWithSignalledHardwareFenceCompletesJob) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    Submitted j = SubmitAndStopInsideRunJob(backend, *s, e.get(), /*complete_first=*/true);
    // Waits (another thread) until RunJob settled J: completed, so ResubmitJobs skips it.
    s->ResubmitJobs();
    EXPECT_EQ(backend.runs(), 1) << "J, completed on the hardware, was run again";
    s->Start(absl::OkStatus());
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
    EXPECT_TRUE(j.finished->error().ok())
        << "J completed OK on the hardware, finished with " << j.finished->error();
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// A, same with the hardware fence's error, and the Stop from a callback of J's scheduled fence
// (also inside RunJob(J) on the executor thread): J finishes with the hardware fence's error.
TEST(SchedBatchReview4, StopFromScheduledCallbackWithSignalledHardwareFenceKeepsItsError) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted j = SubmitMock(e.get());
    backend.SetAfterRun([&](Job& job) {
      auto& mj = static_cast<testing::MockJob&>(job);
      mj.hw->SetError(absl::DataLossError("hardware error"));
      ASSERT_EQ(backend.Advance(1), 1);
    });
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
    backend.SetAfterRun(nullptr);
    s->Start(absl::OkStatus());
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
    EXPECT_EQ(j.finished->error().code(), absl::StatusCode::kDataLoss)
        << "J's hardware fence failed with DataLoss, J finished with " << j.finished->error();
    EXPECT_EQ(backend.runs(), 1);
    EXPECT_EQ(s->credit_count(), 0u);
  }
  s.reset();
}

// A, the other side of the rule: the hardware fence has not signalled when RunJob(J) settles J,
// so J is detached as before (ECANCELED at a Start without ResubmitJobs).
TEST(SchedBatchReview4, StopInRunJobWithUnsignalledHardwareFenceStillDetaches) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    Submitted j = SubmitAndStopInsideRunJob(backend, *s, e.get(), /*complete_first=*/false);
    int pending = 0;
    s->ForEachPendingJob([&](Job&) { ++pending; });  // waits until RunJob settled J
    EXPECT_EQ(pending, 1);
    EXPECT_EQ(s->credit_count(), 0u) << "a detached job holds no credits";
    s->Start(absl::OkStatus());
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
    EXPECT_EQ(j.finished->error().code(), absl::StatusCode::kCancelled) << j.finished->error();
    backend.Advance(1);  // the dropped hardware fence: nothing reaches the job any more
  }
  s.reset();
}

// B: a round selects two jobs; the first one's RunJob takes three timeouts, so the deadline set
// at selection passes before the second is handed to the backend. The head is given to
// TimedOutJob no earlier than one timeout after that hand-off (scheduler.h: the timer restarts
// whenever a job is handed to the backend). A lower bound the scheduler guarantees (it compares
// the clock with the deadline), not a timing measurement.
class TimeoutRecordingBackend : public HookBackend {
 public:
  TimeoutStatus TimedOutJob(Job& job) override {
    {
      absl::MutexLock l(&times_mu_);
      if (first_timeout_ == absl::InfiniteFuture()) first_timeout_ = absl::Now();
    }
    if (!timed_out_.HasBeenNotified()) timed_out_.Notify();  // on the executor thread only
    return HookBackend::TimedOutJob(job);  // fails it with ETIMEDOUT
  }
  void RecordHandOff() {
    absl::MutexLock l(&times_mu_);
    last_hand_off_ = absl::Now();
  }
  absl::Duration FirstTimeoutAfterLastHandOff() {
    absl::MutexLock l(&times_mu_);
    return first_timeout_ - last_hand_off_;
  }
  absl::Notification timed_out_;

 private:
  absl::Mutex times_mu_;
  absl::Time first_timeout_ ABSL_GUARDED_BY(times_mu_) = absl::InfiniteFuture();
  absl::Time last_hand_off_ ABSL_GUARDED_BY(times_mu_) = absl::InfinitePast();
};

TEST(SchedBatchReview4, TimeoutCountsFromTheLastHandOffNotTheSelection) {
  constexpr absl::Duration kTimeout = absl::Milliseconds(100);
  TimeoutRecordingBackend backend;
  std::atomic<int> n{0};
  backend.SetAfterRun([&](Job&) {
    if (n.fetch_add(1) == 0) absl::SleepFor(3 * kTimeout);  // a slow RunJob of the first job
    backend.RecordHandOff();  // still inside RunJob: before the scheduler can see it returned
  });
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo, .timeout = kTimeout}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted a = SubmitMock(e.get());
    Submitted b = SubmitMock(e.get());
    s->Start(absl::OkStatus());  // one round selects both
    ASSERT_TRUE(backend.timed_out_.WaitForNotificationWithTimeout(kWait));
    EXPECT_EQ(n.load(), 2);
    const absl::Duration after = backend.FirstTimeoutAfterLastHandOff();
    EXPECT_GE(after, kTimeout) << "TimedOutJob " << absl::FormatDuration(after)
                               << " after the last job was handed to the backend (timeout "
                               << absl::FormatDuration(kTimeout) << ")";
    ASSERT_TRUE(a.finished->Wait(kWait).ok());  // both time out (the mock fails them)
    ASSERT_TRUE(b.finished->Wait(kWait).ok());
    EXPECT_EQ(a.finished->error().code(), absl::StatusCode::kDeadlineExceeded);
    backend.SetAfterRun(nullptr);
  }
  s.reset();
}

// B's re-arm after a round must not swallow a Fault() made during the round (here from the
// backend's RunJob): the handler still runs at once. Before the fault was kept pending, the
// re-arm moved its deadline (now) to now + timeout (infinite here) and the handler never ran.
TEST(SchedBatchReview4, FaultDuringARoundIsNotLostToTheReArm) {
  TimeoutRecordingBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    backend.SetAfterRun([&](Job&) { s->Fault(); });
    Submitted j = SubmitMock(e.get());
    EXPECT_TRUE(backend.timed_out_.WaitForNotificationWithTimeout(kWait))
        << "a Fault() during the round never reached TimedOutJob";
    backend.SetAfterRun(nullptr);
    backend.Advance(1);  // if it was not timed out
    ASSERT_TRUE(j.finished->Wait(kWait).ok());
  }
  s.reset();
}

// C: teardown of a stopped scheduler holding J, selected and not run (carried: the previous
// job's RunJob called Stop), and K of J's entity, killed and chained behind J: J's finished
// fence signals first, then K's.
TEST(SchedBatchReview4, TeardownSignalsKilledJobAfterTheCarriedJobItIsChainedBehind) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  absl::Mutex mu;
  std::vector<std::string> order;
  fence::FenceCallback cb_j, cb_k;
  fence::FenceRef j_finished, k_finished;
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    std::atomic<int> n{0};
    backend.SetAfterRun([&](Job&) {
      if (n.fetch_add(1) == 0) s->Stop(nullptr);
    });
    Submitted a = SubmitMock(e.get());
    Submitted j = SubmitMock(e.get());
    j_finished = j.finished;
    s->Start(absl::OkStatus());  // one round selects A and J; A's RunJob stops: J carried
    ASSERT_TRUE(a.scheduled->Wait(kWait).ok());
    s->ForEachPendingJob([](Job&) {});  // waits until RunJob settled A
    ASSERT_FALSE(j.scheduled->IsSignaledFlag()) << "J was not carried";
    Submitted k = SubmitMock(e.get());
    k_finished = k.finished;
    auto record = [&](const char* name) {
      return [&mu, &order, name](fence::Fence&) {
        absl::MutexLock l(&mu);
        order.push_back(name);
      };
    };
    ASSERT_TRUE(j_finished->AddCallback(&cb_j, record("J")).ok());
    ASSERT_TRUE(k_finished->AddCallback(&cb_k, record("K")).ok());
    e->Kill();  // K is killed, chained behind J (its entity's last selected job)
    EXPECT_FALSE(k_finished->IsSignaledFlag());
  }
  s.reset();
  absl::MutexLock l(&mu);
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], "J") << "killed K signalled before J (K: " << k_finished->error()
                           << ", J: " << j_finished->error() << ")";
  EXPECT_EQ(k_finished->error().code(), absl::StatusCode::kNotFound) << k_finished->error();
  EXPECT_EQ(j_finished->error().code(), absl::StatusCode::kCancelled) << j_finished->error();
}

}  // namespace
}  // namespace sched
