// Helpers shared by the sched/ tests: the executor kind under test, submit one MockJob, wait
// with a generous bound.
//
// Executor kinds: every scheduler a test creates goes through Opts(), which picks the executor
// named by the environment variable UDRM_SCHED_EXECUTOR — unset or "own": each scheduler's own
// thread; "pool:N": one ThreadPoolExecutor of N threads shared by all schedulers of the process;
// "tbb:N": one TbbExecutor of N oneTBB threads shared likewise. tests/sched/BUILD runs the
// scheduler tests once per kind.
#ifndef UDRM_TESTS_SCHED_SCHED_TEST_UTIL_H_
#define UDRM_TESTS_SCHED_SCHED_TEST_UTIL_H_

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/executor.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "sched/tbb_executor.h"
#include "tests/sched/mock_backend.h"

namespace sched::testing {

// Upstream waits are 1 s; sanitizer builds get slack, the assertion is the same: no hang.
inline constexpr absl::Duration kWait = absl::Seconds(10);

// The shared executor for this process, or null for "own". Never destroyed: schedulers in
// static storage may outlive any scope.
inline Executor* SharedTestExecutor() {
  static Executor* executor = []() -> Executor* {
    const char* env = std::getenv("UDRM_SCHED_EXECUTOR");
    const std::string kind = env != nullptr ? env : "own";
    const size_t colon = kind.find(':');
    const int n = colon == std::string::npos ? 1 : std::atoi(kind.c_str() + colon + 1);
    if (kind.rfind("pool", 0) == 0) return new ThreadPoolExecutor(n);
    if (kind.rfind("tbb", 0) == 0) return new TbbExecutor(n);
    return nullptr;
  }();
  return executor;
}

inline SchedulerOptions Opts(SchedulerOptions options = {}) {
  options.executor = SharedTestExecutor();
  return options;
}

struct Submitted {
  MockJob* job;  // valid until the job is freed
  fence::FenceRef scheduled;
  fence::FenceRef finished;
};

inline Submitted SubmitMock(Entity* e, absl::Duration duration = absl::ZeroDuration(),
                            std::vector<fence::FenceRef> deps = {}) {
  auto job = std::make_unique<MockJob>();
  EXPECT_TRUE(job->Init(e, 1).ok());
  job->duration = duration;
  for (auto& d : deps) EXPECT_TRUE(job->AddDependency(std::move(d)).ok());
  MockJob* raw = job.get();
  ArmedJob armed = Job::Arm(std::move(job));
  Submitted out{raw, armed.scheduled(), armed.finished()};
  std::move(armed).Push();
  return out;
}

inline bool SignalsWithin(const fence::FenceRef& f, absl::Duration d) { return f->Wait(d).ok(); }

}  // namespace sched::testing

#endif  // UDRM_TESTS_SCHED_SCHED_TEST_UTIL_H_
