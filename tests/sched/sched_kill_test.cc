// sched/: entity kill and teardown (port of drm_sched KUnit drm_sched_basic_entity_cleanup, and
// the kill rules: queued jobs never run, complete with ESRCH after their dependencies, later
// pushes are killed too, nothing blocks).
#include <vector>

#include "absl/time/clock.h"
#include "fence/fence_context.h"
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

fence::FenceRef SubmitJob(Entity* e, const fence::FenceRef& dep = nullptr) {
  auto job = std::make_unique<MockJob>();
  EXPECT_TRUE(job->Init(e, 1).ok());
  EXPECT_TRUE(job->AddDependency(dep).ok());
  return e->Submit(std::move(job));
}

// upstream: drm_sched_basic_entity_cleanup — 4 entities, 100 chained jobs, destroy the entities
// while about half are still queued (here: held back by a credit limit of 10): the destructors
// return, queued jobs never reach the backend and end with ESRCH after their dependencies;
// jobs on the hardware finish normally.
TEST(SchedKill, DrmSchedBasicEntityCleanup) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 10;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  std::vector<fence::FenceRef> finished;
  {
    std::vector<std::unique_ptr<Entity>> es;
    for (int i = 0; i < 4; ++i) es.push_back(*Entity::Create({s.get()}));
    fence::FenceRef prev;
    for (int i = 0; i < 100; ++i) {
      prev = SubmitJob(es[i % 4].get(), prev);
      finished.push_back(prev);
    }
    // Advance only while a job is on the hardware: an Advance with nothing running would move
    // the mock's timeline ahead, and a later one would then complete two jobs at once (this
    // flaked on a loaded machine with the oneTBB executor).
    size_t done = 0;
    while (done < 50) {
      if (mock.run_order().size() <= done) {
        absl::SleepFor(absl::Milliseconds(1));
        continue;
      }
      done += mock.Advance(1);
    }
    ASSERT_TRUE(finished[49]->Wait(kLong).ok());
    const absl::Time t0 = absl::Now();
    es.clear();  // flush (up to 1 s each: the queues cannot drain) + kill
    EXPECT_LT(absl::Now() - t0, absl::Seconds(30));
  }
  const size_t ran = mock.run_order().size();
  EXPECT_LT(ran, 100u);
  EXPECT_EQ(mock.Advance(100), static_cast<int>(ran - 50));  // what was on the hardware
  for (size_t i = 0; i < finished.size(); ++i) {
    ASSERT_TRUE(finished[i]->Wait(kLong).ok()) << i;
    if (i < ran) {
      EXPECT_TRUE(finished[i]->error().ok()) << i;
    } else {
      EXPECT_TRUE(absl::IsNotFound(finished[i]->error())) << i << " " << finished[i]->error();
    }
  }
  s.reset();
  EXPECT_EQ(mock.freed(), 100);
  EXPECT_EQ(MockJob::live.load(), 0);
}

// Rule: a killed job waits for its dependencies before it completes; Kill itself does not block;
// a push after the kill is killed too.
TEST(SchedKill, KilledJobsWaitForDependenciesAndLaterPushesAreKilled) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  fence::FenceContext external;
  fence::FenceRef gate = external.NewFence();
  {
    auto blocker = *Entity::Create({s.get()});
    SubmitJob(blocker.get());  // holds the only credit
    auto e = *Entity::Create({s.get()});
    fence::FenceRef queued = SubmitJob(e.get(), gate);
    e->Kill();
    EXPECT_FALSE(queued->Wait(absl::Milliseconds(100)).ok());  // waits for its dependency
    gate->Signal();
    ASSERT_TRUE(queued->Wait(kLong).ok());
    EXPECT_TRUE(absl::IsNotFound(queued->error()));
    fence::FenceRef late = SubmitJob(e.get());
    ASSERT_TRUE(late->Wait(kLong).ok());
    EXPECT_TRUE(absl::IsNotFound(late->error()));
    EXPECT_EQ(mock.run_order().size(), 1u);  // only the blocker ever ran
    EXPECT_EQ(mock.Advance(1), 1);
  }
  s.reset();
  EXPECT_EQ(mock.freed(), 3);
  EXPECT_EQ(MockJob::live.load(), 0);
}

// Teardown never hangs: a killed job whose dependency never signals is failed by the scheduler's
// destructor.
TEST(SchedKill, TeardownWithUnsignalledDependencyDoesNotHang) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  fence::FenceContext external;
  fence::FenceRef never = external.NewFence();
  fence::FenceRef finished;
  {
    auto e = *Entity::Create({s.get()});
    finished = SubmitJob(e.get(), never);
  }  // flush times out after 1 s, kill: the job waits for `never`
  EXPECT_FALSE(finished->IsSignaled());
  s.reset();
  ASSERT_TRUE(finished->IsSignaledFlag());
  EXPECT_TRUE(absl::IsNotFound(finished->error()));
  EXPECT_EQ(MockJob::live.load(), 0);
  never->Signal();
}

}  // namespace
}  // namespace sched
