// sched/ stress with real threads (run under TSan and ASan in CI): a window of jobs in flight per
// submitter while a "GPU" thread completes them; entity kill racing with pushes; pushes racing
// with the job's own completion and free (the kernel once touched a job after push: a UAF).
#include <atomic>
#include <thread>
#include <vector>

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
TEST(SchedStress, WindowOfJobsInFlight) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  std::atomic<bool> stop_gpu{false};
  std::thread gpu([&] {
    while (!stop_gpu.load()) {
      if (mock.Advance(1) == 0) std::this_thread::yield();
    }
  });
  std::atomic<int64_t> completed{0};
  {
    std::vector<std::unique_ptr<Entity>> es;
    for (int i = 0; i < 8; ++i) es.push_back(*Entity::Create({s.get()}));
    std::vector<std::thread> submitters;
    const absl::Time end = absl::Now() + absl::Seconds(1);
    for (int w = 0; w < 8; ++w) {
      submitters.emplace_back([&, w] {
        std::vector<fence::FenceRef> window;
        while (absl::Now() < end) {
          while (window.size() < 8) window.push_back(SubmitJob(es[w].get()));
          ASSERT_TRUE(window.front()->Wait(kLong).ok());
          EXPECT_TRUE(window.front()->error().ok());
          window.erase(window.begin());
          completed++;
        }
        for (auto& f : window) ASSERT_TRUE(f->Wait(kLong).ok());
      });
    }
    for (auto& t : submitters) t.join();
  }
  stop_gpu = true;
  gpu.join();
  s.reset();
  EXPECT_GT(completed.load(), 8);
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
