// sched/: the drm_sched KUnit scenarios that need a hardware timeline of its own (jobs with
// durations), each named after its upstream test: drm_sched_basic_test (4 cases),
// drm_sched_priorities, drm_sched_change_priority, drm_sched_test_modify_sched and
// drm_sched_interleaved_submit_test.
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/sched_fence.h"
#include "sched/scheduler.h"
#include "tests/sched/mock_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::kWait;
using testing::MockBackend;
using testing::MockJob;
using testing::SubmitMock;

constexpr absl::Duration kJob = absl::Milliseconds(1);

struct BasicCase {
  const char* name;
  int num_entities;
  bool dep_chain;
};

class DrmSchedBasicTest : public ::testing::TestWithParam<BasicCase> {
 protected:
  void TearDown() override { EXPECT_EQ(MockJob::live.load(), 0) << "jobs leaked"; }
};

// upstream: drm_sched_basic_test — 100 jobs of 1 ms spread round-robin over the entities, each
// optionally depending on the previous job's finished fence: the last one finishes, every job
// succeeds, and a dependency chain runs in chain order (pipelined on the same scheduler).
TEST_P(DrmSchedBasicTest, HundredJobsOfOneMillisecond) {
  const BasicCase& c = GetParam();
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    std::vector<std::unique_ptr<Entity>> es;
    for (int i = 0; i < c.num_entities; ++i) es.push_back(*Entity::Create({s.get()}));
    std::vector<fence::FenceRef> finished;
    for (int i = 0; i < 100; ++i) {
      std::vector<fence::FenceRef> deps;
      if (c.dep_chain && !finished.empty()) deps.push_back(finished.back());
      finished.push_back(SubmitMock(es[i % c.num_entities].get(), kJob, deps).finished);
    }
    ASSERT_TRUE(finished.back()->Wait(kWait).ok());
    for (auto& f : finished) {
      ASSERT_TRUE(f->Wait(kWait).ok());
      EXPECT_TRUE(f->error().ok());
    }
    if (c.dep_chain) {
      EXPECT_EQ(mock.run_order(), finished);
    }
  }
  s.reset();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DrmSchedBasicTest,
    ::testing::Values(BasicCase{"QueueOfJobsInSingleEntity", 1, false},
                      BasicCase{"ChainOfDependentJobsAcrossMultipleEntities", 1, true},
                      BasicCase{"MultipleIndependentJobQueues", 4, false},
                      BasicCase{"MultipleInterDependentJobQueues", 4, true}),
    [](const ::testing::TestParamInfo<BasicCase>& info) { return info.param.name; });

// upstream: drm_sched_priorities — one entity per priority, 100 jobs of 1 ms round-robin: the
// last job finishes (no priority starves another to death under the default fair policy).
TEST(DrmSchedBasicPriorityTests, DrmSchedPriorities) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    std::vector<std::unique_ptr<Entity>> es;
    for (Priority p : {Priority::kKernel, Priority::kHigh, Priority::kNormal, Priority::kLow}) {
      es.push_back(*Entity::Create({s.get()}, p));
    }
    std::vector<fence::FenceRef> finished;
    for (int i = 0; i < 100; ++i) finished.push_back(SubmitMock(es[i % 4].get(), kJob).finished);
    for (auto& f : finished) ASSERT_TRUE(f->Wait(kWait).ok());
  }
  s.reset();
  EXPECT_EQ(MockJob::live.load(), 0);
}

// upstream: drm_sched_change_priority — 1000 jobs of 1 ms over 4 entities while, every
// 200-500 us, one entity's priority rotates: everything completes, nothing crashes or leaks.
TEST(DrmSchedBasicPriorityTests, DrmSchedChangePriority) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    std::vector<std::unique_ptr<Entity>> es;
    for (Priority p : {Priority::kKernel, Priority::kHigh, Priority::kNormal, Priority::kLow}) {
      es.push_back(*Entity::Create({s.get()}, p));
    }
    std::vector<fence::FenceRef> finished;
    for (int i = 0; i < 1000; ++i) finished.push_back(SubmitMock(es[i % 4].get(), kJob).finished);
    std::minstd_rand rng(42);
    int rotations = 0;
    for (int i = 0; !finished.back()->IsSignaledFlag(); ++i) {
      Entity* e = es[i % 4].get();
      e->SetPriority(static_cast<Priority>((static_cast<int>(e->priority()) + 1) % 4));
      ++rotations;
      absl::SleepFor(absl::Microseconds(200 + rng() % 300));
    }
    EXPECT_GT(rotations, 0);
    for (auto& f : finished) {
      ASSERT_TRUE(f->Wait(kWait).ok());
      EXPECT_TRUE(f->error().ok());
    }
  }
  s.reset();
  EXPECT_EQ(MockJob::live.load(), 0);
}

// upstream: drm_sched_test_modify_sched — 3 schedulers, 13 entities (entity i on scheduler
// i % 3), 1000 jobs of 1 ms round-robin while every 200-500 us one entity is moved to the next
// scheduler. Everything completes; entities do migrate; and an entity's job that landed on a
// different scheduler than its previous job started only after that job finished (entity order
// holds across schedulers). Unlike upstream, every second round of 13 jobs waits for the one
// before, so that entities go idle and the moves take effect (a busy entity stays put).
TEST(DrmSchedBasicModifySchedTests, DrmSchedTestModifySched) {
  constexpr int kScheds = 3, kEntities = 13, kJobs = 1000;
  std::vector<std::unique_ptr<MockBackend>> mocks;
  std::vector<std::unique_ptr<Scheduler>> scheds;
  for (int i = 0; i < kScheds; ++i) {
    mocks.push_back(std::make_unique<MockBackend>());
    scheds.push_back(*Scheduler::Create(mocks.back().get(), testing::Opts()));
  }
  {
    std::vector<std::unique_ptr<Entity>> es;
    for (int i = 0; i < kEntities; ++i) es.push_back(*Entity::Create({scheds[i % kScheds].get()}));
    std::vector<std::vector<testing::Submitted>> per_entity(kEntities);
    std::minstd_rand rng(7);
    absl::Time next_move = absl::Now();
    int moved = 0;
    for (int i = 0; i < kJobs; ++i) {
      if (absl::Now() >= next_move) {
        const int e = moved % kEntities;
        ASSERT_TRUE(es[e]->ModifySched({scheds[(e + 1 + moved / kEntities) % kScheds].get()}).ok());
        ++moved;
        next_move = absl::Now() + absl::Microseconds(200 + rng() % 300);
      }
      if (i % (2 * kEntities) == 0 && i > 0) {
        ASSERT_TRUE(per_entity[(i - 1) % kEntities].back().finished->Wait(kWait).ok());
      }
      per_entity[i % kEntities].push_back(SubmitMock(es[i % kEntities].get(), kJob));
    }
    int migrations = 0;
    for (auto& jobs : per_entity) {
      for (size_t k = 0; k < jobs.size(); ++k) {
        ASSERT_TRUE(jobs[k].finished->Wait(kWait).ok());
        if (k == 0) continue;
        const Scheduler* before = FinishedFence::Cast(jobs[k - 1].finished.get())->scheduler();
        const Scheduler* now = FinishedFence::Cast(jobs[k].finished.get())->scheduler();
        if (before == now) continue;
        ++migrations;
        EXPECT_GE(jobs[k].scheduled->timestamp(), jobs[k - 1].finished->timestamp());
      }
    }
    EXPECT_GT(migrations, 0);
  }
  scheds.clear();
  EXPECT_EQ(MockJob::live.load(), 0);
}

// upstream: drm_sched_interleaved_submit_test — 16 workers, worker i's jobs last 100 us * (i+1),
// each worker submits (1 s / 16) / duration jobs keeping 8 in flight: every job finishes.
TEST(DrmSchedConcurrentTests, DrmSchedInterleavedSubmitTest) {
  constexpr int kWorkers = 16, kWindow = 8;
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  std::atomic<int> failures{0};
  {
    std::vector<std::thread> workers;
    for (int w = 0; w < kWorkers; ++w) {
      workers.emplace_back([&, w] {
        auto e = *Entity::Create({s.get()});
        const absl::Duration d = absl::Microseconds(100 * (w + 1));
        const int count = std::max<int>(1, (1000000 / kWorkers) / (100 * (w + 1)));
        std::deque<fence::FenceRef> window;
        for (int j = 0; j < count; ++j) {
          if (window.size() == kWindow) {
            if (!window.front()->Wait(kWait).ok()) failures.fetch_add(1);
            window.pop_front();
          }
          window.push_back(SubmitMock(e.get(), d).finished);
        }
        for (auto& f : window) {
          if (!f->Wait(kWait).ok() || !f->error().ok()) failures.fetch_add(1);
        }
      });
    }
    for (auto& t : workers) t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  s.reset();
  EXPECT_EQ(MockJob::live.load(), 0);
}

}  // namespace
}  // namespace sched
