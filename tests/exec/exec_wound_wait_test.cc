// exec::Exec with a Wound-Wait class and its back-off policy (BackoffPolicy::backoff_before_sleep):
// a transaction holding locks that meets an older holder backs off instead of sleeping, then
// takes the contended object first; with the policy off it waits, as the kernel's drm_exec does.
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "exec/exec.h"
#include "gtest/gtest.h"
#include "tests/ww/holder.h"

namespace exec {
namespace {

class TestObject final : public Object {
 public:
  explicit TestObject(WwClass* cls) : resv_(cls) {}
  fence::Resv& resv() override { return resv_; }

 private:
  fence::Resv resv_;
};

class ExecWoundWaitTest : public ::testing::Test {
 protected:
  void SetUp() override { ww::SetSlowpathInjection(false); }
  WwClass cls_{ww::WwAlgorithm::kWoundWait};
  TestObject a_{&cls_}, b_{&cls_};
};

// An older transaction holding `obj` on its own thread.
class OlderHolder : public ww::testing::Holder {
 public:
  OlderHolder(WwClass* cls, Object* obj) : Holder(cls, &obj->resv().lock(), true) {}
};

TEST_F(ExecWoundWaitTest, BacksOffInsteadOfSleepingBehindOlderHolder) {
  OlderHolder older(&cls_, &b_);
  Exec exec(0, {}, &cls_);
  int runs = 0;
  absl::Status st = exec.UntilAllLocked([&](Exec& e) -> absl::Status {
    ++runs;
    EXPECT_TRUE(e.objects().empty());
    if (runs == 2) {
      // The contended object was waited for alone; release the holder so that wait ends.
      older.Release();
    }
    absl::Status s = e.LockObj(&a_);
    if (!s.ok()) return s;
    if (runs > 1) {
      EXPECT_EQ(e.objects()[0], &b_);  // taken first, with the slow path
    }
    return e.LockObj(&b_);
  });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(exec.retries(), 1);
  EXPECT_TRUE(b_.resv().lock().IsHeldBy(&exec.ticket()));
  EXPECT_TRUE(a_.resv().lock().IsHeldBy(&exec.ticket()));
}

TEST_F(ExecWoundWaitTest, WithoutThePolicyWaitsHoldingLocks) {
  OlderHolder older(&cls_, &b_);
  BackoffPolicy policy;
  policy.enabled = false;
  Exec exec(0, {}, &cls_, policy);
  std::thread releaser([&] {
    // Bounded: a transaction that backs off instead of queueing fails the test, not hangs it.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (b_.resv().lock().WaiterCountForTesting() == 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Microseconds(50));
    }
    EXPECT_EQ(b_.resv().lock().WaiterCountForTesting(), 1) << "nobody queued within 10 s";
    EXPECT_TRUE(a_.resv().lock().IsLocked());  // held by the waiting transaction
    older.Release();
  });
  absl::Status st = exec.UntilAllLocked([&](Exec& e) {
    absl::Status s = e.LockObj(&a_);
    if (!s.ok()) return s;
    return e.LockObj(&b_);
  });
  releaser.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(exec.retries(), 0);
}

}  // namespace
}  // namespace exec
