// The job submission API (issue 10, "API traps"): an armed job is a move-only handle that must
// be pushed; dropping it cancels the job without hanging its entity; Entity::Submit is the
// one-call path.
#include <memory>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "fence/fence.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "tests/sched/mock_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::kWait;
using testing::MockBackend;
using testing::MockJob;
using testing::SignalsWithin;

// Compile-time contract: the handle cannot be copied, only moved, and Push consumes it (an
// lvalue handle cannot be pushed: `armed.Push()` does not compile, `std::move(armed).Push()` does).
static_assert(!std::is_copy_constructible_v<ArmedJob>);
static_assert(!std::is_copy_assignable_v<ArmedJob>);
static_assert(std::is_nothrow_move_constructible_v<ArmedJob>);
static_assert(!std::is_invocable_v<decltype(&ArmedJob::Push), ArmedJob&>);
static_assert(std::is_invocable_v<decltype(&ArmedJob::Push), ArmedJob&&>);

std::unique_ptr<MockJob> NewJob(Entity* e) {
  auto job = std::make_unique<MockJob>();
  EXPECT_TRUE(job->Init(e, 1).ok());
  return job;
}

// Issue 10: an armed job destroyed without Push used to keep the entity's submission lock (the
// next Arm blocked forever) and its fences never signalled. Now it is cancelled: both fences
// signal, finished with CancelledError; the backend never sees it; the entity keeps working.
TEST(ArmedJob, DropWithoutPushCancelsAndDoesNotHangTheEntity) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  auto e = *Entity::Create({s.get()});
  fence::FenceRef dropped_scheduled, dropped_finished;
  {
    ArmedJob armed = Job::Arm(NewJob(e.get()));
    dropped_scheduled = armed.scheduled();
    dropped_finished = armed.finished();
  }  // destroyed without Push
  ASSERT_TRUE(SignalsWithin(dropped_finished, kWait));
  EXPECT_TRUE(dropped_scheduled->IsSignaledFlag());
  EXPECT_TRUE(absl::IsCancelled(dropped_finished->error()));
  // The entity is not stuck: the next job takes the next seqno, runs and completes.
  fence::FenceRef next = e->Submit(NewJob(e.get()));
  EXPECT_EQ(next->seqno(), dropped_finished->seqno() + 1);
  ASSERT_TRUE(SignalsWithin(testing::SubmitMock(e.get()).scheduled, kWait));
  EXPECT_EQ(mock.Advance(2), 2);
  EXPECT_TRUE(SignalsWithin(next, kWait));
  EXPECT_TRUE(next->error().ok());
  EXPECT_EQ(mock.run_order().size(), 2u);  // the dropped job never reached RunJob
  e.reset();
  s.reset();
  EXPECT_EQ(mock.freed(), 2);  // nor FreeJob
}

// Seqno order: a dropped job signals only after the entity's previous job finished, so a Resv
// that replaced the previous job's fence by the dropped one's never looks idle too early. A
// later job of the entity still runs and completes.
TEST(ArmedJob, DroppedJobSignalsAfterThePreviousJob) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  auto e = *Entity::Create({s.get()});
  testing::Submitted a = testing::SubmitMock(e.get());  // on the hardware until Advance
  ASSERT_TRUE(SignalsWithin(a.scheduled, kWait));
  fence::FenceRef dropped;
  {
    ArmedJob armed = Job::Arm(NewJob(e.get()));
    dropped = armed.finished();
  }
  EXPECT_FALSE(dropped->IsSignaledFlag());  // A cannot have finished: nothing advanced it
  fence::FenceRef c = e->Submit(NewJob(e.get()));
  EXPECT_FALSE(dropped->IsSignaledFlag());
  EXPECT_EQ(mock.Advance(1), 1);  // A finishes
  ASSERT_TRUE(SignalsWithin(dropped, kWait));
  EXPECT_TRUE(a.finished->IsSignaledFlag());
  EXPECT_TRUE(absl::IsCancelled(dropped->error()));
  while (mock.run_order().size() < 2) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(mock.Advance(1), 1);  // C
  EXPECT_TRUE(SignalsWithin(c, kWait));
  EXPECT_TRUE(c->error().ok());
}

// A dropped job also waits for its own dependencies before its fences signal (as a killed job
// does: whoever waits for its out-fence may rely on them).
TEST(ArmedJob, DroppedJobWaitsForItsDependencies) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  auto e = *Entity::Create({s.get()});
  fence::FenceContext external;
  fence::FenceRef gate = external.NewFence();
  fence::FenceRef dropped;
  {
    auto job = NewJob(e.get());
    ASSERT_TRUE(job->AddDependency(gate).ok());
    ArmedJob armed = Job::Arm(std::move(job));
    dropped = armed.finished();
  }
  EXPECT_FALSE(dropped->IsSignaledFlag());
  EXPECT_EQ(MockJob::live.load(), 1);  // kept until it completes
  gate->Signal();
  EXPECT_TRUE(dropped->IsSignaledFlag());  // signalled from the gate's callback
  EXPECT_TRUE(absl::IsCancelled(dropped->error()));
  EXPECT_EQ(MockJob::live.load(), 0);
}

// Entity::Submit = Arm + Push: returns the finished fence; seqnos follow submission order.
TEST(EntitySubmit, ArmsAndPushesInOneCall) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  auto e = *Entity::Create({s.get()});
  fence::FenceRef f1 = e->Submit(NewJob(e.get()));
  fence::FenceRef f2 = e->Submit(NewJob(e.get()));
  EXPECT_EQ(f1->context(), e->fence_context() + 1);
  EXPECT_EQ(f2->seqno(), f1->seqno() + 1);
  while (mock.run_order().size() < 2) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(mock.Advance(2), 2);
  EXPECT_TRUE(SignalsWithin(f1, kWait));
  EXPECT_TRUE(SignalsWithin(f2, kWait));
}

// Contract: Submit of a job initialised on another entity crashes.
TEST(EntitySubmitDeathTest, JobOfAnotherEntity) {
  EXPECT_DEATH(
      {
        MockBackend mock;
        auto s = *Scheduler::Create(&mock, testing::Opts());
        auto e1 = *Entity::Create({s.get()});
        auto e2 = *Entity::Create({s.get()});
        e2->Submit(NewJob(e1.get()));
      },
      "another entity");
}

}  // namespace
}  // namespace sched
