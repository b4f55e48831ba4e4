// ww::WwMutex: one test per rule of the kernel's ww_mutex (Documentation/locking/ww-mutex-design
// and kernel/locking/ww_mutex.h), plus ports of kernel/locking/test-ww_mutex.c scenarios (mutex,
// AA, ABBA, cycle). Stress scenarios live in ww_mutex_stress_test.cc.
#include "ww/ww_mutex.h"

#include <atomic>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace ww {
namespace {

// Waits until `m` has `n` waiters queued (the other thread is blocked in Lock).
void WaitForWaiters(const WwMutex& m, int n) {
  while (m.WaiterCountForTesting() < n) absl::SleepFor(absl::Microseconds(50));
}

class WwMutexTest : public ::testing::TestWithParam<WwAlgorithm> {
 protected:
  void SetUp() override { SetSlowpathInjection(false); }
  WwClass cls_{GetParam()};
};

INSTANTIATE_TEST_SUITE_P(Algorithms, WwMutexTest,
                         ::testing::Values(WwAlgorithm::kWaitDie, WwAlgorithm::kWoundWait),
                         [](const auto& info) {
                           return info.param == WwAlgorithm::kWaitDie ? "WaitDie" : "WoundWait";
                         });

// upstream test-ww_mutex: test_mutex — a second locker (with or without a context, or trylock)
// is excluded until the holder unlocks.
TEST_P(WwMutexTest, MutexExcludes) {
  for (int mode = 0; mode < 3; ++mode) {  // 0: no ctx, 1: ctx, 2: trylock
    WwMutex m(&cls_);
    ASSERT_TRUE(m.Lock(nullptr).ok());
    std::atomic<bool> got{false};
    std::thread t([&] {
      WwAcquireContext ctx(&cls_);
      if (mode == 2) {
        while (!m.TryLock(&ctx)) std::this_thread::yield();
      } else {
        ASSERT_TRUE(m.Lock(mode == 1 ? &ctx : nullptr).ok());
      }
      got = true;
      m.Unlock();
    });
    absl::SleepFor(absl::Milliseconds(20));
    EXPECT_FALSE(got.load()) << "mode " << mode;
    m.Unlock();
    t.join();
    EXPECT_TRUE(got.load());
  }
}

// upstream test-ww_mutex: test_aa — relocking with the same context is -EALREADY; trylock with
// or without the context fails.
TEST_P(WwMutexTest, AA) {
  WwMutex m(&cls_);
  WwAcquireContext ctx(&cls_);
  ASSERT_TRUE(m.Lock(&ctx).ok());
  EXPECT_FALSE(m.TryLock(nullptr));
  EXPECT_FALSE(m.TryLock(&ctx));
  EXPECT_TRUE(IsAlreadyHeld(m.Lock(&ctx)));
  EXPECT_EQ(ctx.acquired(), 1);
  m.Unlock();
  EXPECT_EQ(ctx.acquired(), 0);
}

// upstream test-ww_mutex: test_abba(resolve=false) — two contexts locking A,B and B,A: at least
// one is told to back off; neither deadlocks.
// upstream test-ww_mutex: test_abba(resolve=true) — the one backing off unlocks, LockSlow()s the
// contended mutex and retries; both complete.
TEST_P(WwMutexTest, ABBA) {
  for (bool resolve : {false, true}) {
    WwMutex a(&cls_), b(&cls_);
    absl::Notification worker_has_b, main_has_a;
    auto locker = [&](WwMutex& first, WwMutex& second, absl::Notification& mine,
                      absl::Notification& other) -> absl::Status {
      WwAcquireContext ctx(&cls_);
      EXPECT_TRUE(first.Lock(&ctx).ok());
      mine.Notify();
      other.WaitForNotification();
      absl::Status st = second.Lock(&ctx);
      if (IsBackoff(st) && resolve) {
        first.Unlock();
        second.LockSlow(&ctx);
        st = first.Lock(&ctx);
      }
      if (st.ok()) second.Unlock();
      first.Unlock();
      return st;
    };
    absl::Status worker_st;
    std::thread t([&] { worker_st = locker(b, a, worker_has_b, main_has_a); });
    absl::Status main_st = locker(a, b, main_has_a, worker_has_b);
    t.join();
    if (resolve) {
      EXPECT_TRUE(main_st.ok()) << main_st;
      EXPECT_TRUE(worker_st.ok()) << worker_st;
    } else {
      EXPECT_TRUE(IsBackoff(main_st) || IsBackoff(worker_st)) << "missed ABBA deadlock";
    }
  }
}

// upstream test-ww_mutex: test_cycle — N threads each hold their own mutex and then lock the next
// one's, closing a cycle; back-off + LockSlow resolves it and all complete.
TEST_P(WwMutexTest, Cycle) {
  for (int n : {2, 3, 5, 8}) {
    std::vector<std::unique_ptr<WwMutex>> m;
    for (int i = 0; i < n; ++i) m.push_back(std::make_unique<WwMutex>(&cls_));
    std::atomic<int> holding{0}, done{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        WwMutex& mine = *m[i];
        WwMutex& next = *m[(i + 1) % n];
        WwAcquireContext ctx(&cls_);
        ASSERT_TRUE(mine.Lock(&ctx).ok());
        holding++;
        while (holding.load() < n) std::this_thread::yield();
        absl::Status st = next.Lock(&ctx);
        while (IsBackoff(st)) {
          mine.Unlock();
          next.LockSlow(&ctx);
          st = mine.Lock(&ctx);
          if (IsBackoff(st)) {
            next.Unlock();
            mine.LockSlow(&ctx);
            st = next.Lock(&ctx);
          }
        }
        ASSERT_TRUE(st.ok()) << st;
        next.Unlock();
        mine.Unlock();
        done++;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(done.load(), n);
  }
}

// Rule: a context that holds no locks is never told to back off; it waits.
TEST_P(WwMutexTest, FirstLockNeverBacksOff) {
  WwMutex m(&cls_);
  WwAcquireContext old_ctx(&cls_);  // older
  ASSERT_TRUE(m.Lock(&old_ctx).ok());
  absl::Status young_st = absl::UnknownError("not run");
  std::thread t([&] {
    WwAcquireContext young(&cls_);
    young_st = m.Lock(&young);
    if (young_st.ok()) m.Unlock();
  });
  WaitForWaiters(m, 1);
  m.Unlock();
  t.join();
  EXPECT_TRUE(young_st.ok()) << young_st;
}

// Rule: without a context the mutex is a plain mutex (Lock always succeeds, FIFO hand-over).
TEST_P(WwMutexTest, PlainMutexWithoutContext) {
  WwMutex m(&cls_);
  int counter = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 1000; ++j) {
        ASSERT_TRUE(m.Lock(nullptr).ok());
        ++counter;
        m.Unlock();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 4000);
  EXPECT_FALSE(m.IsLocked());
}

// Rule (ordering of waiters): context waiters are granted in stamp order (oldest first); waiters
// without a context keep FIFO order and are not overtaken by later context waiters' sorting.
TEST_P(WwMutexTest, WaiterOrdering) {
  WwMutex m(&cls_);
  ASSERT_TRUE(m.Lock(nullptr).ok());
  WwAcquireContext c1(&cls_), c2(&cls_), c3(&cls_);  // stamps ascending: c1 oldest
  std::vector<std::string> order;
  absl::Mutex order_mu;
  auto waiter = [&](WwAcquireContext* ctx, std::string name) {
    return std::thread([&, ctx, name] {
      ASSERT_TRUE(m.Lock(ctx).ok());
      {
        absl::MutexLock l(&order_mu);
        order.push_back(name);
      }
      m.Unlock();
    });
  };
  // Contexts are created on this thread but each is used by exactly one thread.
  std::vector<std::thread> ts;
  ts.push_back(waiter(&c3, "c3"));
  WaitForWaiters(m, 1);
  ts.push_back(waiter(nullptr, "plain"));
  WaitForWaiters(m, 2);
  ts.push_back(waiter(&c2, "c2"));
  WaitForWaiters(m, 3);
  ts.push_back(waiter(&c1, "c1"));
  WaitForWaiters(m, 4);
  m.Unlock();
  for (auto& t : ts) t.join();
  // Queue as built: [c3] -> [c3, plain] -> c2 sorts before c3 (skipping the plain waiter):
  // [c2, c3, plain] -> [c1, c2, c3, plain]. The plain waiter keeps its place at the tail.
  EXPECT_EQ(order, (std::vector<std::string>{"c1", "c2", "c3", "plain"}));
}

// Rule: LockInterruptible returns Cancelled when a stop is requested on its token while it waits.
TEST_P(WwMutexTest, InterruptibleLockCancelled) {
  WwMutex m(&cls_);
  ASSERT_TRUE(m.Lock(nullptr).ok());
  std::stop_source token;
  absl::Status st;
  std::thread t([&] {
    WwAcquireContext ctx(&cls_);
    st = m.LockInterruptible(&ctx, token.get_token());
  });
  WaitForWaiters(m, 1);
  token.request_stop();
  t.join();
  EXPECT_TRUE(absl::IsCancelled(st)) << st;
  EXPECT_EQ(m.WaiterCountForTesting(), 0);
  m.Unlock();
  EXPECT_FALSE(m.IsLocked());
}

// Slow-path injection: with it on, the second and later locks of a context back off at the
// kernel's intervals: first after (stamp & 15) further locks, then every 3, 10, 35... locks.
TEST_P(WwMutexTest, SlowpathInjection) {
  SetSlowpathInjection(true);
  std::vector<std::unique_ptr<WwMutex>> m;
  for (int i = 0; i < 80; ++i) m.push_back(std::make_unique<WwMutex>(&cls_));
  WwAcquireContext ctx(&cls_);
  SetSlowpathInjection(false);
  std::vector<int> backoffs;  // index of the lock attempt that backed off
  int held = 0;
  for (int i = 0; i < 80; ++i) {
    absl::Status st = m[i]->Lock(&ctx);
    if (IsBackoff(st)) {
      backoffs.push_back(i);
      EXPECT_FALSE(m[i]->IsLocked());
      for (int j = 0; j < i; ++j) {
        if (m[j]->IsHeldBy(&ctx)) m[j]->Unlock();
      }
      m[i]->LockSlow(&ctx);
      held = 1;
      continue;
    }
    ASSERT_TRUE(st.ok());
    ++held;
  }
  const int first = static_cast<int>(ctx.stamp() & 0xf);
  // Countdown `first` is consumed by locks with acquired > 1, i.e. from the second lock on.
  ASSERT_GE(backoffs.size(), 3u);
  EXPECT_EQ(backoffs[0], first + 1);
  EXPECT_EQ(backoffs[1], backoffs[0] + 3 + 1);  // after LockSlow, the next lock is the 2nd
  EXPECT_EQ(backoffs[2], backoffs[1] + 10 + 1);
  for (auto& mu : m) {
    if (mu->IsHeldBy(&ctx)) mu->Unlock();
  }
  EXPECT_EQ(ctx.acquired(), 0);
}

// Contract: unlocking a mutex that is not locked crashes.
TEST_P(WwMutexTest, DeathUnlockNotHeld) {
  EXPECT_DEATH(
      {
        WwMutex m(&cls_);
        m.Unlock();
      },
      "unlocked while not locked");
}

// Contract: a context of one class cannot lock a mutex of another.
TEST_P(WwMutexTest, DeathMixedClasses) {
  EXPECT_DEATH(
      {
        WwClass other(WwAlgorithm::kWaitDie);
        WwMutex m(&other);
        WwAcquireContext ctx(&cls_);
        (void)m.Lock(&ctx);
      },
      "another WwClass");
}

// Contract: no locking after Done().
TEST_P(WwMutexTest, DeathLockAfterDone) {
  EXPECT_DEATH(
      {
        WwMutex m(&cls_);
        WwAcquireContext ctx(&cls_);
        ctx.Done();
        (void)m.Lock(&ctx);
      },
      "after WwAcquireContext::Done");
}

// Contract: destroying a locked mutex crashes.
TEST_P(WwMutexTest, DeathDestroyHeld) {
  EXPECT_DEATH(
      {
        WwMutex m(&cls_);
        ASSERT_TRUE(m.Lock(nullptr).ok());
      },
      "destroyed while locked");
}

// Contract: finishing a context that still holds locks crashes.
TEST_P(WwMutexTest, DeathFiniWithLocksHeld) {
  EXPECT_DEATH(
      {
        WwMutex m(&cls_);
        WwAcquireContext ctx(&cls_);
        ASSERT_TRUE(m.Lock(&ctx).ok());
        ctx.Fini();
      },
      "still holds locks");
}

// ---- Wait-Die rules ----

// Wait-Die: a younger context holding locks that would wait for an older holder dies at once.
TEST(WaitDie, YoungerHoldingLocksDiesOnOlderHolder) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), b(&cls);
  WwAcquireContext older(&cls), younger(&cls);
  ASSERT_TRUE(a.Lock(&older).ok());
  ASSERT_TRUE(b.Lock(&younger).ok());
  EXPECT_TRUE(IsBackoff(a.Lock(&younger)));
  b.Unlock();
  a.Unlock();
}

// Errors are values: the real back-off and already-held statuses, reworded, are still recognised;
// the same code and message made elsewhere (no tag) is not.
TEST(WwStatus, RecognisedByTagNotMessage) {
  auto reworded = [](const absl::Status& st) {
    absl::Status out(st.code(), "reworded");
    st.ForEachPayload([&](absl::string_view url, const absl::Cord& v) { out.SetPayload(url, v); });
    return out;
  };
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), b(&cls);
  WwAcquireContext older(&cls), younger(&cls);
  ASSERT_TRUE(a.Lock(&older).ok());
  ASSERT_TRUE(b.Lock(&younger).ok());
  absl::Status backoff = a.Lock(&younger);
  absl::Status held = a.Lock(&older);
  EXPECT_TRUE(IsBackoff(reworded(backoff))) << backoff;
  EXPECT_FALSE(IsBackoff(absl::Status(backoff.code(), backoff.message())));
  EXPECT_TRUE(IsAlreadyHeld(reworded(held))) << held;
  EXPECT_FALSE(IsAlreadyHeld(absl::Status(held.code(), held.message())));
  EXPECT_FALSE(IsBackoff(held));
  b.Unlock();
  a.Unlock();
}

// Wait-Die: an older context waits for a younger holder (it never dies).
TEST(WaitDie, OlderWaitsForYoungerHolder) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), b(&cls);
  WwAcquireContext older(&cls);
  absl::Notification younger_holds_a;
  absl::Notification release;
  std::thread young([&] {
    WwAcquireContext younger(&cls);
    ASSERT_TRUE(a.Lock(&younger).ok());
    younger_holds_a.Notify();
    release.WaitForNotification();
    a.Unlock();
  });
  younger_holds_a.WaitForNotification();
  ASSERT_TRUE(b.Lock(&older).ok());
  absl::Status st;
  std::thread old_t([&] { st = a.Lock(&older); });
  WaitForWaiters(a, 1);
  release.Notify();
  old_t.join();
  young.join();
  EXPECT_TRUE(st.ok()) << st;
  a.Unlock();
  b.Unlock();
}

// Wait-Die: a younger context holding locks that finds an older context already queued backs off
// at once (no point queueing behind it), even though the holder is younger still.
TEST(WaitDie, YoungerBacksOffBehindOlderWaiter) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), b(&cls);
  WwAcquireContext older(&cls), middle(&cls);
  WwAcquireContext youngest_holder(&cls);
  ASSERT_TRUE(a.Lock(&youngest_holder).ok());
  absl::Status older_st;
  std::thread t([&] { older_st = a.Lock(&older); });  // holds nothing: waits
  WaitForWaiters(a, 1);
  ASSERT_TRUE(b.Lock(&middle).ok());
  EXPECT_TRUE(IsBackoff(a.Lock(&middle)));
  b.Unlock();
  a.Unlock();
  t.join();
  EXPECT_TRUE(older_st.ok());
  a.Unlock();
}

// Wait-Die: when an older context queues ahead of a younger waiter that holds locks, the
// younger one is woken and dies.
TEST(WaitDie, OlderWaiterKillsYoungerWaiter) {
  WwClass cls(WwAlgorithm::kWaitDie);
  WwMutex a(&cls), b(&cls);
  WwAcquireContext older(&cls);
  WwAcquireContext younger(&cls);
  WwAcquireContext holder(&cls);  // youngest: neither waiter dies because of it
  ASSERT_TRUE(a.Lock(&holder).ok());
  absl::Status young_st;
  std::thread y([&] {
    ASSERT_TRUE(b.Lock(&younger).ok());
    young_st = a.Lock(&younger);
    b.Unlock();
  });
  WaitForWaiters(a, 1);
  absl::Status old_st;
  std::thread o([&] { old_st = a.Lock(&older); });
  y.join();  // the younger waiter must leave with a back-off
  EXPECT_TRUE(IsBackoff(young_st)) << young_st;
  a.Unlock();
  o.join();
  EXPECT_TRUE(old_st.ok());
  a.Unlock();
}

// ---- Wound-Wait rules ----

// Wound-Wait: an older context holding locks that waits for a younger holder wounds it; the
// wounded holder backs off the next time it would block while holding locks.
TEST(WoundWait, OlderWoundsYoungerHolder) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), x(&cls), c(&cls);
  WwAcquireContext older(&cls);
  WwAcquireContext younger(&cls);
  ASSERT_TRUE(a.Lock(&younger).ok());
  ASSERT_TRUE(x.Lock(&older).ok());
  absl::Status old_st;
  std::thread o([&] { old_st = a.Lock(&older); });
  WaitForWaiters(a, 1);
  // The younger holder now blocks on a contended mutex while holding `a`: it must back off.
  ASSERT_TRUE(c.Lock(nullptr).ok());
  EXPECT_TRUE(IsBackoff(c.Lock(&younger)));
  a.Unlock();
  o.join();
  EXPECT_TRUE(old_st.ok());
  c.Unlock();
  a.Unlock();
  x.Unlock();
}

// Wound-Wait: a younger holder that is itself already waiting (on another mutex) when it is
// wounded is woken and backs off, releasing what the older context needs.
TEST(WoundWait, WoundsYoungerHolderThatIsWaiting) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), b(&cls), x(&cls);
  WwAcquireContext older(&cls);
  ASSERT_TRUE(b.Lock(nullptr).ok());  // a plain holder the younger will wait for
  absl::Status young_st;
  absl::Notification young_holds_a;
  std::thread y([&] {
    WwAcquireContext younger(&cls);
    ASSERT_TRUE(a.Lock(&younger).ok());
    young_holds_a.Notify();
    young_st = b.Lock(&younger);  // blocks: b is held
    if (young_st.ok()) b.Unlock();
    a.Unlock();
  });
  young_holds_a.WaitForNotification();
  WaitForWaiters(b, 1);
  ASSERT_TRUE(x.Lock(&older).ok());
  absl::Status old_st = a.Lock(&older);  // wounds the younger, which backs off and releases a
  y.join();
  EXPECT_TRUE(old_st.ok()) << old_st;
  EXPECT_TRUE(IsBackoff(young_st)) << young_st;
  a.Unlock();
  x.Unlock();
  b.Unlock();
}

// Wound-Wait: a younger context holding locks waits for an older holder (no back-off).
TEST(WoundWait, YoungerWaitsForOlderHolder) {
  WwClass cls(WwAlgorithm::kWoundWait);
  WwMutex a(&cls), b(&cls);
  WwAcquireContext older(&cls);
  ASSERT_TRUE(a.Lock(&older).ok());
  absl::Status st;
  std::thread y([&] {
    WwAcquireContext younger(&cls);
    ASSERT_TRUE(b.Lock(&younger).ok());
    st = a.Lock(&younger);
    if (st.ok()) a.Unlock();
    b.Unlock();
  });
  WaitForWaiters(a, 1);
  a.Unlock();
  y.join();
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace ww
