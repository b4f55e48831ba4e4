// ChromeTraceSink output: valid JSON for any scheduler name.
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sched/trace.h"
#include "tests/sched/json_check.h"

namespace sched {
namespace {

using testing::JsonCheck;

TraceRecord Rec(TraceEvent e, std::string_view sched, uint64_t seqno, absl::Time t) {
  TraceRecord r{e, sched, 7, seqno, 0, 0, t};
  return r;
}

// The JSON checker itself rejects what it must (else the tests below could not fail).
TEST(JsonCheck, AcceptsAndRejects) {
  EXPECT_TRUE(JsonCheck::IsValid(R"({"a":[1,-2.5e3,"x\"\\\u0001",true,null]})"));
  EXPECT_FALSE(JsonCheck::IsValid(R"({"a":"x"y"})"));
  EXPECT_FALSE(JsonCheck::IsValid("{\"a\":\"x\ny\"}"));
  EXPECT_FALSE(JsonCheck::IsValid(R"({"a":"x\y"})"));
  EXPECT_FALSE(JsonCheck::IsValid(R"({"a":1,})"));
}

// Issue 10: a quote, a backslash or a control character in a scheduler name made the file
// unreadable; every string is escaped now.
TEST(ChromeTraceSink, EscapesNames) {
  ChromeTraceSink sink;
  const std::string name = std::string("gfx \"ring\" \\0 \n\t") + '\x01' + "\x7f end";
  sink.Record(Rec(TraceEvent::kQueue, name, 1, absl::Now()));
  const std::string json = sink.ToJson();
  EXPECT_TRUE(JsonCheck::IsValid(json)) << json;
  EXPECT_NE(json.find(R"(gfx \"ring\" \\0 \n\t\u0001)"), std::string::npos) << json;
}

}  // namespace
}  // namespace sched

namespace sched {
namespace {

using testing::JsonCheck;

// Memory is bounded: a sink of capacity 8 keeps the 8 most recent events, counts the rest as
// dropped, and still writes valid JSON, oldest first.
TEST(ChromeTraceSink, RingBufferKeepsTheNewestEvents) {
  ChromeTraceSink sink(8);
  const absl::Time t0 = absl::Now();
  for (uint64_t i = 1; i <= 100; ++i) {
    sink.Record(TraceRecord{TraceEvent::kQueue, "gfx", 7, i, 0, 0, t0});
  }
  EXPECT_EQ(sink.capacity(), 8u);
  EXPECT_EQ(sink.size(), 8u);
  EXPECT_EQ(sink.dropped(), 92u);
  const std::string json = sink.ToJson();
  EXPECT_TRUE(JsonCheck::IsValid(json)) << json;
  EXPECT_EQ(json.find("\"7:92\""), std::string::npos);  // overwritten
  const size_t first = json.find("\"7:93\""), last = json.find("\"7:100\"");
  ASSERT_NE(first, std::string::npos);
  ASSERT_NE(last, std::string::npos);
  EXPECT_LT(first, last);
}

// A job's run and done events give one duration event ("ph":"X") from run to done; a done
// whose run was overwritten gives none.
TEST(ChromeTraceSink, DurationEventForAJobsRun) {
  ChromeTraceSink sink(3);
  const absl::Time t0 = absl::FromUnixMicros(1000000);
  sink.Record(TraceRecord{TraceEvent::kRun, "gfx", 7, 1, 0, 0, t0});           // overwritten
  sink.Record(TraceRecord{TraceEvent::kRun, "gfx", 7, 2, 0, 0, t0 + absl::Microseconds(10)});
  sink.Record(TraceRecord{TraceEvent::kDone, "gfx", 7, 1, 0, 0, t0 + absl::Microseconds(20)});
  sink.Record(TraceRecord{TraceEvent::kDone, "gfx", 7, 2, 0, 0, t0 + absl::Microseconds(250)});
  const std::string json = sink.ToJson();
  EXPECT_TRUE(JsonCheck::IsValid(json)) << json;
  EXPECT_NE(json.find(R"({"name":"drm_sched_job","ph":"X","pid":1,"tid":"gfx","ts":1000010,)"
                      R"("dur":240,"args":{"fence":"7:2"}})"),
            std::string::npos)
      << json;
  size_t count = 0;
  for (size_t p = json.find("\"ph\":\"X\""); p != std::string::npos;
       p = json.find("\"ph\":\"X\"", p + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 1u) << json;
}

}  // namespace
}  // namespace sched
