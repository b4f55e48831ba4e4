// The third review of the batched rounds (issue 13), findings 1-3: a Stop on the executor thread
// while RunJob(J) is under way (inside the backend's RunJob or a callback of J's scheduled
// fence). J ends as Stop leaves every job it detaches (drm_sched_stop): hardware fence dropped,
// credits returned, left on the pending list for ResubmitJobs or Start; a J that completed at
// once stays completed. Recovery calls on other threads wait until that RunJob settled J.
// Finding 6 (tests missing): a Stop, and a Stop+Start, inside PrepareJob; Stop+Start from a
// scheduled callback with a job carried in the round; teardown while stopped with detached and
// carried jobs.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

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

// Queues `n` jobs on `e` while stopped (one round selects them all); the first one's scheduled
// callback stops and starts the scheduler (both inside its RunJob). Returns the jobs once that
// callback ran.
std::vector<Submitted> StopAndStartFromFirstScheduled(Scheduler* s, Entity* e, int n,
                                                      StopOnScheduled* h) {
  s->Stop(nullptr);
  std::vector<Submitted> jobs;
  for (int i = 0; i < n; ++i) jobs.push_back(SubmitMock(e));
  h->then = [s] { s->Start(absl::OkStatus()); };
  StopFromScheduled(s, jobs[0], h);
  s->Start(absl::OkStatus());
  EXPECT_TRUE(h->stopped.WaitForNotificationWithTimeout(kWait));
  return jobs;
}

// J finished once, successfully, after `runs` backend RunJob calls, with no credits in use.
void ExpectFinishedOk(const Submitted& j, HookBackend& backend, Scheduler& s, int runs) {
  ASSERT_TRUE(j.finished->Wait(kWait).ok());
  EXPECT_TRUE(j.finished->error().ok()) << j.finished->error();
  EXPECT_EQ(backend.runs(), runs);
  EXPECT_EQ(s.credit_count(), 0u);
}

// A and B (hardware fences, both on the hardware) completed by Advance: each finished once,
// successfully, PrepareJob and RunJob called once each, in order, and no credits in use.
void CompleteBothInOrder(const Submitted& a, const Submitted& b, HookBackend& backend,
                         Scheduler& s) {
  ASSERT_TRUE(b.scheduled->Wait(kWait).ok());
  EXPECT_EQ(s.credit_count(), 2u);  // both on the hardware, charged once each
  EXPECT_EQ(backend.Advance(2), 2);
  for (const Submitted* j : {&a, &b}) {
    ASSERT_TRUE(j->finished->Wait(kWait).ok());
    EXPECT_TRUE(j->finished->error().ok()) << j->finished->error();
  }
  EXPECT_EQ(backend.Events({a.finished, b.finished}), "P0 P1 R0 R1 ");
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
    StopOnScheduled h;
    const Submitted j = StopAndStartFromFirstScheduled(s.get(), e.get(), 1, &h)[0];
    const absl::Time deadline = absl::Now() + kWait;
    while (backend.Advance(1) == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    ExpectFinishedOk(j, backend, *s, 1);
  }
  s.reset();
}

// Finding 6 (a): the backend's PrepareJob(B) stops the scheduler (on the executor thread, while
// the round selects: A selected before it). Stop returns A's credits; B, selected after the Stop,
// is a job not yet run like A, so it holds none either while stopped (scheduler.h: their credits
// come back, their fences stay unsignalled); nothing runs until Start, then A and B run once, in
// order, with B's PrepareJob called once.
TEST(SchedBatchReview3, StopInsidePrepareJob) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted a = SubmitMock(e.get());
    Submitted b = SubmitMock(e.get());
    absl::Notification stopped;
    backend.SetPrepare([&](Job& job) -> fence::FenceRef {
      if (job.finished() == b.finished && !stopped.HasBeenNotified()) {
        s->Stop(nullptr);
        stopped.Notify();
      }
      return nullptr;
    });
    s->Start(absl::OkStatus());
    ASSERT_TRUE(stopped.WaitForNotificationWithTimeout(kWait));
    // B popped off its entity (score: 2 jobs not done, no entity with queued jobs).
    const absl::Time deadline = absl::Now() + kWait;
    while (s->score() != 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    ASSERT_EQ(s->score(), 2);
    EXPECT_TRUE(s->IsStopped());
    EXPECT_EQ(s->credit_count(), 0u) << "a job selected after the Stop holds credits while stopped";
    int on_hardware = 0;
    s->ForEachPendingJob([&](Job&) { ++on_hardware; });
    EXPECT_EQ(on_hardware, 0);
    EXPECT_FALSE(a.scheduled->IsSignaledFlag());
    EXPECT_FALSE(b.scheduled->IsSignaledFlag());
    EXPECT_EQ(backend.runs(), 0);
    s->Start(absl::OkStatus());
    CompleteBothInOrder(a, b, backend, *s);
  }
  s.reset();
}

// Finding 6 (a): PrepareJob(B) stops and starts the scheduler (the whole recovery on the executor
// thread during the selection): A and B go on as if not stopped — each runs once, in order, and
// the credits balance.
TEST(SchedBatchReview3, StopAndStartInsidePrepareJob) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    Submitted a = SubmitMock(e.get());
    Submitted b = SubmitMock(e.get());
    std::atomic<int> recoveries{0};
    backend.SetPrepare([&](Job& job) -> fence::FenceRef {
      if (job.finished() == b.finished && recoveries.fetch_add(1) == 0) {
        s->Stop(nullptr);
        s->Start(absl::OkStatus());
      }
      return nullptr;
    });
    s->Start(absl::OkStatus());
    CompleteBothInOrder(a, b, backend, *s);
    EXPECT_EQ(recoveries.load(), 1);
  }
  s.reset();
}

// Finding 6 (b): Stop and Start from A's scheduled callback (inside RunJob(A)), A with a hardware
// fence and B selected in the same round, not yet run: A keeps its hardware fence (goes on as if
// not stopped), B runs once after it, both finish successfully with their hardware fences.
TEST(SchedBatchReview3, StopAndStartFromScheduledCallbackWithACarriedJob) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  {
    auto e = *Entity::Create({s.get()});
    StopOnScheduled h;
    const std::vector<Submitted> jobs = StopAndStartFromFirstScheduled(s.get(), e.get(), 2, &h);
    CompleteBothInOrder(jobs[0], jobs[1], backend, *s);
  }
  s.reset();
}

// Finding 6 (c): the scheduler destroyed while stopped, with every kind of job Stop leaves: one
// round selects X, A, B, C; X goes to the hardware; the backend's RunJob(A) stops the scheduler,
// so X is detached by the Stop, A by its RunJob, and B and C, selected and not run, are carried.
// Without a Start, the teardown fails all four (CancelledError), signals B's and C's scheduled
// fences, frees each job once, and does not hang; no credit was left charged while stopped.
TEST(SchedBatchReview3, TeardownWhileStoppedWithDetachedAndCarriedJobs) {
  HookBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.policy = Policy::kFifo}));
  std::vector<Submitted> jobs;
  {
    auto e = *Entity::Create({s.get()});
    s->Stop(nullptr);
    for (int i = 0; i < 4; ++i) jobs.push_back(SubmitMock(e.get()));
    absl::Notification stopped;
    const fence::FenceRef a = jobs[1].finished;
    backend.SetAfterRun([&](Job& job) {
      if (job.finished() != a) return;
      s->Stop(nullptr);
      stopped.Notify();
    });
    s->Start(absl::OkStatus());
    ASSERT_TRUE(stopped.WaitForNotificationWithTimeout(kWait));
    ASSERT_TRUE(jobs[1].scheduled->Wait(kWait).ok());
    int on_hardware = 0;
    s->ForEachPendingJob([&](Job&) { ++on_hardware; });  // waits until RunJob(A) settled A
    EXPECT_EQ(on_hardware, 2);  // X and A
    EXPECT_EQ(s->credit_count(), 0u);
    EXPECT_EQ(backend.runs(), 2);
    EXPECT_FALSE(jobs[2].scheduled->IsSignaledFlag());
    EXPECT_FALSE(jobs[3].scheduled->IsSignaledFlag());
    for (const Submitted& j : jobs) EXPECT_FALSE(j.finished->IsSignaledFlag());
  }
  std::thread teardown([&] { s.reset(); });
  for (const Submitted& j : jobs) {
    if (!j.finished->Wait(absl::Seconds(5)).ok()) {
      fprintf(stderr, "FAIL: teardown hung (a finished fence never signalled)\n");
      std::_Exit(3);  // the teardown thread cannot be joined
    }
  }
  teardown.join();
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_TRUE(absl::IsCancelled(jobs[i].finished->error())) << i << ": " << jobs[i].finished->error();
    EXPECT_TRUE(jobs[i].scheduled->IsSignaledFlag()) << i;
  }
  EXPECT_EQ(backend.runs(), 2);  // B and C never reached the backend
  EXPECT_EQ(backend.freed(), 4);
}

}  // namespace
}  // namespace sched
