// sched/: priorities and selection policies, and timeouts (ports of drm_sched KUnit
// drm_sched_basic_timeout, drm_sched_skip_reset and drm_sched_priorities), on MockBackend.
#include <map>
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

constexpr absl::Duration kLong = absl::Seconds(10);

fence::FenceRef SubmitJob(Entity* e, MockJob** out = nullptr, bool dont_reset = false) {
  auto job = std::make_unique<MockJob>();
  EXPECT_TRUE(job->Init(e, 1).ok());
  job->dont_reset = dont_reset;
  if (out != nullptr) *out = job.get();
  return e->Submit(std::move(job));
}

// Blocks the scheduler (credit limit 1) with one job, queues `per_entity` jobs on each entity,
// then completes jobs one by one and returns the entities' indices in run order.
std::vector<int> RunOrder(Policy policy, const std::vector<Priority>& prios, int per_entity,
                          bool grouped = false) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  opts.policy = policy;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  std::vector<int> order;
  {
    auto blocker_entity = *Entity::Create({s.get()});
    SubmitJob(blocker_entity.get());
    while (mock.run_order().empty()) absl::SleepFor(absl::Milliseconds(1));
    std::vector<std::unique_ptr<Entity>> es;
    std::map<uint64_t, int> index_of_context;
    for (size_t i = 0; i < prios.size(); ++i) {
      es.push_back(*Entity::Create({s.get()}, prios[i]));
      index_of_context[es.back()->fence_context() + 1] = static_cast<int>(i);
    }
    if (grouped) {  // all of entity 0's jobs, then all of entity 1's, ...
      for (auto& e : es) {
        for (int j = 0; j < per_entity; ++j) SubmitJob(e.get());
      }
    } else {
      for (int j = 0; j < per_entity; ++j) {
        for (auto& e : es) SubmitJob(e.get());
      }
    }
    const size_t total = 1 + prios.size() * per_entity;
    for (size_t done = 0; done < total;) {
      done += mock.Advance(1);
      if (mock.run_order().size() < std::min(total, done + 1)) absl::SleepFor(absl::Milliseconds(1));
    }
    auto run = mock.run_order();
    for (size_t i = 1; i < run.size(); ++i) order.push_back(index_of_context[run[i]->context()]);
  }
  s.reset();
  EXPECT_EQ(MockJob::live.load(), 0);
  return order;
}

// upstream: drm_sched_priorities (deterministic form) — KERNEL before HIGH before NORMAL before
// LOW, whatever the push order.
TEST(SchedPolicy, PrioritiesOrderSelection) {
  std::vector<int> order = RunOrder(Policy::kFifo,
                                    {Priority::kLow, Priority::kNormal, Priority::kHigh,
                                     Priority::kKernel},
                                    2);
  EXPECT_EQ(order, (std::vector<int>{3, 3, 2, 2, 1, 1, 0, 0}));
}

// FIFO: equal priorities run in push order (all of e0's jobs were pushed first); round-robin
// alternates between the entities whatever the push order.
TEST(SchedPolicy, FifoVersusRoundRobin) {
  const std::vector<Priority> two = {Priority::kNormal, Priority::kNormal};
  EXPECT_EQ(RunOrder(Policy::kFifo, two, 3, /*grouped=*/true),
            (std::vector<int>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(RunOrder(Policy::kRoundRobin, two, 3, /*grouped=*/true),
            (std::vector<int>{0, 1, 0, 1, 0, 1}));
}

// SetPriority takes effect at the next selection.
TEST(SchedPolicy, SetPriorityAppliesToNextSelection) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  {
    auto blocker = *Entity::Create({s.get()});
    SubmitJob(blocker.get());
    while (mock.run_order().empty()) absl::SleepFor(absl::Milliseconds(1));
    auto a = *Entity::Create({s.get()}, Priority::kNormal);
    auto b = *Entity::Create({s.get()}, Priority::kNormal);
    fence::FenceRef fa = SubmitJob(a.get());
    fence::FenceRef fb = SubmitJob(b.get());
    b->SetPriority(Priority::kHigh);
    EXPECT_EQ(mock.Advance(1), 1);
    while (mock.run_order().size() < 2) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(mock.run_order()[1], fb);
    EXPECT_EQ(mock.Advance(2), 1);
    while (mock.run_order().size() < 3) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(mock.Advance(1), 1);
    EXPECT_TRUE(fa->Wait(kLong).ok());
  }
  s.reset();
}

// upstream: drm_sched_basic_timeout (timeout 200 ms) — not timed out after 100 ms; after a further
// 200 ms the backend was asked (TIMEDOUT) and the job's finished fence carries ETIMEDOUT.
TEST(SchedTimeout, DrmSchedBasicTimeout) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.timeout = absl::Milliseconds(200);
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  {
    auto e = *Entity::Create({s.get()});
    MockJob* job;
    fence::FenceRef finished = SubmitJob(e.get(), &job);
    while (mock.run_order().empty()) absl::SleepFor(absl::Milliseconds(1));
    absl::SleepFor(absl::Milliseconds(100));
    EXPECT_FALSE(finished->IsSignaled());
    EXPECT_FALSE(job->timed_out.load());
    ASSERT_TRUE(finished->Wait(kLong).ok());
    EXPECT_TRUE(absl::IsDeadlineExceeded(finished->error())) << finished->error();
  }
  s.reset();
  EXPECT_EQ(mock.freed(), 1);
  EXPECT_EQ(MockJob::live.load(), 0);
}

// upstream: drm_sched_skip_reset — a DONT_RESET job reports no hang: it stays on the hardware,
// RESET_SKIPPED is set, and Advance(1) still completes it normally (it was put back).
TEST(SchedTimeout, DrmSchedSkipReset) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.timeout = absl::Milliseconds(200);
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  {
    auto e = *Entity::Create({s.get()});
    MockJob* job;
    fence::FenceRef finished = SubmitJob(e.get(), &job, /*dont_reset=*/true);
    EXPECT_FALSE(finished->Wait(absl::Milliseconds(400)).ok());
    EXPECT_TRUE(job->reset_skipped.load());
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(finished->Wait(kLong).ok());
    EXPECT_TRUE(finished->error().ok());
  }
  s.reset();
  EXPECT_EQ(mock.freed(), 1);
  EXPECT_EQ(MockJob::live.load(), 0);
}

}  // namespace
}  // namespace sched
