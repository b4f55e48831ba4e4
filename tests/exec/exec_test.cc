// exec::Exec: ports of the kernel's drm_exec KUnit tests (drivers/gpu/drm/tests/drm_exec_test.c)
// and one test per rule of the exec context (contention, duplicates, prepare, back-off policy).
#include "exec/exec.h"

#include <memory>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"

namespace exec {
namespace {

class TestObject final : public Object {
 public:
  explicit TestObject(WwClass* cls = &fence::ReservationWwClass()) : resv_(cls) {}
  fence::Resv& resv() override { return resv_; }

 private:
  fence::Resv resv_;
};

class ExecTest : public ::testing::Test {
 protected:
  void SetUp() override { ww::SetSlowpathInjection(false); }
};

// upstream drm_exec: sanitycheck — init and fini.
TEST_F(ExecTest, Sanitycheck) {
  Exec exec(Exec::kInterruptibleWait);
  EXPECT_TRUE(exec.objects().empty());
}

// upstream drm_exec: test_lock — one object locks in the loop.
TEST_F(ExecTest, Lock) {
  TestObject obj;
  Exec exec(Exec::kInterruptibleWait);
  EXPECT_TRUE(exec.UntilAllLocked([&](Exec& e) { return e.LockObj(&obj); }).ok());
  EXPECT_TRUE(obj.resv().lock().IsLocked());
  ASSERT_EQ(exec.objects().size(), 1u);
  EXPECT_EQ(exec.objects()[0], &obj);
}

// upstream drm_exec: test_lock_unlock — lock, unlock, lock again inside the loop.
TEST_F(ExecTest, LockUnlock) {
  TestObject obj;
  Exec exec(Exec::kInterruptibleWait);
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    absl::Status s = e.LockObj(&obj);
    if (!s.ok()) return s;
    e.UnlockObj(&obj);
    EXPECT_FALSE(obj.resv().lock().IsLocked());
    return e.LockObj(&obj);
  });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_TRUE(obj.resv().lock().IsLocked());
}

// upstream drm_exec: test_duplicates — with ignore-duplicates, locking twice is OK and the
// object is listed once.
TEST_F(ExecTest, Duplicates) {
  TestObject obj;
  Exec exec(Exec::kIgnoreDuplicates);
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    absl::Status s = e.LockObj(&obj);
    if (!s.ok()) return s;
    return e.LockObj(&obj);
  });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(exec.objects().size(), 1u);
  exec.UnlockObj(&obj);
  EXPECT_FALSE(obj.resv().lock().IsLocked());
}

// Rule: without ignore-duplicates, a second lock of the same object is already-held.
TEST_F(ExecTest, DuplicateWithoutIgnoreIsAlreadyHeld) {
  TestObject obj;
  Exec exec;
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    absl::Status s = e.LockObj(&obj);
    if (!s.ok()) return s;
    return e.LockObj(&obj);
  });
  EXPECT_TRUE(IsAlreadyHeld(st)) << st;
  EXPECT_EQ(exec.objects().size(), 1u);
}

// upstream drm_exec: test_prepare — lock and reserve one fence slot.
TEST_F(ExecTest, Prepare) {
  TestObject obj;
  Exec exec(Exec::kInterruptibleWait);
  EXPECT_TRUE(exec.UntilAllLocked([&](Exec& e) { return e.PrepareObj(&obj, 1); }).ok());
  EXPECT_EQ(obj.resv().reserved(), 1u);
  obj.resv().AddFence(fence::Fence::Create(fence::FenceContext::Allocate(), 1),
                      fence::ResvUsage::kWrite);
  EXPECT_EQ(obj.resv().GetFences(fence::ResvUsage::kBookkeep).size(), 1u);
}

// upstream drm_exec: test_prepare_array — two objects prepared in one call.
TEST_F(ExecTest, PrepareArray) {
  TestObject a, b;
  Object* objs[] = {&a, &b};
  Exec exec(Exec::kInterruptibleWait);
  EXPECT_TRUE(exec.UntilAllLocked([&](Exec& e) { return e.PrepareArray(objs, 1); }).ok());
  EXPECT_EQ(exec.objects().size(), 2u);
  EXPECT_EQ(a.resv().reserved(), 1u);
  EXPECT_EQ(b.resv().reserved(), 1u);
}

// upstream drm_exec: test_multiple_loops — two exec contexts one after the other, each leaving
// its loop at once.
TEST_F(ExecTest, MultipleLoops) {
  for (int i = 0; i < 2; ++i) {
    Exec exec(Exec::kInterruptibleWait);
    int runs = 0;
    while (exec.Cleanup()) {
      ++runs;
      break;
    }
    EXPECT_EQ(runs, 1);
  }
}

// Rule (the subtle kernel case): with ignore-duplicates, a failed prepare of an object an
// earlier call had locked unlocks it.
TEST_F(ExecTest, FailedDuplicatePrepareUnlocksObject) {
  TestObject obj;
  Exec exec(Exec::kIgnoreDuplicates);
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    absl::Status s = e.PrepareObj(&obj, 1);
    if (!s.ok()) return s;
    return e.PrepareObj(&obj, 0);  // reserving 0 fences fails
  });
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_FALSE(obj.resv().lock().IsLocked());
  EXPECT_TRUE(exec.objects().empty());
}

// Rule: on contention the body runs again with nothing locked, and the contended object is
// locked first (with the slow path) by the next LockObj.
TEST_F(ExecTest, ContentionRetriesWithContendedFirst) {
  TestObject a, b;
  // An older transaction holds b; ours (younger) locks a then b and must back off.
  WwAcquireContext older(&fence::ReservationWwClass());
  ASSERT_TRUE(b.resv().Lock(&older).ok());
  Exec exec;
  int runs = 0;
  std::vector<std::vector<Object*>> locked_at_start;
  absl::Notification backed_off;
  std::thread releaser([&] {
    backed_off.WaitForNotification();
    absl::SleepFor(absl::Milliseconds(10));
    b.resv().Unlock();
  });
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    ++runs;
    locked_at_start.emplace_back(e.objects().begin(), e.objects().end());
    absl::Status s = e.LockObj(&a);
    if (!s.ok()) return s;
    // After a back-off, b was taken first: it is already in objects() before a.
    if (runs > 1) {
      EXPECT_EQ(e.objects().size(), 2u);
      EXPECT_EQ(e.objects()[0], &b);
    }
    s = e.LockObj(&b);
    if (IsBackoff(s)) backed_off.Notify();
    return s;
  });
  releaser.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(exec.retries(), 1);
  for (const auto& l : locked_at_start) EXPECT_TRUE(l.empty());
  EXPECT_TRUE(a.resv().lock().IsLocked());
  EXPECT_TRUE(b.resv().lock().IsLocked());
}

// Rule: an interruptible exec returns Cancelled when a stop is requested while it waits.
TEST_F(ExecTest, InterruptibleWaitCancelled) {
  TestObject obj;
  ASSERT_TRUE(obj.resv().Lock(nullptr).ok());
  std::stop_source token;
  std::thread canceller([&] {
    while (obj.resv().lock().WaiterCountForTesting() == 0) absl::SleepFor(absl::Microseconds(50));
    token.request_stop();
  });
  Exec exec(Exec::kInterruptibleWait, token.get_token());
  absl::Status st = exec.UntilAllLocked([&](Exec& e) { return e.LockObj(&obj); });
  canceller.join();
  EXPECT_TRUE(absl::IsCancelled(st)) << st;
  obj.resv().Unlock();
}

// Rule (back-off policy): repeated contention on the same object sleeps with bounded delay; the
// first `free_retries` contentions do not. Wait-Die delays only with `wait_die_delays` (off by
// default since exec13g), which this test turns on so that the delays it bounds are taken.
TEST_F(ExecTest, BackoffPolicyDelaysOnlyAfterStreak) {
  ww::SetSlowpathInjection(true);  // every transaction backs off at its interval
  std::vector<std::unique_ptr<TestObject>> objs;
  for (int i = 0; i < 64; ++i) objs.push_back(std::make_unique<TestObject>());
  BackoffPolicy policy;
  policy.wait_die_delays = true;
  policy.free_retries = 0;
  policy.max_delay = absl::Microseconds(50);
  Exec exec(0, {}, &fence::ReservationWwClass(), policy);
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    for (auto& o : objs) {
      absl::Status s = e.LockObj(o.get());
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  });
  ww::SetSlowpathInjection(false);
  EXPECT_TRUE(st.ok());
  EXPECT_GE(exec.retries(), 2);
  EXPECT_GT(exec.total_backoff(), absl::ZeroDuration());  // free_retries = 0: every retry delays
  EXPECT_LE(exec.total_backoff(), exec.retries() * policy.max_delay);
  EXPECT_EQ(exec.objects().size(), 64u);
}

// Contract: unlocking an object the exec has not locked crashes.
TEST_F(ExecTest, DeathUnlockForeignObject) {
  EXPECT_DEATH(
      {
        TestObject obj;
        Exec exec;
        while (exec.Cleanup()) {
        }
        exec.UnlockObj(&obj);
      },
      "has not locked");
}

// Locks 64 objects under slow-path injection (so the body backs off several times on its own)
// and returns the Exec's retries and total delay.
struct Outcome {
  int retries;
  absl::Duration backoff;
};
Outcome RunInjected(WwClass* cls, const BackoffPolicy& policy) {
  std::vector<std::unique_ptr<TestObject>> objs;
  for (int i = 0; i < 64; ++i) objs.push_back(std::make_unique<TestObject>(cls));
  ww::SetSlowpathInjection(true);
  Exec exec(0, {}, cls, policy);
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    for (auto& o : objs) {
      absl::Status s = e.PrepareObj(o.get(), 1);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  });
  ww::SetSlowpathInjection(false);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(exec.objects().size(), 64u);
  return {exec.retries(), exec.total_backoff()};
}

BackoffPolicy EagerPolicy() {
  BackoffPolicy p;
  p.free_retries = 0;  // delay from the first contention on
  p.base = absl::Microseconds(20);
  p.max_delay = absl::Microseconds(50);
  return p;
}

// Rule: Wait-Die's default policy does not delay, however often the transaction backs off.
TEST_F(ExecTest, WaitDieDefaultHasNoDelays) {
  WwClass cls(ww::WwAlgorithm::kWaitDie);
  Outcome o = RunInjected(&cls, EagerPolicy());
  EXPECT_GE(o.retries, 2);
  EXPECT_EQ(o.backoff, absl::ZeroDuration());
}

// Rule: with wait_die_delays, Wait-Die delays (bounded by max_delay per retry).
TEST_F(ExecTest, WaitDieDelaysWhenAsked) {
  WwClass cls(ww::WwAlgorithm::kWaitDie);
  BackoffPolicy p = EagerPolicy();
  p.wait_die_delays = true;
  Outcome o = RunInjected(&cls, p);
  EXPECT_GE(o.retries, 2);
  EXPECT_GT(o.backoff, absl::ZeroDuration());
  EXPECT_LE(o.backoff, o.retries * p.max_delay);
}

// Rule: Wound-Wait delays with the default policy, and not with the policy disabled.
TEST_F(ExecTest, WoundWaitDelaysByDefault) {
  WwClass cls(ww::WwAlgorithm::kWoundWait);
  const BackoffPolicy p = EagerPolicy();
  Outcome o = RunInjected(&cls, p);
  EXPECT_GE(o.retries, 2);
  EXPECT_GT(o.backoff, absl::ZeroDuration());
  EXPECT_LE(o.backoff, o.retries * p.max_delay);
  BackoffPolicy off = p;
  off.enabled = false;
  Outcome o2 = RunInjected(&cls, off);
  EXPECT_GE(o2.retries, 2);
  EXPECT_EQ(o2.backoff, absl::ZeroDuration());
}

// Rule: PrepareObj past the 16 objects kept inline locks and reserves every one, in order.
TEST_F(ExecTest, MoreObjectsThanInlineStorage) {
  WwClass cls(ww::WwAlgorithm::kWaitDie);
  std::vector<std::unique_ptr<TestObject>> objs;
  for (int i = 0; i < 40; ++i) objs.push_back(std::make_unique<TestObject>(&cls));
  Exec exec(0, {}, &cls);
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    for (auto& o : objs) {
      absl::Status s = e.PrepareObj(o.get(), 2);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(exec.objects().size(), objs.size());
  for (size_t i = 0; i < objs.size(); ++i) {
    EXPECT_EQ(exec.objects()[i], objs[i].get());
    EXPECT_TRUE(objs[i]->resv().lock().IsHeldBy(&exec.ticket()));
    EXPECT_EQ(objs[i]->resv().reserved(), 2u);
  }
}

// Rule: a failed reservation on the inline path (Reserve(0): InvalidArgument) unlocks the object
// and leaves the others locked.
TEST_F(ExecTest, FailedReservationUnlocksTheObject) {
  WwClass cls(ww::WwAlgorithm::kWaitDie);
  TestObject a(&cls), b(&cls);
  Exec exec(0, {}, &cls);
  ASSERT_TRUE(exec.Cleanup());
  ASSERT_TRUE(exec.PrepareObj(&a, 1).ok());
  absl::Status st = exec.PrepareObj(&b, 0);
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_FALSE(b.resv().lock().IsLocked());
  EXPECT_TRUE(a.resv().lock().IsHeldBy(&exec.ticket()));
  ASSERT_EQ(exec.objects().size(), 1u);
  EXPECT_EQ(exec.objects()[0], &a);
}

}  // namespace
}  // namespace exec
