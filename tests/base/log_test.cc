// base/log.h: one process-wide sink receives every layer's messages with their logger names;
// SetSink(nullptr) returns to spdlog; installing sinks while other threads log is safe (TSan).
#include "base/log.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/base/captured_sink.h"

namespace udrm::log {
namespace {

using Captured = udrm::log::testing::CapturedSink;

// Messages of different loggers reach the one sink in order, with name and level; after
// SetSink(nullptr) they go to spdlog (not to the old sink).
TEST(Log, OneSinkForEveryLogger) {
  Captured captured;
  SetSink(captured.sink());
  Write(Level::kWarn, "udrm.fence", "a fence message");
  Write(Level::kError, "udrm.sched", "a scheduler message");
  Write(Level::kDebug, "udrm.fence", "another");
  SetSink(nullptr);
  Write(Level::kInfo, "udrm.fence", "to spdlog");  // default sink; must not crash or capture
  Write(Level::kInfo, "udrm.test", "a new spdlog logger");
  EXPECT_EQ(captured.lines(), (std::vector<std::string>{"udrm.fence a fence message",
                                                        "udrm.sched a scheduler message",
                                                        "udrm.fence another"}));
  EXPECT_EQ(captured.levels(), (std::vector<Level>{Level::kWarn, Level::kError, Level::kDebug}));
}

// Installing sinks while other threads log: every message goes to one sink or to spdlog, a
// replaced sink stays alive until its last call returns, the last one installed gets the next.
TEST(Log, SetSinkWhileLogging) {
  std::atomic<int> calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) Write(Level::kDebug, t == 0 ? "udrm.a" : "udrm.b", "x");
    });
  }
  for (int i = 0; i < 100; ++i) {
    auto owned = std::make_shared<int>(i);  // destroyed with the sink that captures it
    SetSink([&calls, owned](Level, std::string_view, std::string_view) {
      calls.fetch_add(*owned >= 0 ? 1 : 0);
    });
  }
  Captured last;
  SetSink(last.sink());
  Write(Level::kError, "udrm.c", "the last one");
  for (auto& t : threads) t.join();
  SetSink(nullptr);
  const std::vector<std::string> lines = last.lines();
  EXPECT_NE(std::find(lines.begin(), lines.end(), "udrm.c the last one"), lines.end());
}

}  // namespace
}  // namespace udrm::log
