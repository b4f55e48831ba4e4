// Helpers shared by the sched/ tests: submit one MockJob, wait with a generous bound.
#ifndef UDRM_TESTS_SCHED_SCHED_TEST_UTIL_H_
#define UDRM_TESTS_SCHED_SCHED_TEST_UTIL_H_

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "tests/sched/mock_backend.h"

namespace sched::testing {

// Upstream waits are 1 s; sanitizer builds get slack, the assertion is the same: no hang.
inline constexpr absl::Duration kWait = absl::Seconds(10);

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
  job->Arm();
  Submitted out{job.get(), job->scheduled(), job->finished()};
  Job::Push(std::move(job));
  return out;
}

inline bool SignalsWithin(const fence::FenceRef& f, absl::Duration d) { return f->Wait(d).ok(); }

}  // namespace sched::testing

#endif  // UDRM_TESTS_SCHED_SCHED_TEST_UTIL_H_
