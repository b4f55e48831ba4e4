// exec::Object constructed with its Resv: an Exec reaches the Resv through that pointer (no
// virtual resv() call) on every path — the inline fast path, the slow path after a back-off, the
// unlocks — and a resv() that disagrees with the named Resv is a contract violation caught in
// debug builds.
#include <memory>
#include <vector>

#include "base/check.h"
#include "exec/exec.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "ww/ww_mutex.h"

namespace exec {
namespace {

// Names its Resv to Object and counts the virtual calls an Exec makes anyway.
class NamedResvObject final : public Object {
 public:
  NamedResvObject() : Object(&resv_) {}
  // A copy names nothing (exec::Object's copy): its own Resv is reached through resv().
  NamedResvObject(const NamedResvObject& o) : Object(o) {}
  fence::Resv& resv() override {
    ++resv_calls;
    return resv_;
  }
  int resv_calls = 0;

 private:
  fence::Resv resv_;
};

// Names one Resv but returns another from resv(): a broken object.
class LyingObject final : public Object {
 public:
  LyingObject() : Object(&named_) {}
  fence::Resv& resv() override { return other_; }

 private:
  fence::Resv named_;
  fence::Resv other_;
};

class ExecObjectResvTest : public ::testing::Test {
 protected:
  void SetUp() override { ww::SetSlowpathInjection(false); }
  void TearDown() override { ww::SetSlowpathInjection(false); }
};

std::vector<Object*> Pointers(std::vector<std::unique_ptr<NamedResvObject>>& objs) {
  std::vector<Object*> out;
  for (auto& o : objs) out.push_back(o.get());
  return out;
}

TEST_F(ExecObjectResvTest, LocksReservesAndUnlocksTheNamedResv) {
  std::vector<std::unique_ptr<NamedResvObject>> objs;
  for (int i = 0; i < 3; ++i) objs.push_back(std::make_unique<NamedResvObject>());
  std::vector<Object*> ptrs = Pointers(objs);
  fence::FenceContext timeline;
  fence::FenceRef f = timeline.NewFence();
  {
    Exec exec;
    absl::Status st = exec.UntilAllLocked([&](Exec& e) { return e.PrepareArray(ptrs, 1); });
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(exec.objects().size(), 3u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(exec.objects()[i], ptrs[i]);
      EXPECT_TRUE(objs[i]->resv().lock().IsLocked());
      EXPECT_EQ(objs[i]->resv().reserved(), 1u);
      objs[i]->resv().AddFence(f, fence::ResvUsage::kWrite);
    }
    for (auto& o : objs) o->resv_calls = 0;
  }
  for (auto& o : objs) {
    // The Exec's unlock went through the named pointer (debug builds call resv() once, to check
    // it).
    EXPECT_EQ(o->resv_calls, UDRM_DEBUG_CHECKS ? 1 : 0);
    EXPECT_FALSE(o->resv().lock().IsLocked());
    EXPECT_EQ(o->resv().GetFences(fence::ResvUsage::kWrite).size(), 1u);
  }
  f->Signal();
}

// Slow-path injection makes a lock back off: the contended object is then taken with the slow
// path (LockContended) and the rest again, all through the named Resv.
TEST_F(ExecObjectResvTest, BackoffRetakesTheNamedResvs) {
  ww::SetSlowpathInjection(true);
  std::vector<std::unique_ptr<NamedResvObject>> objs;
  for (int i = 0; i < 20; ++i) objs.push_back(std::make_unique<NamedResvObject>());
  std::vector<Object*> ptrs = Pointers(objs);
  {
    Exec exec;
    absl::Status st = exec.UntilAllLocked([&](Exec& e) { return e.PrepareArray(ptrs, 1); });
    ASSERT_TRUE(st.ok()) << st;
    // Injection backs off first after (stamp & 15) < 20 locks.
    EXPECT_GE(exec.retries(), 1);
    EXPECT_EQ(exec.objects().size(), 20u);
    for (auto& o : objs) EXPECT_TRUE(o->resv().lock().IsLocked());
  }
  for (auto& o : objs) EXPECT_FALSE(o->resv().lock().IsLocked());
}

#ifndef NDEBUG
TEST_F(ExecObjectResvTest, ResvOtherThanTheNamedOneDiesInDebugBuilds) {
  LyingObject obj;
  EXPECT_DEATH(
      {
        Exec exec;
        (void)exec.UntilAllLocked([&](Exec& e) { return e.LockObj(&obj); });
      },
      "not the Resv given to its constructor");
}
#endif

// The paths this change moved inline (review rve2: each could be dropped without another test
// failing). Cleanup() after a run without contention marks the ticket done: a later lock breaks
// the contract (ww_acquire_done).
TEST_F(ExecObjectResvTest, TicketIsDoneAfterTheLoop) {
  NamedResvObject a, b;
  EXPECT_DEATH(
      {
        Exec exec;
        (void)exec.UntilAllLocked([&](Exec& e) { return e.LockObj(&a); });
        (void)exec.LockObj(&b);
      },
      "");
}

// WwAcquireContext::Fini (inline): finishing twice dies; a destructor after an explicit Fini does
// not finish again.
TEST_F(ExecObjectResvTest, AcquireContextFiniTwiceDies) {
  ww::WwClass cls(ww::WwAlgorithm::kWaitDie);
  {
    ww::WwAcquireContext ok(&cls);
    ok.Fini();
  }
  EXPECT_DEATH(
      {
        ww::WwAcquireContext ctx(&cls);
        ctx.Fini();
        ctx.Fini();
      },
      "finished twice");
}

// A copy of a naming object names nothing: an Exec asks the copy's own resv(), never the
// source's Resv.
TEST_F(ExecObjectResvTest, CopyNamesItsOwnResv) {
  NamedResvObject src;
  NamedResvObject copy(src);
  {
    Exec exec;
    ASSERT_TRUE(exec.UntilAllLocked([&](Exec& e) { return e.LockObj(&copy); }).ok());
    EXPECT_TRUE(copy.resv().lock().IsLocked());
    EXPECT_FALSE(src.resv().lock().IsLocked());
  }
  EXPECT_FALSE(copy.resv().lock().IsLocked());
}

}  // namespace
}  // namespace exec
