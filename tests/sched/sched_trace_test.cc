// sched/ trace events: queue, add-dependency, unschedulable, run and done, keyed by the job's
// finished fence context:seqno, written as Chrome/Perfetto JSON.
#include "sched/trace.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/scheduler.h"
#include "tests/sched/json_check.h"
#include "tests/sched/mock_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::MockBackend;
using testing::MockJob;

TEST(SchedTrace, EventsKeyedByFenceInOrder) {
  MockBackend mock;
  ChromeTraceSink sink;
  SchedulerOptions opts;
  opts.name = "gfx";
  opts.credit_limit = 1;
  opts.trace = &sink;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  fence::FenceContext external;
  fence::FenceRef gate = external.NewFence();
  fence::FenceRef f1, f2;
  {
    // j2 takes the only credit first; j1, pushed while j2 runs, has no credits (unschedulable)
    // and is not looked at further until it has (the kernel checks credits before it resolves
    // dependencies); then it waits for the gate (add_dep). Each step is awaited, not slept on.
    auto other = *Entity::Create({s.get()});
    auto j2 = std::make_unique<MockJob>();
    ASSERT_TRUE(j2->Init(other.get(), 1).ok());
    f2 = other->Submit(std::move(j2));
    while (mock.run_order().empty()) absl::SleepFor(absl::Milliseconds(1));
    auto e = *Entity::Create({s.get()});
    auto j1 = std::make_unique<MockJob>();
    ASSERT_TRUE(j1->Init(e.get(), 1).ok());
    ASSERT_TRUE(j1->AddDependency(gate).ok());
    f1 = e->Submit(std::move(j1));
    while (sink.ToJson().find("drm_sched_job_unschedulable") == std::string::npos) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_EQ(mock.Advance(1), 1);
    while (sink.ToJson().find("drm_sched_job_add_dep") == std::string::npos) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    gate->Signal();
    while (mock.run_order().size() < 2) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(mock.Advance(1), 1);
    ASSERT_TRUE(f1->Wait(absl::Seconds(10)).ok());
  }
  s.reset();
  const std::string json = sink.ToJson();
  const std::string k1 = absl::StrCat(f1->context(), ":", f1->seqno());
  const std::string k2 = absl::StrCat(f2->context(), ":", f2->seqno());
  // Every event of j1 appears, in life order: queue < unschedulable < add_dep < run < done.
  std::vector<size_t> pos;
  size_t from = 0;
  for (const char* name : {"drm_sched_job_queue", "drm_sched_job_unschedulable",
                           "drm_sched_job_add_dep", "drm_sched_job_run",
                           "drm_sched_job_done"}) {
    size_t p = from;
    for (;;) {
      p = json.find(std::string("\"name\":\"") + name + "\"", p);
      ASSERT_NE(p, std::string::npos) << name << " for " << k1 << " in " << json;
      const size_t end = json.find('}', json.find("\"args\"", p));
      if (json.substr(p, end - p).find("\"fence\":\"" + k1 + "\"") != std::string::npos) break;
      ++p;
    }
    pos.push_back(p);
    from = p;
  }
  EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
  EXPECT_NE(json.find("\"dep\":\"" + absl::StrCat(gate->context(), ":", gate->seqno()) + "\""),
            std::string::npos);
  EXPECT_NE(json.find("\"fence\":\"" + k2 + "\""), std::string::npos);
  EXPECT_TRUE(testing::JsonCheck::IsValid(json)) << json;
  // j1's run on the hardware is one duration event.
  EXPECT_NE(json.find("\"ph\":\"X\",\"pid\":1,\"tid\":\"gfx\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"args\":{\"fence\":\"" + k1 + "\"}}"), std::string::npos);
}

}  // namespace
}  // namespace sched
