// The scheduler's batched rounds and same-scheduler pipelining (issue 13), and its lock-free
// wake-up: what a caller may observe stays what scheduler.h and backend.h promise.
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "fence/fence.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/sched_fence.h"
#include "sched/scheduler.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::kWait;
using testing::Opts;

// Completes every job at once (RunJob returns no hardware fence) and checks, in RunJob, the
// pipelining contract: every dependency of the job that is a finished fence of a job of this
// scheduler has at least its scheduled fence signalled (that job reached RunJob first).
class CheckingBackend : public Backend {
 public:
  absl::StatusOr<fence::FenceRef> RunJob(Job& job) override {
    for (const fence::FenceRef& dep : job.dependencies()) {
      const FinishedFence* f = FinishedFence::Cast(dep.get());
      if (f == nullptr) {
        if (!dep->IsSignaledFlag()) violations.fetch_add(1);
        continue;
      }
      if (!FinishedFence::ScheduledOf(dep)->IsSignaledFlag()) violations.fetch_add(1);
    }
    {
      absl::MutexLock l(&mu);
      order.push_back(job.finished());
    }
    return fence::FenceRef(nullptr);
  }
  std::atomic<int> violations{0};
  absl::Mutex mu;
  std::vector<fence::FenceRef> order ABSL_GUARDED_BY(mu);
};

fence::FenceRef SubmitPlain(Entity* e, const fence::FenceRef& dep) {
  auto job = std::make_unique<Job>();
  EXPECT_TRUE(job->Init(e, 1).ok());
  EXPECT_TRUE(job->AddDependency(dep).ok());
  return e->Submit(std::move(job));
}

// A chain over 4 entities of one scheduler, submitted faster than it runs (so that many links
// are selected in one round): every job reaches RunJob after the job it depends on, in chain
// order, under both policies.
TEST(SchedRound, SameSchedulerChainRunsInOrderAfterEachDependency) {
  for (Policy policy : {Policy::kFair, Policy::kFifo}) {
    CheckingBackend backend;
    auto s = *Scheduler::Create(&backend, Opts({.policy = policy}));
    {
      std::vector<std::unique_ptr<Entity>> es;
      for (int i = 0; i < 4; ++i) es.push_back(*Entity::Create({s.get()}));
      std::vector<fence::FenceRef> chain;
      fence::FenceRef prev;
      for (int i = 0; i < 2000; ++i) {
        prev = SubmitPlain(es[i % 4].get(), prev);
        chain.push_back(prev);
      }
      ASSERT_TRUE(prev->Wait(kWait).ok());
      EXPECT_EQ(backend.violations.load(), 0);
      absl::MutexLock l(&backend.mu);
      ASSERT_EQ(backend.order.size(), chain.size());
      for (size_t i = 0; i < chain.size(); ++i) {
        ASSERT_EQ(backend.order[i], chain[i]) << "job " << i << " ran out of chain order";
      }
    }
  }
}

// A dependency on a job of another scheduler is never pipelined: the dependent runs only after
// the other job's finished fence signalled (CheckingBackend's check for foreign fences counts
// ScheduledOf, so check finished here).
class FinishedCheckingBackend : public Backend {
 public:
  absl::StatusOr<fence::FenceRef> RunJob(Job& job) override {
    for (const fence::FenceRef& dep : job.dependencies()) {
      if (!dep->IsSignaledFlag()) violations.fetch_add(1);
    }
    return fence::FenceRef(nullptr);
  }
  std::atomic<int> violations{0};
};

TEST(SchedRound, OtherSchedulerDependencyWaitsForFinished) {
  FinishedCheckingBackend a_backend, b_backend;
  auto a = *Scheduler::Create(&a_backend, Opts());
  auto b = *Scheduler::Create(&b_backend, Opts());
  {
    auto ea = *Entity::Create({a.get()});
    auto eb = *Entity::Create({b.get()});
    fence::FenceRef prev;
    for (int i = 0; i < 1000; ++i) prev = SubmitPlain(i % 2 == 0 ? ea.get() : eb.get(), prev);
    ASSERT_TRUE(prev->Wait(kWait).ok());
    EXPECT_EQ(a_backend.violations.load(), 0);
    EXPECT_EQ(b_backend.violations.load(), 0);
  }
}

// With no idle spin, the work item goes idle between bursts: pushes from several threads racing
// with it going idle (the lock-free wake-up) are never lost — every job completes.
TEST(SchedRound, PushesRacingWithIdleAreNeverLost) {
  CheckingBackend backend;
  auto s = *Scheduler::Create(&backend, Opts({.idle_spin = absl::ZeroDuration()}));
  {
    constexpr int kThreads = 4, kJobs = 2000;
    std::vector<std::unique_ptr<Entity>> es;
    for (int i = 0; i < kThreads; ++i) es.push_back(*Entity::Create({s.get()}));
    std::vector<std::thread> threads;
    std::vector<std::vector<fence::FenceRef>> done(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kJobs; ++i) {
          done[t].push_back(SubmitPlain(es[t].get(), nullptr));
          if (i % 64 == 0) std::this_thread::yield();
        }
      });
    }
    for (auto& th : threads) th.join();
    for (auto& v : done) {
      for (auto& f : v) ASSERT_TRUE(f->Wait(kWait).ok());
    }
  }
}

}  // namespace
}  // namespace sched
