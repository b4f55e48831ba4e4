// sched/: recovery — Stop/Start/ResubmitJobs, karma and guilty entities, Fault, and the error
// each path leaves on a job's finished fence (the reference's error-propagation table).
#include <atomic>
#include <memory>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
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

class RecoveryTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(MockJob::live.load(), 0) << "jobs leaked"; }
};

// A backend whose timeout handler follows the kernel's recovery recipe: stop, blame, reset the
// hardware, resubmit, start.
class RecoveringBackend : public MockBackend {
 public:
  TimeoutStatus TimedOutJob(Job& job) override {
    sched->Stop(&job);
    Scheduler::IncreaseKarma(job);
    DropAll();
    sched->ResubmitJobs();
    sched->Start(absl::OkStatus());
    timeouts.fetch_add(1);
    return TimeoutStatus::kReset;
  }
  Scheduler* sched = nullptr;
  std::atomic<int> timeouts{0};
};

// drm_sched_stop/start recipe inside the timeout handler: the hung job's context is guilty
// (karma 1 > hang_limit 0), so after resubmission it finishes with CancelledError; the innocent
// job queued behind it on the same ring is resubmitted and finishes normally; the guilty
// entity's later jobs are cancelled too but still reach the backend.
// The handler is triggered with Fault() once both jobs are on the hardware: with a 100 ms timer a
// loaded machine (TSan) once let it expire before the innocent job ran, and expire again later.
TEST_F(RecoveryTest, StopResubmitStartInTimedOutJob) {
  RecoveringBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  mock.sched = s.get();
  {
    auto guilty = std::make_shared<std::atomic<bool>>(false);
    auto bad_entity = *Entity::Create({s.get()}, Priority::kNormal, guilty);
    auto good_entity = *Entity::Create({s.get()});
    auto hung = SubmitMock(bad_entity.get());
    ASSERT_TRUE(SignalsWithin(hung.scheduled, kWait));  // the oldest on the ring: blamed
    auto innocent = SubmitMock(good_entity.get());
    ASSERT_TRUE(SignalsWithin(innocent.scheduled, kWait));
    s->Fault();
    while (mock.timeouts.load() == 0) absl::SleepFor(absl::Milliseconds(5));
    EXPECT_TRUE(guilty->load());
    // Resubmitted: both are on the hardware again (run order: hung, innocent, hung, innocent).
    while (mock.run_order().size() < 4) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(mock.run_order()[2], hung.finished);
    EXPECT_EQ(mock.run_order()[3], innocent.finished);
    EXPECT_EQ(mock.Advance(2), 2);
    ASSERT_TRUE(SignalsWithin(hung.finished, kWait));
    ASSERT_TRUE(SignalsWithin(innocent.finished, kWait));
    EXPECT_TRUE(absl::IsCancelled(hung.finished->error())) << hung.finished->error();
    EXPECT_TRUE(innocent.finished->error().ok()) << innocent.finished->error();
    auto later = SubmitMock(bad_entity.get());
    ASSERT_TRUE(SignalsWithin(later.scheduled, kWait));  // still handed to the backend
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(later.finished, kWait));
    EXPECT_TRUE(absl::IsCancelled(later.finished->error()));
  }
  s.reset();
}

// drm_sched_start(sched, errno) for jobs that were detached and not resubmitted: they finish
// with that error (CancelledError when OK); a job whose hardware fence signalled before Stop is
// freed by Stop; a stopped scheduler runs nothing new until Start.
TEST_F(RecoveryTest, StartFailsDetachedJobsAndStopPausesSubmission) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    auto e = *Entity::Create({s.get()});
    auto done = SubmitMock(e.get());
    auto a = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(a.scheduled, kWait));
    // Signal the first hardware fence, then stop before (or after) the executor frees it.
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(done.finished, kWait));
    s->Stop(nullptr);
    EXPECT_TRUE(s->IsStopped());
    EXPECT_EQ(s->credit_count(), 0u);  // detached jobs gave their credits back
    auto b = SubmitMock(e.get());
    EXPECT_FALSE(SignalsWithin(b.scheduled, absl::Milliseconds(100)));
    int pending = 0;
    s->ForEachPendingJob([&](Job&) { ++pending; });
    EXPECT_EQ(pending, 1);  // `a` only: `done` was freed
    s->Start(absl::AbortedError("reset"));
    ASSERT_TRUE(SignalsWithin(a.finished, kWait));
    EXPECT_TRUE(absl::IsAborted(a.finished->error())) << a.finished->error();
    ASSERT_TRUE(SignalsWithin(b.scheduled, kWait));
    EXPECT_EQ(mock.Advance(1), 1);  // a's old hardware fence: detached, reaches nothing of ours
    EXPECT_TRUE(absl::IsAborted(a.finished->error()));
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(b.finished, kWait));
    EXPECT_TRUE(b.finished->error().ok());
    s->Stop(nullptr);
    s->Start(absl::OkStatus());  // nothing pending: a no-op round trip
  }
  s.reset();
}

// Start with OK for a detached job: CancelledError (errno ?: -ECANCELED).
TEST_F(RecoveryTest, StartWithOkCancelsDetachedJobs) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    auto e = *Entity::Create({s.get()});
    auto a = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(a.scheduled, kWait));
    s->Stop(nullptr);
    s->Start(absl::OkStatus());
    ASSERT_TRUE(SignalsWithin(a.finished, kWait));
    EXPECT_TRUE(absl::IsCancelled(a.finished->error()));
  }
  s.reset();
}

// Karma: a kernel-priority job is never blamed; InvalidateJob counts past a threshold.
TEST_F(RecoveryTest, KarmaSparesKernelPriorityJobs) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    auto guilty = std::make_shared<std::atomic<bool>>(false);
    auto k = *Entity::Create({s.get()}, Priority::kKernel, guilty);
    auto job = SubmitMock(k.get());
    ASSERT_TRUE(SignalsWithin(job.scheduled, kWait));
    Scheduler::IncreaseKarma(*job.job);
    EXPECT_EQ(job.job->karma(), 0);
    EXPECT_FALSE(guilty->load());
    EXPECT_FALSE(Scheduler::InvalidateJob(*job.job, 1));
    EXPECT_TRUE(Scheduler::InvalidateJob(*job.job, 1));
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(SignalsWithin(job.finished, kWait));
  }
  s.reset();
}

// drm_sched_fault: the timeout handler runs now even without a timeout configured; the mock
// resets the job, which fails with DeadlineExceeded ("ETIMEDOUT").
TEST_F(RecoveryTest, FaultRunsTimeoutHandlerNow) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    auto e = *Entity::Create({s.get()});
    auto a = SubmitMock(e.get());
    ASSERT_TRUE(SignalsWithin(a.scheduled, kWait));
    EXPECT_FALSE(SignalsWithin(a.finished, absl::Milliseconds(50)));
    s->Fault();
    ASSERT_TRUE(SignalsWithin(a.finished, kWait));
    EXPECT_TRUE(absl::IsDeadlineExceeded(a.finished->error())) << a.finished->error();
  }
  s.reset();
}

// Stop from another thread while jobs flow: waits for the executor to be between jobs, and no
// job is lost — everything pushed before and during the stop finishes after Start.
TEST_F(RecoveryTest, StopStartRacingWithSubmission) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  {
    auto e = *Entity::Create({s.get()});
    std::vector<fence::FenceRef> finished;
    for (int round = 0; round < 20; ++round) {
      for (int i = 0; i < 5; ++i) {
        finished.push_back(SubmitMock(e.get(), absl::Microseconds(50)).finished);
      }
      s->Stop(nullptr);
      s->ResubmitJobs();
      s->Start(absl::OkStatus());
    }
    for (auto& f : finished) ASSERT_TRUE(SignalsWithin(f, kWait));
  }
  s.reset();
}

}  // namespace
}  // namespace sched
