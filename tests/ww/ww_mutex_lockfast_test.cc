// ww::WwMutex::LockFast: Lock()'s uncontended case. It takes the mutex exactly when Lock() would
// take it at once with nothing else to do; in every other case it changes nothing and returns
// false, so the caller's Lock() decides (and reports or crashes) as before.
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/ww/holder.h"
#include "ww/ww_mutex.h"

namespace ww {
namespace {

void WaitForWaiters(const WwMutex& m, int n) {
  while (m.WaiterCountForTesting() < n) absl::SleepFor(absl::Microseconds(20));
}

// Rule: a free mutex with nobody queued is taken as Lock() takes it: held by the context, counted
// in acquired(); Unlock() undoes both. A second LockFast of a held mutex (by anyone, the context
// itself included) is false and changes nothing.
TEST(WwMutexLockFast, TakesAFreeMutexAsLockDoes) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), b(&cls);
  WwAcquireContext ctx(&cls, /*inject=*/false);
  ASSERT_TRUE(a.LockFast(&ctx));
  EXPECT_TRUE(a.IsHeldBy(&ctx));
  EXPECT_EQ(ctx.acquired(), 1);
  EXPECT_FALSE(a.LockFast(&ctx));  // already held: Lock() reports IsAlreadyHeld
  EXPECT_EQ(ctx.acquired(), 1);
  EXPECT_TRUE(IsAlreadyHeld(a.Lock(&ctx)));
  ASSERT_TRUE(b.LockFast(&ctx));
  EXPECT_EQ(ctx.acquired(), 2);
  b.Unlock();
  a.Unlock();
  EXPECT_EQ(ctx.acquired(), 0);
  EXPECT_FALSE(a.IsLocked());
}

// Rule: no context (a plain lock), a context of another class, a finished-for-locking (Done())
// context: false, nothing changed — Lock() handles (or crashes on) each.
TEST(WwMutexLockFast, LeavesEveryOtherCaseToLock) {
  WwClass cls(WwAlgorithm::kWoundWait), other(WwAlgorithm::kWoundWait);
  WwMutex m(&cls);
  EXPECT_FALSE(m.LockFast(nullptr));
  EXPECT_FALSE(m.IsLocked());
  WwAcquireContext foreign(&other, /*inject=*/false);
  EXPECT_FALSE(m.LockFast(&foreign));
  EXPECT_FALSE(m.IsLocked());
  WwAcquireContext done(&cls, /*inject=*/false);
  done.Done();
  EXPECT_FALSE(m.LockFast(&done));
  EXPECT_FALSE(m.IsLocked());
  EXPECT_EQ(done.acquired(), 0);
}

// Rule: a held mutex, or a free one with waiters queued, is Lock()'s to decide (the waiters must
// be checked against the new holder): false, nothing changed.
TEST(WwMutexLockFast, HeldOrQueuedIsNotFast) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex m(&cls);
  testing::Holder holder(&cls, &m, /*with_context=*/false);
  WwAcquireContext ctx(&cls, /*inject=*/false);
  EXPECT_FALSE(m.LockFast(&ctx));
  EXPECT_EQ(ctx.acquired(), 0);
  // A plain waiter queues behind the holder.
  absl::Notification locked;
  std::thread waiter([&] {
    ASSERT_TRUE(m.Lock(nullptr).ok());
    locked.Notify();
    m.Unlock();
  });
  WaitForWaiters(m, 1);
  EXPECT_FALSE(m.LockFast(&ctx));
  holder.Release();
  locked.WaitForNotification();
  waiter.join();
  EXPECT_TRUE(m.LockFast(&ctx));  // free and nobody queued again
  m.Unlock();
}

// Rule: under slow-path injection LockFast is never taken (Lock() may inject a back-off after a
// successful lock, which LockFast could not report); without it, and with a context created
// with injection off, it is.
TEST(WwMutexLockFast, NotUnderSlowpathInjection) {
  const bool was = SlowpathInjection();
  SetSlowpathInjection(true);
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex m(&cls);
  {
    WwAcquireContext injected(&cls);
    EXPECT_FALSE(m.LockFast(&injected));
    EXPECT_FALSE(m.IsLocked());
    WwAcquireContext noinject(&cls, /*inject=*/false);
    EXPECT_TRUE(m.LockFast(&noinject));
    m.Unlock();
  }
  SetSlowpathInjection(was);
}

// Rule: after a back-off the next lock must be the contended mutex with the slow path; LockFast
// leaves that to Lock()/LockSlow() (false while the back-off is pending), and works again after.
TEST(WwMutexLockFast, NotWhileABackoffIsPending) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), b(&cls);
  // An older context holds b; ours (younger) holds a and dies on b.
  testing::Holder older(&cls, &b, /*with_context=*/true);
  WwAcquireContext ctx(&cls, /*inject=*/false);
  ASSERT_TRUE(a.LockFast(&ctx));
  ASSERT_TRUE(IsBackoff(b.Lock(&ctx)));
  a.Unlock();
  EXPECT_FALSE(a.LockFast(&ctx));  // pending: b first, with LockSlow
  EXPECT_FALSE(a.IsLocked());
  older.Release();
  b.LockSlow(&ctx);
  EXPECT_TRUE(a.LockFast(&ctx));
  EXPECT_EQ(ctx.acquired(), 2);
  a.Unlock();
  b.Unlock();
}

}  // namespace
}  // namespace ww
