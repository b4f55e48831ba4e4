// The third review of the batched rounds (issue 13), findings 1-3: a Stop on the executor thread
// while RunJob(J) is under way (inside the backend's RunJob or a callback of J's scheduled
// fence). J ends as Stop leaves every job it detaches (drm_sched_stop): hardware fence dropped,
// credits returned, left on the pending list for ResubmitJobs or Start; a J that completed at
// once stays completed. Recovery calls on other threads wait until that RunJob settled J.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "sched/trace.h"
#include "tests/sched/hook_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::HookBackend;
using testing::kWait;
using testing::Opts;
using testing::Submitted;
using testing::SubmitMock;

// Adds a callback on J's scheduled fence that Stops the scheduler (on the executor thread, inside
// RunJob(J)), notifies `stopped`, then runs `then`.
struct StopOnScheduled {
  absl::Notification stopped;
  fence::FenceCallback cb;
  std::function<void()> then;
};

void StopFromScheduled(Scheduler* s, const Submitted& j, StopOnScheduled* h) {
  ASSERT_TRUE(j.scheduled
                  ->AddCallback(&h->cb,
                                [s, h](fence::Fence&) {
                                  s->Stop(nullptr);
                                  h->stopped.Notify();
                                  if (h->then) h->then();
                                })
                  .ok());
}

// J finished once, successfully, after `runs` backend RunJob calls, with no credits in use.
void ExpectFinishedOk(const Submitted& j, HookBackend& backend, Scheduler& s, int runs) {
  ASSERT_TRUE(j.finished->Wait(kWait).ok());
  EXPECT_TRUE(j.finished->error().ok()) << j.finished->error();
  EXPECT_EQ(backend.runs(), runs);
  EXPECT_EQ(s.credit_count(), 0u);
}

// 1: Stop inside the backend's RunJob(J), J with a hardware fence, then the scheduler destroyed
// without Start: the teardown fails J (before: J kept its hardware fence with no callback on it,
// the teardown's RemoveCallback returned false, and it waited for J's finished fence for ever).
TEST(SchedBatchReview3, StopInsideRunJobThenTeardownWithoutStart) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  fence::FenceRef fin;
  {
    auto e = *Entity::Create({s.get()});
    absl::Notification stopped;
    backend.SetAfterRun([&](Job&) {
      s->Stop(nullptr);
      stopped.Notify();
    });
    Submitted j = SubmitMock(e.get());
    fin = j.finished;
    ASSERT_TRUE(stopped.WaitForNotificationWithTimeout(kWait));
    ASSERT_TRUE(j.scheduled->Wait(kWait).ok());
    backend.SetAfterRun(nullptr);
    int pending = 0;
    s->ForEachPendingJob([&](Job&) { ++pending; });  // waits until RunJob(J) settled J
    EXPECT_EQ(pending, 1);
    EXPECT_EQ(s->credit_count(), 0u);  // detached: credits returned
  }
  std::thread teardown([&] { s.reset(); });
  if (!fin->Wait(absl::Seconds(5)).ok()) {
    fprintf(stderr, "FAIL: teardown hung (J's finished fence never signalled)\n");
    std::_Exit(3);  // the teardown thread cannot be joined
  }
  teardown.join();
  EXPECT_TRUE(absl::IsCancelled(fin->error())) << fin->error();
}

// 2: Stop from J's scheduled callback, J completing at once; a Start on another thread while the
// executor's JobDone(J) is held up (a trace sink blocking the kDone record). Start waits for J to
// be settled: J finishes once, successfully (before: Start also finished it, with ECANCELED).
struct BlockingSink : TraceSink {
  std::atomic<std::thread::id> block_on{};
  absl::Notification start_done;
  void Record(const TraceRecord& r) override {
    if (r.event == TraceEvent::kDone && std::this_thread::get_id() == block_on.load()) {
      start_done.WaitForNotificationWithTimeout(absl::Seconds(1));
    }
  }
};

TEST(SchedBatchReview3, StartOnAnotherThreadWaitsForJobDoneOfStoppedInRunJob) {
  HookBackend backend;
  backend.SetReturnNull(true);
  BlockingSink sink;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo, .trace = &sink}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted j = SubmitMock(e.get());
    StopOnScheduled h;
    h.then = [&] { sink.block_on.store(std::this_thread::get_id()); };
    StopFromScheduled(s.get(), j, &h);
    std::thread starter([&] {
      h.stopped.WaitForNotification();
      s->Start(absl::OkStatus());
      sink.start_done.Notify();
    });
    s->Start(absl::OkStatus());
    starter.join();
    ExpectFinishedOk(j, backend, *s, 1);
  }
  s.reset();
}

// 3: Stop from J's scheduled callback, J with a hardware fence; a reset worker's ResubmitJobs
// waits until that RunJob(J) returned (before: it ran the backend's RunJob(J) again and wrote
// J's parent while the callback — still inside RunJob(J) — was waiting). Then J, detached, runs
// once more from ResubmitJobs, Start attaches that hardware fence, and J finishes with it.
TEST(SchedBatchReview3, ResubmitOnAnotherThreadWaitsForTheInterruptedRunJob) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted j = SubmitMock(e.get());
    absl::Notification resubmitted;
    std::atomic<bool> overlapped{false};
    StopOnScheduled h;
    h.then = [&] {
      overlapped.store(resubmitted.WaitForNotificationWithTimeout(absl::Milliseconds(300)));
    };
    StopFromScheduled(s.get(), j, &h);
    std::thread worker([&] {
      h.stopped.WaitForNotification();
      s->ResubmitJobs();
      resubmitted.Notify();
    });
    s->Start(absl::OkStatus());
    worker.join();
    EXPECT_FALSE(overlapped.load()) << "ResubmitJobs ran during the interrupted RunJob(J)";
    EXPECT_EQ(s->credit_count(), 0u);  // detached: credits returned
    s->Start(absl::OkStatus());
    EXPECT_EQ(s->credit_count(), 1u);
    EXPECT_EQ(backend.Advance(2), 2);  // the first hardware fence has no callback any more
    ExpectFinishedOk(j, backend, *s, 2);
  }
  s.reset();
}

// 6: Stop and Start both from J's scheduled callback: J goes on as if not stopped.
TEST(SchedBatchReview3, StopAndStartFromScheduledCallback) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted j = SubmitMock(e.get());
    StopOnScheduled h;
    h.then = [&] { s->Start(absl::OkStatus()); };
    StopFromScheduled(s.get(), j, &h);
    s->Start(absl::OkStatus());
    ASSERT_TRUE(h.stopped.WaitForNotificationWithTimeout(kWait));
    const absl::Time deadline = absl::Now() + kWait;
    while (backend.Advance(1) == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    ExpectFinishedOk(j, backend, *s, 1);
  }
  s.reset();
}

}  // namespace
}  // namespace sched
