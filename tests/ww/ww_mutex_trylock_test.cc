// ww::WwMutex::TryLock with a context: a successful trylock is an acquire like any other (the
// kernel's ww_mutex_trylock → ww_mutex_set_context_fastpath → __ww_mutex_check_waiters), so it
// wounds / kills against the waiters already queued, and a context holding no locks drops a stale
// wound. Run with the slow-path injection off and on, for both algorithms.
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <stop_token>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "ww/ww_mutex.h"

namespace ww {
namespace {

// Long enough for any scheduling delay on a loaded 2-core machine under TSan; the scenario itself
// takes microseconds once it is not deadlocked.
constexpr absl::Duration kDeadlockGuard = absl::Seconds(10);

void WaitForWaiters(const WwMutex& m, int n) {
  while (m.WaiterCountForTesting() < n) absl::SleepFor(absl::Microseconds(20));
}

// With `first` held by `ctx`, locks `second` the kernel way: on a back-off release everything,
// LockSlow the contended mutex, take the other again. OK: both held. Otherwise (cancelled by the
// deadlock guard) nothing is held.
absl::Status LockSecond(WwAcquireContext* ctx, WwMutex* first, WwMutex* second,
                        std::stop_token cancel) {
  WwMutex* held = first;
  WwMutex* want = second;
  for (;;) {
    absl::Status st = want->LockInterruptible(ctx, cancel);
    if (st.ok()) return st;
    held->Unlock();
    if (!IsBackoff(st)) return st;
    st = want->LockSlowInterruptible(ctx, cancel);
    if (!st.ok()) return st;
    std::swap(held, want);
  }
}

class WwTryLockTest : public ::testing::TestWithParam<std::tuple<WwAlgorithm, bool>> {
 protected:
  void SetUp() override { SetSlowpathInjection(std::get<1>(GetParam())); }
  void TearDown() override { SetSlowpathInjection(false); }
  WwClass cls_{std::get<0>(GetParam())};
};

INSTANTIATE_TEST_SUITE_P(AlgorithmsAndInjection, WwTryLockTest,
                         ::testing::Combine(::testing::Values(WwAlgorithm::kWaitDie,
                                                              WwAlgorithm::kWoundWait),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == WwAlgorithm::kWaitDie
                                                  ? "WaitDie"
                                                  : "WoundWait") +
                                  (std::get<1>(info.param) ? "Injection" : "NoInjection");
                         });

// Issue 10 defect 3: older A holds M and waits for L (held by young C); C unlocks; young B
// trylocks L and wins, then locks M. B must back off (wounded by its trylock / dies for A), so both
// transactions finish; before the fix A and B waited on each other forever.
TEST_P(WwTryLockTest, TrylockPastAnOlderWaiterDoesNotDeadlock) {
  constexpr int kAttempts =
      200;  // B, spinning, wins the race for L against the woken A nearly always
  bool scenario_ran = false;
  for (int attempt = 0; attempt < kAttempts && !scenario_ran; ++attempt) {
    WwMutex l(&cls_), m(&cls_);
    std::stop_source guard;
    absl::Notification a_holds_m, c_holds_l, b_ready, release_c, a_done, b_done;
    absl::Status a_st, b_st;
    bool b_won = false, a_queued = false;

    std::thread a([&] {
      // Lowest priority, so that the woken A does not preempt the spinning B on a busy machine
      // (CFS wake-up preemption made A win the race for L every time under load).
      setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
      WwAcquireContext ctx(&cls_);  // the oldest: created before B's and C's
      ASSERT_TRUE(m.Lock(&ctx).ok());
      a_holds_m.Notify();
      c_holds_l.WaitForNotification();
      a_st = LockSecond(&ctx, &m, &l, guard.get_token());
      if (a_st.ok()) {
        l.Unlock();
        m.Unlock();
      }
      a_done.Notify();
    });
    a_holds_m.WaitForNotification();
    std::thread c([&] {
      WwAcquireContext ctx(&cls_);
      ASSERT_TRUE(l.Lock(&ctx).ok());
      c_holds_l.Notify();
      release_c.WaitForNotification();
      l.Unlock();
    });
    c_holds_l.WaitForNotification();
    std::thread b([&] {
      WwAcquireContext ctx(&cls_);
      b_ready.Notify();
      while (l.IsLocked()) {  // spin, to take L before the woken A does
      }
      b_won = l.TryLock(&ctx);
      // A still queued on L after B won it: the scenario (A can leave the queue only by taking
      // L, which it releases only after finishing).
      a_queued = b_won && l.WaiterCountForTesting() == 1;
      if (b_won) {
        b_st = LockSecond(&ctx, &l, &m, guard.get_token());
        if (b_st.ok()) {
          m.Unlock();
          l.Unlock();
        }
      }
      b_done.Notify();
    });
    WaitForWaiters(l, 1);  // A is queued on L
    b_ready.WaitForNotification();
    release_c.Notify();
    const bool finished = a_done.WaitForNotificationWithTimeout(kDeadlockGuard) &&
                          b_done.WaitForNotificationWithTimeout(kDeadlockGuard);
    guard.request_stop();  // unblocks a deadlocked pair so that the test fails instead of hanging
    a.join();
    b.join();
    c.join();
    EXPECT_TRUE(finished) << "A waits for L held by B, B waits for M held by A: deadlock";
    EXPECT_TRUE(a_st.ok()) << a_st;
    EXPECT_TRUE(b_st.ok()) << b_st;
    scenario_ran = a_queued;
    if (!finished) break;
  }
  EXPECT_TRUE(scenario_ran) << "B never won L while A was queued in " << kAttempts << " attempts";
}

// A wound left from a finished transaction is dropped when the context, holding no locks, starts
// again with a trylock: its next blocking lock waits instead of backing off spuriously.
TEST_P(WwTryLockTest, TrylockWithNoLocksHeldClearsAStaleWound) {
  WwMutex l(&cls_), n(&cls_), p(&cls_), q(&cls_);
  absl::Notification y_holds_q, x_holds_l;
  std::thread y([&] {
    WwAcquireContext ctx(&cls_);  // older than X
    ASSERT_TRUE(q.Lock(&ctx).ok());
    y_holds_q.Notify();
    x_holds_l.WaitForNotification();
    absl::Status st = l.Lock(&ctx);               // queues behind X's hold: wounds X (Wound-Wait)
    ASSERT_TRUE(st.ok() || IsBackoff(st)) << st;  // injection may make it back off
    if (st.ok()) l.Unlock();
    q.Unlock();
  });
  y_holds_q.WaitForNotification();
  WwAcquireContext x(&cls_, /*inject=*/false);
  ASSERT_TRUE(l.Lock(&x).ok());
  x_holds_l.Notify();
  WaitForWaiters(l, 1);
  l.Unlock();  // X holds nothing now; the wound (if any) is stale
  y.join();

  ASSERT_TRUE(p.Lock(nullptr).ok());  // P is held by a plain locker
  ASSERT_TRUE(n.TryLock(&x));
  std::atomic<bool> done{false};
  absl::Status st;
  std::thread t([&] {
    st = p.Lock(&x);  // X holds N: it may only back off if wounded since it started again
    done.store(true);
  });
  while (!done.load() && p.WaiterCountForTesting() == 0) absl::SleepFor(absl::Microseconds(20));
  p.Unlock();
  t.join();
  EXPECT_TRUE(st.ok()) << "spurious back-off from a stale wound: " << st;
  if (st.ok()) p.Unlock();
  n.Unlock();
}

}  // namespace
}  // namespace ww
