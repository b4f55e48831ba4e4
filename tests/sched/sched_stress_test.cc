// sched/ stress with real threads (run under TSan and ASan in CI): a window of jobs in flight per
// submitter while a "GPU" thread completes them; entity kill racing with pushes; pushes racing
// with the job's own completion and free (the kernel once touched a job after push: a UAF).
#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/scheduler.h"
#include "tests/sched/mock_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::MockBackend;
using testing::MockJob;

constexpr absl::Duration kLong = absl::Seconds(30);

fence::FenceRef SubmitJob(Entity* e) {
  auto job = std::make_unique<MockJob>();
  EXPECT_TRUE(job->Init(e, 1).ok());
  return e->Submit(std::move(job));
}

// upstream: drm_sched_interleaved_submit_test (shape) — 8 submitters keep a window of 8 jobs in
// flight for about a second while a GPU thread completes jobs as they run; every job finishes.
// The second starts only once every submitter runs (under TSan on a loaded machine starting the
// threads alone took more than a second, so the window closed before any submitter looked at it),
// and each submitter goes on past it until it has completed kMinPerSubmitter jobs of its own: the
// test asserts progress of every submitter (each wait is bounded by kLong) rather than a count
// reached within a fixed time.
TEST(SchedStress, WindowOfJobsInFlight) {
  constexpr int kSubmitters = 8;
  constexpr int kWindow = 8;
  constexpr int64_t kMinPerSubmitter = 2 * kWindow;
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  std::atomic<bool> stop_gpu{false};
  std::thread gpu([&] {
    while (!stop_gpu.load()) {
      if (mock.Advance(1) == 0) std::this_thread::yield();
    }
  });
  std::vector<int64_t> completed(kSubmitters, 0);  // each written by its submitter only
  {
    std::vector<std::unique_ptr<Entity>> es;
    for (int i = 0; i < kSubmitters; ++i) es.push_back(*Entity::Create({s.get()}));
    std::atomic<int> started{0};
    absl::Notification go;
    absl::Time end;  // written before go is notified
    std::vector<std::thread> submitters;
    for (int w = 0; w < kSubmitters; ++w) {
      submitters.emplace_back([&, w] {
        started++;
        go.WaitForNotification();
        std::vector<fence::FenceRef> window;
        while (absl::Now() < end || completed[w] < kMinPerSubmitter) {
          while (window.size() < kWindow) window.push_back(SubmitJob(es[w].get()));
          ASSERT_TRUE(window.front()->Wait(kLong).ok()) << "submitter " << w << " stalled";
          EXPECT_TRUE(window.front()->error().ok());
          window.erase(window.begin());
          completed[w]++;
        }
        for (auto& f : window) ASSERT_TRUE(f->Wait(kLong).ok());
      });
    }
    while (started.load() < kSubmitters) std::this_thread::yield();
    end = absl::Now() + absl::Seconds(1);
    go.Notify();
    for (auto& t : submitters) t.join();
  }
  stop_gpu = true;
  gpu.join();
  s.reset();
  for (int w = 0; w < kSubmitters; ++w) {
    EXPECT_GE(completed[w], kMinPerSubmitter) << "submitter " << w;  // an ASSERT above stopped it
  }
  EXPECT_EQ(MockJob::live.load(), 0);
}

// Entity kill racing with pushes: every job either ran and finished OK or was killed (ESRCH);
// none is lost, none leaks.
TEST(SchedStress, KillRacesWithPush) {
  MockBackend mock;
  mock.SetReturnNull(true);  // jobs complete as soon as they run
  auto s = *Scheduler::Create(&mock, testing::Opts());
  for (int round = 0; round < 50; ++round) {
    auto e = *Entity::Create({s.get()});
    std::vector<fence::FenceRef> fences;
    std::thread pusher([&] {
      for (int i = 0; i < 40; ++i) fences.push_back(SubmitJob(e.get()));
    });
    absl::SleepFor(absl::Microseconds(round * 20));
    e->Kill();
    pusher.join();
    for (auto& f : fences) {
      ASSERT_TRUE(f->Wait(kLong).ok());
      EXPECT_TRUE(f->error().ok() || absl::IsNotFound(f->error())) << f->error();
    }
  }
  s.reset();
  EXPECT_EQ(mock.freed(), 50 * 40);
  EXPECT_EQ(MockJob::live.load(), 0);
}

// Push racing with the job's own completion and free: run_job completes jobs at once (null
// fence), so a job can be run, finished and freed before Push returns. Nothing may touch it after
// Push (ASan would report it).
TEST(SchedStress, PushRacesWithCompletionAndFree) {
  MockBackend mock;
  mock.SetReturnNull(true);
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    std::vector<std::unique_ptr<Entity>> es;
    for (int i = 0; i < 4; ++i) es.push_back(*Entity::Create({s.get()}));
    std::vector<std::thread> pushers;
    for (int t = 0; t < 4; ++t) {
      pushers.emplace_back([&, t] {
        fence::FenceRef last;
        for (int i = 0; i < 2000; ++i) last = SubmitJob(es[t].get());
        ASSERT_TRUE(last->Wait(kLong).ok());
      });
    }
    for (auto& p : pushers) p.join();
  }
  s.reset();
  EXPECT_EQ(mock.freed(), 4 * 2000);
  EXPECT_EQ(MockJob::live.load(), 0);
}

}  // namespace
}  // namespace sched
