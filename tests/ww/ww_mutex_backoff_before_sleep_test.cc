// ww::WwAcquireContext::SetBackoffBeforeSleep (beyond the kernel): a Wound-Wait context holding
// locks backs off instead of sleeping behind an OLDER holder; behind a younger holder, a holder
// without a context, or with no locks held, it waits as the ww rules say. Wait-Die is unchanged.
// Every test would hang (bounded by the helper's 10 s fallback, then fail) if a wait happened
// where a back-off is expected.
#include <optional>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "ww/ww_mutex.h"

namespace ww {
namespace {

void WaitForWaiters(const WwMutex& m, int n) {
  while (m.WaiterCountForTesting() < n) absl::SleepFor(absl::Microseconds(50));
}

// Holds `m` on its own thread (with a context of `cls` made before the caller's, so older, or
// with none) until released or 10 s have passed.
class Holder {
 public:
  Holder(WwClass* cls, WwMutex* m, bool with_context) {
    thread_ = std::thread([this, cls, m, with_context] {
      std::optional<WwAcquireContext> ctx;
      if (with_context) ctx.emplace(cls, /*inject=*/false);
      EXPECT_TRUE(m->Lock(ctx.has_value() ? &*ctx : nullptr).ok());
      holding_.Notify();
      release_.WaitForNotificationWithTimeout(absl::Seconds(10));
      m->Unlock();
    });
    holding_.WaitForNotification();
  }
  ~Holder() { Release(); }
  void Release() {
    if (!release_.HasBeenNotified()) release_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  absl::Notification holding_, release_;
  std::thread thread_;
};

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
  std::thread releaser([&] {
    WaitForWaiters(a, 1);
    older.Release();
  });
  EXPECT_TRUE(a.Lock(&younger).ok());
  releaser.join();
  a.Unlock();
  b.Unlock();
}

TEST(BackoffBeforeSleep, OlderStillWaitsForYoungerHolder) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), x(&cls);
  WwAcquireContext older(&cls, false);
  older.SetBackoffBeforeSleep(true);
  Holder younger(&cls, &a, true);  // made after `older`: younger
  ASSERT_TRUE(x.Lock(&older).ok());
  std::thread releaser([&] {
    WaitForWaiters(a, 1);
    younger.Release();
  });
  EXPECT_TRUE(a.Lock(&older).ok());  // waits (and wounds); never backs off
  releaser.join();
  a.Unlock();
  x.Unlock();
}

TEST(BackoffBeforeSleep, NoLocksHeldWaits) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls);
  Holder older(&cls, &a, true);
  WwAcquireContext younger(&cls, false);
  younger.SetBackoffBeforeSleep(true);
  std::thread releaser([&] {
    WaitForWaiters(a, 1);
    older.Release();
  });
  EXPECT_TRUE(a.Lock(&younger).ok());
  releaser.join();
  a.Unlock();
}

TEST(BackoffBeforeSleep, HolderWithoutContextIsWaitedFor) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), b(&cls);
  Holder plain(&cls, &a, /*with_context=*/false);
  WwAcquireContext ctx(&cls, false);
  ctx.SetBackoffBeforeSleep(true);
  ASSERT_TRUE(b.Lock(&ctx).ok());
  std::thread releaser([&] {
    WaitForWaiters(a, 1);
    plain.Release();
  });
  EXPECT_TRUE(a.Lock(&ctx).ok());
  releaser.join();
  a.Unlock();
  b.Unlock();
}

TEST(BackoffBeforeSleep, WaitDieOlderStillWaitsForYoungerHolder) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), x(&cls);
  WwAcquireContext older(&cls, false);
  older.SetBackoffBeforeSleep(true);
  Holder younger(&cls, &a, true);
  ASSERT_TRUE(x.Lock(&older).ok());
  std::thread releaser([&] {
    WaitForWaiters(a, 1);
    younger.Release();
  });
  EXPECT_TRUE(a.Lock(&older).ok());
  releaser.join();
  a.Unlock();
  x.Unlock();
}

}  // namespace
}  // namespace ww
