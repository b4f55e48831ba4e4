// sched/: regression tests for the scheduler defects of issue 10 (review before VM_BIND): the
// kill chain starts at the entity's last scheduled job, killed jobs wait for finished fences,
// Stop from a reset worker while the timeout handler waits for it, PrepareJob's timing, no user
// callback under the scheduler's lock, the entity's error once a job is guilty, and FreeJob
// never on two threads at once.
#include <atomic>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/internal/test_hooks.h"
#include "sched/scheduler.h"
#include "tests/sched/mock_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::kWait;
using testing::MockBackend;
using testing::MockJob;
using testing::SignalsWithin;
using testing::SubmitMock;

class ReviewTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(MockJob::live.load(), 0) << "jobs leaked"; }
};

// Defect 1 (drm_sched_entity_kill): A is on the hardware, B and C are queued behind a credit
// limit; killing the entity must not complete B before A — the first killed job waits for the
// entity's last scheduled job, then the killed jobs complete in order, with ESRCH.
TEST_F(ReviewTest, KilledJobsWaitForLastScheduledJob) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  {
    auto e = *Entity::Create({s.get()});
    auto a = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(a.scheduled, kWait));
    auto b = SubmitMock(e.get());
    auto c = SubmitMock(e.get());
    e->Kill();
    EXPECT_FALSE(b.finished->IsSignaled()) << "killed job signalled while A still runs";
    EXPECT_FALSE(c.finished->IsSignaled());
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(b.finished, kWait));
    ASSERT_TRUE(SignalsWithin(c.finished, kWait));
    EXPECT_TRUE(a.finished->error().ok());
    EXPECT_TRUE(absl::IsNotFound(b.finished->error())) << b.finished->error();
    EXPECT_TRUE(absl::IsNotFound(c.finished->error())) << c.finished->error();
    EXPECT_EQ(mock.run_order().size(), 1u);
  }
  s.reset();
}

// Defect 1 (smaller): a killed job that depends on another job's *scheduled* fence waits for
// that job's *finished* fence (the kernel swaps it in drm_sched_entity_kill_jobs_cb).
TEST_F(ReviewTest, KilledJobsWaitForFinishedNotScheduledDependencies) {
  MockBackend mock_a, mock_b;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  auto a = *Scheduler::Create(&mock_a, testing::Opts());
  auto b = *Scheduler::Create(&mock_b, testing::Opts(opts));
  {
    auto producer = *Entity::Create({a.get()});
    auto x = SubmitMock(producer.get());
    ASSERT_TRUE(SignalsWithin(x.scheduled, kWait));  // scheduled, not finished
    auto blocker = *Entity::Create({b.get()});
    auto hold = SubmitMock(blocker.get());  // holds b's only credit
    ASSERT_TRUE(SignalsWithin(hold.scheduled, kWait));
    auto e = *Entity::Create({b.get()});
    auto killed = SubmitMock(e.get(), absl::ZeroDuration(), {x.scheduled});
    e->Kill();
    EXPECT_FALSE(SignalsWithin(killed.finished, absl::Milliseconds(50)))
        << "killed job completed before its dependency finished";
    EXPECT_EQ(mock_a.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(killed.finished, kWait));
    EXPECT_TRUE(absl::IsNotFound(killed.finished->error()));
    EXPECT_EQ(mock_b.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(hold.finished, kWait));
  }
  a.reset();
  b.reset();
}

// A backend whose timeout handler hands the reset to a worker thread and waits for it (amdgpu's
// reset worker): the worker stops the scheduler, resets the hardware and starts it again.
class ResetWorkerBackend : public MockBackend {
 public:
  TimeoutStatus TimedOutJob(Job& job) override {
    Job* bad = &job;
    std::thread worker([this, bad] {
      sched->Stop(bad);
      DropAll();
      sched->Start(absl::AbortedError("reset"));
      worker_done.Notify();
    });
    // The hang guard: a Stop that waits for this handler never returns while we wait here, so
    // give up after a while and let the worker finish once the handler has returned.
    if (worker_done.WaitForNotificationWithTimeout(absl::Seconds(3))) {
      worker.join();
    } else {
      stop_hung = true;
      worker.detach();
    }
    timeouts.fetch_add(1);
    return TimeoutStatus::kReset;
  }
  Scheduler* sched = nullptr;
  std::atomic<bool> stop_hung{false};
  std::atomic<int> timeouts{0};
  absl::Notification worker_done;
};

// Defect 2: Stop from a reset worker that the timeout handler waits for does not hang (the
// kernel's drm_sched_stop parks the work items, it does not wait for the handler); the hung job
// finishes with the Start error and the scheduler runs new jobs afterwards.
TEST_F(ReviewTest, StopFromResetWorkerWhileHandlerWaits) {
  ResetWorkerBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  mock.sched = s.get();
  {
    auto e = *Entity::Create({s.get()});
    auto hung = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(hung.scheduled, kWait));
    s->Fault();
    while (mock.timeouts.load() == 0) absl::SleepFor(absl::Milliseconds(1));
    mock.worker_done.WaitForNotification();
    EXPECT_FALSE(mock.stop_hung.load()) << "Stop from the reset worker waited for the handler";
    ASSERT_TRUE(SignalsWithin(hung.finished, kWait));
    EXPECT_TRUE(absl::IsAborted(hung.finished->error())) << hung.finished->error();
    auto next = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(next.scheduled, kWait));
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(next.finished, kWait));
  }
  s.reset();
  EXPECT_EQ(mock.freed(), 2);
}

// Defect 2, the variant where the hung job's hardware fence already signalled: the worker's Stop
// must not free the job the handler still holds (FreeJob follows when the handler returns).
class SignalledResetWorkerBackend : public MockBackend {
 public:
  TimeoutStatus TimedOutJob(Job& job) override {
    Advance(1);  // the "hung" job completes just as the handler runs
    Job* bad = &job;
    std::thread worker([this, bad] {
      sched->Stop(bad);
      sched->Start(absl::OkStatus());
      worker_done.Notify();
    });
    if (worker_done.WaitForNotificationWithTimeout(absl::Seconds(3))) {
      worker.join();
    } else {  // hang guard: Stop waits for this handler
      stop_hung = true;
      worker.detach();
    }
    // Still ours until we return: touching it must be safe (ASan would see a freed job).
    seen_karma = job.karma();
    freed_in_handler = freed();
    timeouts.fetch_add(1);
    return TimeoutStatus::kReset;
  }
  Scheduler* sched = nullptr;
  std::atomic<int> timeouts{0};
  int seen_karma = -1;
  int freed_in_handler = -1;
  std::atomic<bool> stop_hung{false};
  absl::Notification worker_done;
};

TEST_F(ReviewTest, StopFromWorkerKeepsTheHandlersJob) {
  SignalledResetWorkerBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  mock.sched = s.get();
  {
    auto e = *Entity::Create({s.get()});
    auto hung = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(hung.scheduled, kWait));
    s->Fault();
    while (mock.timeouts.load() == 0) absl::SleepFor(absl::Milliseconds(1));
    mock.worker_done.WaitForNotification();
    EXPECT_FALSE(mock.stop_hung.load()) << "Stop from the reset worker waited for the handler";
    ASSERT_TRUE(SignalsWithin(hung.finished, kWait));
    EXPECT_EQ(mock.seen_karma, 0);
    EXPECT_EQ(mock.freed_in_handler, 0) << "the handler's job was freed under it";
  }
  s.reset();
  EXPECT_EQ(mock.freed(), 1);
}

// The dependency-callback window: the callback parks here after marking its dependency
// signalled, until the test releases it.
absl::Notification* g_in_window = nullptr;
absl::Notification* g_release = nullptr;
void ParkDependencyCallback() {
  g_in_window->Notify();
  g_release->WaitForNotification();
}

// Defect 4: the dependency callback is counted in the scheduler's running callbacks, so the
// scheduler is not destroyed between the callback's store and its WakeUp (ASan: a
// heap-use-after-free in WakeUp on the old code).
TEST_F(ReviewTest, SchedulerOutlivesItsDependencyCallback) {
  absl::Notification in_window, release, destroyed;
  g_in_window = &in_window;
  g_release = &release;
  internal::dep_callback_hook.store(&ParkDependencyCallback);
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  fence::FenceContext ctx;
  fence::FenceRef dep = ctx.NewFence();
  std::thread signaller;
  {
    auto e1 = *Entity::Create({s.get()});
    auto e2 = *Entity::Create({s.get()});
    auto j1 = SubmitMock(e1.get(), absl::ZeroDuration(), {dep});
    auto j2 = SubmitMock(e2.get());
    ASSERT_TRUE(SignalsWithin(j2.scheduled, kWait));  // j1's dependency callback is installed
    signaller = std::thread([dep] { dep->Signal(); });
    in_window.WaitForNotification();
    auto j3 = SubmitMock(e2.get());  // wakes the scheduler, which sees j1's dependency signalled
    ASSERT_TRUE(SignalsWithin(j1.scheduled, kWait));
    ASSERT_TRUE(SignalsWithin(j3.scheduled, kWait));
    EXPECT_EQ(mock.Advance(3), 3);
    ASSERT_TRUE(SignalsWithin(j1.finished, kWait));
    ASSERT_TRUE(SignalsWithin(j3.finished, kWait));
  }
  std::thread destroyer([&] {
    s.reset();  // must wait for the parked callback
    destroyed.Notify();
  });
  EXPECT_FALSE(destroyed.WaitForNotificationWithTimeout(absl::Milliseconds(300)))
      << "the scheduler was destroyed while its dependency callback was still running";
  release.Notify();
  signaller.join();
  destroyer.join();
  internal::dep_callback_hook.store(nullptr);
}

// Issue 10 (the flake of SchedPolicy.PrioritiesOrderSelection): a selection sees every job whose
// Push returned before the credit it uses was freed (sched/scheduler.h). The hook parks a round
// between its drain of the inbox (which took the LOW job) and its selection; meanwhile the test
// pushes a HIGH job and then completes the blocker, which frees the only credit. The old round
// saw the credit free at selection and ran the LOW job, the only one it had drained — a priority
// inversion, since the HIGH push returned before the credit was freed.
std::atomic<bool> g_park_armed{false};
void ParkSelectionWithCandidates(size_t queued_entities) {
  if (queued_entities == 0 || !g_park_armed.exchange(false)) return;
  g_in_window->Notify();
  g_release->WaitForNotification();
}

TEST_F(ReviewTest, SelectionSeesPushesBeforeTheCreditWasFreed) {
  absl::Notification in_window, release;
  g_in_window = &in_window;
  g_release = &release;
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  opts.policy = Policy::kFifo;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  {
    auto blocker = *Entity::Create({s.get()});
    auto low = *Entity::Create({s.get()}, Priority::kLow);
    auto high = *Entity::Create({s.get()}, Priority::kHigh);
    auto b = SubmitMock(blocker.get());
    ASSERT_TRUE(SignalsWithin(b.scheduled, kWait));  // holds the only credit
    g_park_armed.store(true);
    internal::before_select_hook.store(&ParkSelectionWithCandidates);
    auto l = SubmitMock(low.get());  // a round drains it and parks before selecting
    in_window.WaitForNotification();
    auto h = SubmitMock(high.get());  // returned before the credit is freed
    EXPECT_EQ(mock.Advance(1), 1);    // the blocker completes: its credit is free
    ASSERT_TRUE(SignalsWithin(b.finished, kWait));
    release.Notify();
    while (mock.run_order().size() < 2) absl::SleepFor(absl::Milliseconds(1));
    internal::before_select_hook.store(nullptr);
    EXPECT_EQ(mock.run_order()[1]->context(), h.finished->context())
        << "LOW's context is " << l.finished->context() << ": the round selected the LOW job it had drained before the HIGH push, although the "
           "HIGH push returned before the credit was freed";
    EXPECT_EQ(mock.Advance(1), 1);
    while (mock.run_order().size() < 3) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(l.finished, kWait));
    ASSERT_TRUE(SignalsWithin(h.finished, kWait));
  }
  s.reset();
}

// Counts PrepareJob calls per job; optionally returns one external fence per job first.
class PreparingBackend : public MockBackend {
 public:
  fence::FenceRef PrepareJob(Job& job) override {
    calls.fetch_add(1);
    if (job.finished()->context() != extra_context.load()) return nullptr;
    absl::MutexLock l(&mu);
    if (!asked.insert(&job).second) return nullptr;  // one extra fence per job
    fence::FenceRef f = ctx.NewFence();
    extra.push_back(f);
    return f;
  }
  std::vector<fence::FenceRef> Extra() {
    absl::MutexLock l(&mu);
    return extra;
  }
  std::atomic<int> calls{0};
  std::atomic<uint64_t> extra_context{0};  // jobs of this finished context get one fence
  fence::FenceContext ctx;
  absl::Mutex mu;
  std::vector<fence::FenceRef> extra ABSL_GUARDED_BY(mu);
  std::set<Job*> asked ABSL_GUARDED_BY(mu);
};

// Defect 6: PrepareJob is called for the head job of the entity that is picked, after the
// credit check, once per fence it returns (plus the final null) — never for waiting entities in
// every round.
TEST_F(ReviewTest, PrepareJobOnlyForThePickedHeadAfterCredits) {
  PreparingBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  {
    auto blocker = *Entity::Create({s.get()});
    auto hold = SubmitMock(blocker.get());
    ASSERT_TRUE(SignalsWithin(hold.scheduled, kWait));
    EXPECT_EQ(mock.calls.load(), 1);
    std::vector<std::unique_ptr<Entity>> es;
    std::vector<testing::Submitted> jobs;
    for (int i = 0; i < 3; ++i) es.push_back(*Entity::Create({s.get()}));
    for (int round = 0; round < 3; ++round) {
      for (auto& e : es) jobs.push_back(SubmitMock(e.get()));
    }
    absl::SleepFor(absl::Milliseconds(20));  // the pushes above ran selection rounds
    EXPECT_EQ(mock.calls.load(), 1) << "PrepareJob called while no credits were available";
    for (size_t i = 0; i < jobs.size(); ++i) {  // one at a time (in the policy's order)
      EXPECT_EQ(mock.Advance(1), 1);
      const absl::Time deadline = absl::Now() + kWait;
      while (mock.run_order().size() < i + 2 && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(1));
      }
      ASSERT_EQ(mock.run_order().size(), i + 2);
    }
    for (auto& j : jobs) ASSERT_TRUE(SignalsWithin(j.scheduled, kWait));
    EXPECT_EQ(mock.calls.load(), 1 + static_cast<int>(jobs.size()));
    EXPECT_EQ(mock.Advance(1), 1);
  }
  s.reset();
}

// Defect 6: a fence returned by PrepareJob is waited for, and PrepareJob is asked again only
// after it signalled: two calls per job.
TEST_F(ReviewTest, PrepareJobOncePerReturnedFence) {
  PreparingBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    auto e = *Entity::Create({s.get()});
    mock.extra_context = e->fence_context() + 1;
    auto j = SubmitMock(e.get());
    while (mock.Extra().empty()) absl::SleepFor(absl::Milliseconds(1));
    auto other = *Entity::Create({s.get()});
    auto o = SubmitMock(other.get());  // another selection round
    ASSERT_TRUE(SignalsWithin(o.scheduled, kWait));
    EXPECT_FALSE(j.scheduled->IsSignaled());
    EXPECT_EQ(mock.calls.load(), 2);  // j: its fence; o: null
    mock.Extra()[0]->Signal();
    ASSERT_TRUE(SignalsWithin(j.scheduled, kWait));
    EXPECT_EQ(mock.calls.load(), 3);
    EXPECT_EQ(mock.Advance(2), 2);
    ASSERT_TRUE(SignalsWithin(j.finished, kWait));
  }
  s.reset();
}

// A fence whose producer is polled (ops->signaled): IsSignaled() signals it and runs its
// callbacks on the polling thread.
class PolledFence : public fence::Fence {
 public:
  PolledFence(uint64_t context, uint64_t seqno) : Fence(context, seqno, fence::SeqnoWidth::k64) {}
  std::atomic<bool> done{false};

 protected:
  bool PollSignaled() override { return done.load(); }
};

// Rule: no user fence callback runs while the scheduler holds its lock. A callback on a polled
// dependency (signalled by the scheduler's own IsSignaled poll) pushes to another entity of the
// same scheduler that balances over it, which takes the scheduler's lock.
TEST_F(ReviewTest, NoUserCallbackUnderSchedulerLock) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  std::atomic<bool> blocked{false};
  {
    auto e = *Entity::Create({s.get()});
    auto other = *Entity::Create({s.get(), s.get()});  // Arm checks idleness under mu_
    fence::FenceContext ctx;
    auto polled = std::make_shared<PolledFence>(ctx.context(), 1);
    fence::FenceCallback cb;
    struct Pushed {
      absl::Notification done;
      fence::FenceRef finished;
    };
    auto pushed = std::make_shared<Pushed>();
    Entity* other_raw = other.get();
    ASSERT_TRUE(polled
                    ->AddCallback(&cb,
                                  [&blocked, pushed, other_raw](fence::Fence&) {
                                    std::thread t([pushed, other_raw] {
                                      pushed->finished = SubmitMock(other_raw).finished;
                                      pushed->done.Notify();
                                    });
                                    // Hang guard: under the scheduler's lock the push cannot
                                    // finish until this callback returns.
                                    if (pushed->done.WaitForNotificationWithTimeout(
                                            absl::Seconds(3))) {
                                      t.join();
                                    } else {
                                      blocked = true;
                                      t.detach();
                                    }
                                  })
                    .ok());
    polled->done = true;  // nobody signals it: the scheduler's poll does
    auto j = SubmitMock(e.get(), absl::ZeroDuration(), {polled});
    ASSERT_TRUE(SignalsWithin(j.scheduled, kWait));
    pushed->done.WaitForNotification();
    EXPECT_FALSE(blocked.load()) << "a fence callback ran under the scheduler's lock";
    ASSERT_NE(pushed->finished, nullptr);
    while (mock.run_order().size() < 2) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(mock.Advance(2), 2);
    ASSERT_TRUE(SignalsWithin(pushed->finished, kWait));
  }
  s.reset();
}

// Smaller defect: Entity::error() is CancelledError as soon as one of its jobs is marked guilty
// (drm_sched_increase_karma sets the entity's guilty flag), before that job completes.
TEST_F(ReviewTest, EntityErrorOnceGuilty) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    auto guilty = std::make_shared<std::atomic<bool>>(false);
    auto e = *Entity::Create({s.get()}, Priority::kNormal, guilty);
    auto j = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(j.scheduled, kWait));
    EXPECT_TRUE(e->error().ok());
    Scheduler::IncreaseKarma(*j.job);
    EXPECT_TRUE(absl::IsCancelled(e->error())) << e->error();
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(j.finished, kWait));
  }
  s.reset();
}

// A backend whose timeout handler hands the reset to a worker and returns while the worker's
// Stop is still freeing (amdgpu queues its reset work and returns). The worker's first FreeJob
// stays inside FreeJob — the widened window — until another FreeJob call enters (an overlap) or
// a bound passes; `in_free` counts FreeJob calls in progress.
class ReturningResetWorkerBackend : public MockBackend {
 public:
  ~ReturningResetWorkerBackend() override {
    if (worker.joinable()) worker.join();
  }
  TimeoutStatus TimedOutJob(Job& job) override {
    Advance(2);  // both jobs' hardware fences signal: the worker's Stop frees the second
    Job* bad = &job;
    worker = std::thread([this, bad] {
      on_worker = true;
      sched->Stop(bad);
      sched->Start(absl::OkStatus());
      worker_done.Notify();
    });
    // Return while the worker's Stop is inside FreeJob.
    stop_freeing_seen = stop_freeing.WaitForNotificationWithTimeout(kWait);
    return TimeoutStatus::kReset;
  }
  void FreeJob(std::unique_ptr<Job> job) override {
    if (in_free.fetch_add(1) != 0) {
      overlaps.fetch_add(1);
      if (!overlap_flag.exchange(true)) overlap.Notify();
    }
    if (on_worker && !window_flag.exchange(true)) {
      stop_freeing.Notify();
      (void)overlap.WaitForNotificationWithTimeout(absl::Milliseconds(500));
    }
    in_free.fetch_sub(1);
    freed_jobs.fetch_add(1);
    job.reset();
  }
  static inline thread_local bool on_worker = false;
  Scheduler* sched = nullptr;
  std::thread worker;
  std::atomic<int> in_free{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> freed_jobs{0};
  std::atomic<bool> overlap_flag{false}, window_flag{false};
  bool stop_freeing_seen = false;
  absl::Notification overlap, stop_freeing, worker_done;
};

// backend.h: FreeJob is never called on two threads at once — also when TimedOutJob returns
// while a Stop it started on a reset worker still frees jobs (the handler's job is freed after
// the handler returns, on the executor thread; the worker's Stop frees the other finished job).
TEST_F(ReviewTest, FreeJobNeverOnTwoThreadsWhenHandlerReturnsDuringStop) {
  ReturningResetWorkerBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  mock.sched = s.get();
  {
    auto e = *Entity::Create({s.get()});
    auto hung = SubmitMock(e.get());
    auto second = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(second.scheduled, kWait));
    s->Fault();
    mock.worker_done.WaitForNotification();
    ASSERT_TRUE(SignalsWithin(hung.finished, kWait));
    ASSERT_TRUE(SignalsWithin(second.finished, kWait));
  }
  s.reset();
  EXPECT_TRUE(mock.stop_freeing_seen) << "the worker's Stop never called FreeJob";
  EXPECT_EQ(mock.overlaps.load(), 0) << "two FreeJob calls overlapped";
  EXPECT_EQ(mock.freed_jobs.load(), 2);
}

}  // namespace
}  // namespace sched
