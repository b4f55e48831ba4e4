// Fifth review of the batched rounds (older defects it found, both reproduced):
// - teardown without Start after Stop + ResubmitJobs hung: the resubmitted job's hardware fence
//   had no callback (Start attaches it), so RemoveCallback returned false and the job was never
//   failed ("teardown hung", both tests below);
// - a Fault() waited for the work item's rounds to stop making progress: a submitter that keeps
//   every round busy deferred the timeout handler until it stopped pushing (the handler ran after
//   all 200000 pushes).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
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

// Destroys the scheduler on another thread; J's finished fence must signal (a hang exits the
// test binary with a message, as a hung teardown would otherwise block until the test timeout).
void DestroyExpectingJobFinished(std::unique_ptr<Scheduler>& s, const Submitted& j,
                                 const char* what) {
  std::thread teardown([&] { s.reset(); });
  if (!j.finished->Wait(kWait).ok()) {
    fprintf(stderr, "FAIL: teardown hung: J (%s) never finished\n", what);
    std::_Exit(3);
  }
  teardown.join();
}

// Stop (test thread) with J on the hardware, ResubmitJobs (J gets a new hardware fence, no
// callback until Start), then destroy the scheduler without Start.
TEST(SchedBatchReview5, TeardownAfterStopAndResubmitWithoutStart) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  Submitted j;
  {
    auto e = *Entity::Create({s.get()});
    j = SubmitMock(e.get());
    ASSERT_TRUE(j.scheduled->Wait(kWait).ok());
    s->Stop(nullptr);
    s->ResubmitJobs();
    EXPECT_EQ(backend.runs(), 2);
  }
  DestroyExpectingJobFinished(s, j, "resubmitted while stopped");
  EXPECT_FALSE(j.finished->error().ok()) << j.finished->error();
}

// Same through the A path: Stop and ResubmitJobs from J's scheduled callback (inside RunJob(J)),
// J's new hardware fence kept for Start; teardown without Start.
TEST(SchedBatchReview5, TeardownAfterStopAndResubmitInsideRunJobWithoutStart) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  Submitted j;
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    j = SubmitMock(e.get());
    absl::Notification done;
    fence::FenceCallback cb;
    ASSERT_TRUE(j.scheduled->AddCallback(&cb, [&](fence::Fence&) {
                     s->Stop(nullptr);
                     s->ResubmitJobs();
                     done.Notify();
                   }).ok());
    s->Start(absl::OkStatus());
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
    int n = 0;
    s->ForEachPendingJob([&](Job&) { ++n; });
    EXPECT_EQ(n, 1);
    EXPECT_EQ(backend.runs(), 2);
  }
  DestroyExpectingJobFinished(s, j, "resubmitted inside RunJob");
}


// Fault() while a submitter keeps every round busy (the head job hangs on the hardware, credits
// unlimited, every later job completes at once): the timeout handler must see the head while the
// submitter is still pushing, not only once the rounds run out of work.
TEST(SchedBatchReview5, FaultIsHandledWhileRoundsKeepMakingProgress) {
  constexpr int kCap = 200000;
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    Submitted head = SubmitMock(e.get());
    ASSERT_TRUE(head.scheduled->Wait(kWait).ok());
    std::atomic<bool> stop{false};
    std::atomic<int> pushed{0};
    std::thread pusher([&] {
      while (!stop.load() && pushed.load() < kCap) {
        SubmitMock(e.get());
        pushed.fetch_add(1);
      }
    });
    while (pushed.load() < 2000) std::this_thread::yield();
    const int at_fault = pushed.load();
    s->Fault();
    // The head's finished fence (the job itself may be freed once it is done): the mock's
    // TimedOutJob fails its hardware fence with ETIMEDOUT.
    while (!head.finished->IsSignaled() && pushed.load() < kCap) std::this_thread::yield();
    const int at_handler = pushed.load();
    stop = true;
    pusher.join();
    ASSERT_TRUE(head.finished->Wait(kWait).ok());
    EXPECT_TRUE(absl::IsDeadlineExceeded(head.finished->error())) << head.finished->error();
    EXPECT_LT(at_handler, kCap) << "Fault() at push " << at_fault
                                << ": TimedOutJob(head) not run before the submitter's last push";
    s->Stop(nullptr);
  }
  s.reset();
}

}  // namespace
}  // namespace sched
