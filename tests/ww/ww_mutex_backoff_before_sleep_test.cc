// ww::WwAcquireContext::SetBackoffBeforeSleep (beyond the kernel): a Wound-Wait context holding
// locks backs off instead of sleeping behind an OLDER holder; behind a younger holder, a holder
// without a context, or with no locks held, it waits as the ww rules say. Wait-Die is unchanged.
// Every test would hang (bounded by the helper's 10 s fallback, then fail) if a wait happened
// where a back-off is expected.
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/ww/holder.h"
#include "ww/ww_mutex.h"

namespace ww {
namespace {

// Bounded: a lock that backs off instead of queueing fails the test instead of hanging it.
void WaitForWaiters(const WwMutex& m, int n) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (m.WaiterCountForTesting() < n) {
    if (absl::Now() > deadline) {
      ADD_FAILURE() << "no waiter queued within 10 s";
      return;
    }
    absl::SleepFor(absl::Microseconds(50));
  }
}

using testing::Holder;

// `ctx` (holding whatever it holds) locks `m`, held by `holder`: it must wait, and get it once
// the holder releases (which happens only after it has queued).
void ExpectWaitsForHolder(WwMutex& m, WwAcquireContext* ctx, Holder& holder) {
  std::thread releaser([&] {
    WaitForWaiters(m, 1);
    holder.Release();
  });
  EXPECT_TRUE(m.Lock(ctx).ok());
  releaser.join();
  m.Unlock();
}

TEST(BackoffBeforeSleep, WoundWaitYoungerHoldingLocksBacksOffBehindOlderHolder) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), b(&cls);
  Holder older(&cls, &a, /*with_context=*/true);
  WwAcquireContext younger(&cls, /*inject=*/false);
  younger.SetBackoffBeforeSleep(true);
  ASSERT_TRUE(b.Lock(&younger).ok());
  EXPECT_TRUE(IsBackoff(a.Lock(&younger)));
  EXPECT_EQ(a.WaiterCountForTesting(), 0);  // it left the queue
  EXPECT_TRUE(a.IsLocked());                // still the older holder's
  // The caller's part: release everything, wait for the contended mutex alone, retry.
  b.Unlock();
  std::thread releaser([&] {
    WaitForWaiters(a, 1);
    older.Release();
  });
  a.LockSlow(&younger);
  releaser.join();
  EXPECT_TRUE(a.IsHeldBy(&younger));
  ASSERT_TRUE(b.Lock(&younger).ok());
  EXPECT_EQ(younger.acquired(), 2);
  b.Unlock();
  a.Unlock();
}

TEST(BackoffBeforeSleep, OffByDefaultYoungerWaits) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), b(&cls);
  Holder older(&cls, &a, true);
  WwAcquireContext younger(&cls, false);
  ASSERT_TRUE(b.Lock(&younger).ok());
  ExpectWaitsForHolder(a, &younger, older);
  b.Unlock();
}

TEST(BackoffBeforeSleep, OlderStillWaitsForYoungerHolder) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), x(&cls);
  WwAcquireContext older(&cls, false);
  older.SetBackoffBeforeSleep(true);
  Holder younger(&cls, &a, true);  // made after `older`: younger
  ASSERT_TRUE(x.Lock(&older).ok());
  ExpectWaitsForHolder(a, &older, younger);  // waits (and wounds); never backs off
  x.Unlock();
}

TEST(BackoffBeforeSleep, NoLocksHeldWaits) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls);
  Holder older(&cls, &a, true);
  WwAcquireContext younger(&cls, false);
  younger.SetBackoffBeforeSleep(true);
  ExpectWaitsForHolder(a, &younger, older);
}

TEST(BackoffBeforeSleep, HolderWithoutContextIsWaitedFor) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), b(&cls);
  Holder plain(&cls, &a, /*with_context=*/false);
  WwAcquireContext ctx(&cls, false);
  ctx.SetBackoffBeforeSleep(true);
  ASSERT_TRUE(b.Lock(&ctx).ok());
  ExpectWaitsForHolder(a, &ctx, plain);
  b.Unlock();
}

TEST(BackoffBeforeSleep, WaitDieOlderStillWaitsForYoungerHolder) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), x(&cls);
  WwAcquireContext older(&cls, false);
  older.SetBackoffBeforeSleep(true);
  Holder younger(&cls, &a, true);
  ASSERT_TRUE(x.Lock(&older).ok());
  ExpectWaitsForHolder(a, &older, younger);
  x.Unlock();
}

}  // namespace
}  // namespace ww
