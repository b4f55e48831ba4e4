// The fence layer logs through base/log.h: a sink installed once receives its warnings (logger
// "udrm.fence"), as it receives the scheduler's (tests/sched/sched_log_test).
#include <string>
#include <vector>

#include "base/log.h"
#include "fence/fence.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "tests/base/captured_sink.h"

namespace fence {
namespace {

using udrm::log::Level;

using Captured = udrm::log::testing::CapturedSink;

// Both fence warnings reach the one sink: comparing fences of different contexts, and releasing
// an unsignalled fence with a callback pending (which then runs with the -EDEADLK error).
TEST(FenceLog, WarningsReachTheInstalledSink) {
  Captured captured;
  udrm::log::SetSink(captured.sink());
  FenceRef a = Fence::Create(FenceContext::Allocate(), 1);
  FenceRef b = Fence::Create(FenceContext::Allocate(), 1);
  EXPECT_FALSE(Fence::IsLater(*a, *b));
  FenceCallback cb;
  absl::Status seen;
  {
    FenceRef doomed = Fence::Create(7, 9);
    ASSERT_TRUE(doomed->AddCallback(&cb, [&seen](Fence& f) { seen = f.error(); }).ok());
  }
  udrm::log::SetSink(nullptr);
  EXPECT_TRUE(absl::IsAborted(seen));
  const std::string contexts = "udrm.fence Fence::IsLater on different contexts " +
                               std::to_string(a->context()) + " and " +
                               std::to_string(b->context());
  EXPECT_EQ(captured.lines(),
            (std::vector<std::string>{contexts,
                                      "udrm.fence fence 7:9 released unsignalled with callbacks "
                                      "pending; signalling -EDEADLK"}));
  EXPECT_EQ(captured.levels(), (std::vector<Level>{Level::kWarn, Level::kWarn}));
  a->Signal();
  b->Signal();
}

}  // namespace
}  // namespace fence
