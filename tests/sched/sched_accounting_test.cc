// The fair policy's integer accounting (sched/internal/entity_stats.h) against the
// absl::Duration / absl::Time arithmetic it replaced: a job's charge from its fences' timestamps,
// the scheduler's average (an EWMA kept in quarter nanoseconds, the resolution Duration had), and
// the run queue's placement that compares an entity's average with it.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sched/internal/entity_stats.h"
#include "sched/internal/run_queue.h"
#include "sched/policy.h"

namespace sched::internal {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

// The Duration form of the scheduler's average update, as it was.
absl::Duration DurationAverage(absl::Duration avg, absl::Duration d) {
  return avg == absl::ZeroDuration() ? d : avg + (d - avg) / 4;
}

TEST(SchedAccountingTest, ChargeIsEndMinusStartClampedToTheBounds) {
  const int64_t now = absl::ToUnixNanos(absl::FromUnixSeconds(1800000000));
  EXPECT_EQ(JobChargeNs(now, now), kMinJobChargeNs);  // completed at once
  EXPECT_EQ(JobChargeNs(now, now + 5000), 5000);
  EXPECT_EQ(JobChargeNs(now + 5000, now), kMinJobChargeNs);  // freed out of order
  EXPECT_EQ(JobChargeNs(now, now + 2 * kMaxJobChargeNs), kMaxJobChargeNs);
  // Infinite times (a fence signalled at InfinitePast / InfiniteFuture by outside code).
  EXPECT_EQ(JobChargeNs(now, kMin), kMinJobChargeNs);
  EXPECT_EQ(JobChargeNs(kMax, kMin), kMinJobChargeNs);  // overflows: end before start
  EXPECT_EQ(JobChargeNs(kMin, kMax), kMaxJobChargeNs);  // overflows: end after start
  EXPECT_EQ(JobChargeNs(now, kMax), kMaxJobChargeNs);
  EXPECT_EQ(JobChargeNs(kMin, now), kMaxJobChargeNs);
}

TEST(SchedAccountingTest, AverageMatchesTheDurationArithmeticExactly) {
  // A sequence whose integer-nanosecond average would drift (review rvs3 F2), then random runs.
  absl::Duration old_avg = absl::ZeroDuration();
  int64_t avg_qns = 0;
  auto step = [&](int64_t d) {
    old_avg = DurationAverage(old_avg, absl::Nanoseconds(d));
    avg_qns = UpdateAverageQns(avg_qns, d);
    ASSERT_EQ(avg_qns, absl::ToInt64Nanoseconds(old_avg * 4)) << "after a charge of " << d;
  };
  step(900);
  step(1004);
  for (int i = 0; i < 30; ++i) step(1005);
  EXPECT_EQ(avg_qns, 4017);  // 1004.25 ns
  std::mt19937_64 rng(24);
  for (int run = 0; run < 200; ++run) {
    old_avg = absl::ZeroDuration();
    avg_qns = 0;
    const int64_t scale = int64_t{1} << (rng() % 40);
    for (int i = 0; i < 100; ++i) {
      step(std::max<int64_t>(kMinJobChargeNs, static_cast<int64_t>(rng() % scale)));
    }
  }
  step(kMaxJobChargeNs);  // the largest charge stays in range
}

TEST(SchedAccountingTest, EqualPriorityPlacementComparesWithTheQuarterNanosecondAverage) {
  // The scheduler's average is 1004.25 ns (above); an entity whose average is 1004 ns is placed
  // just ahead of the head (−1), one whose average is 1005 ns just behind (+1) — as the Duration
  // comparison placed them.
  int64_t avg_qns = 0;
  for (int64_t d : {900, 1004}) avg_qns = UpdateAverageQns(avg_qns, d);
  for (int i = 0; i < 30; ++i) avg_qns = UpdateAverageQns(avg_qns, 1005);
  ASSERT_EQ(avg_qns, 4017);
  for (const auto& [entity_avg, expect] : {std::pair<int64_t, int64_t>{1004, -1}, {1005, 1}}) {
    EntityStats head_stats, stats;
    head_stats.AddJobTimeNs(900);
    stats.AddJobTimeNs(entity_avg);
    std::atomic<Priority> prio{Priority::kNormal};
    RqEntry head(nullptr, &prio, &head_stats), e(nullptr, &prio, &stats);
    RunQueue rq(Policy::kFair);
    rq.Add(&head, 1, avg_qns);
    rq.Add(&e, 2, avg_qns);
    EXPECT_EQ(e.vruntime - head.vruntime, expect) << "entity average " << entity_avg << " ns";
  }
}

}  // namespace
}  // namespace sched::internal
