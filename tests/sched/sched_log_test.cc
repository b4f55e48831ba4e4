// sched/log.h: the embedder's log sink receives the library's messages; spdlog is the default.
#include "sched/log.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "tests/sched/mock_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

class Captured {
 public:
  log::Sink sink() {
    return [this](log::Level level, std::string_view logger, std::string_view message) {
      absl::MutexLock l(&mu_);
      lines_.push_back(std::string(logger) + " " + std::string(message));
      levels_.push_back(level);
    };
  }
  // Polls (up to `timeout`) for a captured line containing `text`; its level in `*level`.
  bool WaitFor(const std::string& text, log::Level* level,
               absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      {
        absl::MutexLock l(&mu_);
        for (size_t i = 0; i < lines_.size(); ++i) {
          if (lines_[i].find(text) == std::string::npos) continue;
          *level = levels_[i];
          return true;
        }
      }
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  std::vector<log::Level> levels_ ABSL_GUARDED_BY(mu_);
};

// The scheduler's "credits truncated" warning reaches an installed sink, with the logger's name;
// after SetSink(nullptr) messages go to spdlog again (not to the old sink).
TEST(SchedLog, InstalledSinkCapturesTheSchedulersWarning) {
  Captured captured;
  log::SetSink(captured.sink());
  testing::MockBackend mock;
  SchedulerOptions opts;
  opts.name = "gfx";
  opts.credit_limit = 4;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  auto e = *Entity::Create({s.get()});
  auto job = std::make_unique<testing::MockJob>();
  ASSERT_TRUE(job->Init(e.get(), 100).ok());
  fence::FenceRef f = e->Submit(std::move(job));
  log::Level level;
  ASSERT_TRUE(captured.WaitFor("udrm.sched gfx: 1 job(s) asked for more credits than the limit 4",
                               &level));
  EXPECT_EQ(level, log::Level::kWarn);
  log::SetSink(nullptr);
  log::Write(log::Level::kInfo, "after uninstall");  // to spdlog
  EXPECT_FALSE(captured.WaitFor("after uninstall", &level, absl::ZeroDuration()));
  while (mock.run_order().empty()) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(mock.Advance(1), 1);
  EXPECT_TRUE(f->Wait(testing::kWait).ok());
}

// Installing sinks while other threads log is safe (run under TSan): every message goes to one
// of the sinks or to spdlog, and a replaced sink stays alive until its last call returns; the
// sink installed last receives the next message.
TEST(SchedLog, SetSinkWhileLogging) {
  std::atomic<int> calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([] {
      for (int i = 0; i < 200; ++i) log::Write(log::Level::kDebug, "concurrent");
    });
  }
  for (int i = 0; i < 100; ++i) {
    auto owned = std::make_shared<int>(i);  // destroyed with the sink that captures it
    log::SetSink([&calls, owned](log::Level, std::string_view, std::string_view) {
      calls.fetch_add(*owned >= 0 ? 1 : 0);
    });
  }
  Captured last;
  log::SetSink(last.sink());
  log::Write(log::Level::kError, "the last one");
  log::Level level;
  EXPECT_TRUE(last.WaitFor("udrm.sched the last one", &level, absl::ZeroDuration()));
  EXPECT_EQ(level, log::Level::kError);
  for (auto& t : threads) t.join();
  log::SetSink(nullptr);
}

}  // namespace
}  // namespace sched
