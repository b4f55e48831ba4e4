// sched/: load balancing across schedulers (drm_sched_entity_select_rq / pick_best),
// ModifySched, Entity::error(), and the fair policy's sharing of GPU time by priority.
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

class BalanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = *Scheduler::Create(&mock_a_, testing::Opts({.name = "a"}));
    b_ = *Scheduler::Create(&mock_b_, testing::Opts({.name = "b"}));
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    EXPECT_EQ(MockJob::live.load(), 0) << "jobs leaked";
  }
  MockBackend mock_a_, mock_b_;
  std::unique_ptr<Scheduler> a_, b_;
};

// An idle entity created on two schedulers goes to the one with the lower score; while its last
// job is unfinished it stays put even if the other becomes less loaded; once idle it moves.
TEST_F(BalanceTest, PicksLeastLoadedAndStaysWhileBusy) {
  auto busy = *Entity::Create({a_.get()});
  auto a1 = SubmitMock(busy.get());
  auto a2 = SubmitMock(busy.get());
  ASSERT_TRUE(SignalsWithin(a2.scheduled, kWait));
  EXPECT_EQ(a_->score(), 2);  // two jobs not done, no entity queued
  EXPECT_EQ(b_->score(), 0);

  auto e = *Entity::Create({a_.get(), b_.get()});
  auto j1 = SubmitMock(e.get());
  EXPECT_EQ(j1.job->scheduler(), b_.get());
  EXPECT_EQ(e->scheduler(), b_.get());
  // Make b the busier one; e's j1 is unfinished, so e stays on b.
  auto other = *Entity::Create({b_.get()});
  std::vector<testing::Submitted> bs;
  for (int i = 0; i < 4; ++i) bs.push_back(SubmitMock(other.get()));
  auto j2 = SubmitMock(e.get());
  EXPECT_EQ(j2.job->scheduler(), b_.get());
  // Finish everything on b; a is still busy (2), b is idle (0) — finish a's work too, then load a.
  while (mock_b_.run_order().size() < 6) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(mock_b_.Advance(6), 6);
  ASSERT_TRUE(SignalsWithin(j2.finished, kWait));
  EXPECT_EQ(mock_a_.Advance(2), 2);
  ASSERT_TRUE(SignalsWithin(a2.finished, kWait));
  auto b1 = SubmitMock(other.get());  // b: score 1 (+1 while queued), a: 0
  auto j3 = SubmitMock(e.get());
  EXPECT_EQ(j3.job->scheduler(), a_.get());
  while (mock_a_.run_order().size() < 3 || mock_b_.run_order().size() < 7) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(mock_a_.Advance(1), 1);
  EXPECT_EQ(mock_b_.Advance(1), 1);
  ASSERT_TRUE(SignalsWithin(j3.finished, kWait));
  ASSERT_TRUE(SignalsWithin(b1.finished, kWait));
}

// ModifySched to one scheduler moves the entity at the next Arm once idle; Entity::error() is
// the last scheduled job's error.
TEST_F(BalanceTest, ModifySchedAndEntityError) {
  auto e = *Entity::Create({a_.get()});
  auto j1 = SubmitMock(e.get());
  ASSERT_TRUE(SignalsWithin(j1.scheduled, kWait));
  EXPECT_TRUE(e->error().ok());
  ASSERT_TRUE(e->ModifySched({b_.get()}).ok());
  auto j2 = SubmitMock(e.get());  // j1 unfinished: stays on a
  EXPECT_EQ(j2.job->scheduler(), a_.get());
  ASSERT_TRUE(SignalsWithin(j2.scheduled, kWait));
  mock_a_.FailOldest(absl::DataLossError("hw"));
  EXPECT_EQ(mock_a_.Advance(1), 1);
  ASSERT_TRUE(SignalsWithin(j2.finished, kWait));
  EXPECT_TRUE(e->error().ok());  // j2 (the last scheduled) succeeded
  auto j3 = SubmitMock(e.get());
  EXPECT_EQ(j3.job->scheduler(), b_.get());
  ASSERT_TRUE(SignalsWithin(j3.scheduled, kWait));
  mock_b_.FailOldest(absl::DataLossError("hw"));
  ASSERT_TRUE(SignalsWithin(j3.finished, kWait));
  EXPECT_TRUE(absl::IsDataLoss(e->error())) << e->error();
  EXPECT_FALSE(e->ModifySched({}).ok());
  EXPECT_FALSE(e->ModifySched({nullptr}).ok());
  EXPECT_FALSE(Entity::Create({a_.get(), nullptr}).ok());
}

// The fair policy with one job at a time on the ring: a LOW entity competing with a NORMAL one
// gets some of the GPU (FIFO starves it completely) but much less than NORMAL — the shifts aim
// at 8:1.
int LowJobsAmongFirst(Policy policy, int first) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  opts.policy = policy;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  int low = 0;
  {
    auto blocker = *Entity::Create({s.get()});
    auto normal = *Entity::Create({s.get()}, Priority::kNormal);
    auto lowe = *Entity::Create({s.get()}, Priority::kLow);
    auto b = SubmitMock(blocker.get());
    EXPECT_TRUE(SignalsWithin(b.scheduled, kWait));
    std::vector<fence::FenceRef> all;
    for (int i = 0; i < 2 * first; ++i) {
      all.push_back(SubmitMock(i % 2 == 0 ? normal.get() : lowe.get(), absl::Microseconds(300))
                        .finished);
    }
    EXPECT_EQ(mock.Advance(1), 1);
    for (auto& f : all) EXPECT_TRUE(SignalsWithin(f, kWait));
    const auto order = mock.run_order();
    for (int i = 1; i <= first; ++i) low += order[i]->context() == lowe->fence_context() + 1;
  }
  s.reset();
  return low;
}

TEST(FairPolicy, LowPriorityGetsAShareButNotStarved) {
  const int fair_low = LowJobsAmongFirst(Policy::kFair, 45);
  EXPECT_GE(fair_low, 1);
  EXPECT_LE(fair_low, 15);
  EXPECT_EQ(LowJobsAmongFirst(Policy::kFifo, 45), 0);
  EXPECT_EQ(MockJob::live.load(), 0);
}

}  // namespace
}  // namespace sched
