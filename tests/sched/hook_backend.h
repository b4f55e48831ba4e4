// HookBackend: a MockBackend with test hooks, shared by the reviews' scheduler tests.
#ifndef UDRM_TESTS_SCHED_HOOK_BACKEND_H_
#define UDRM_TESTS_SCHED_HOOK_BACKEND_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "fence/fence.h"
#include "sched/job.h"
#include "tests/sched/mock_backend.h"

namespace sched::testing {

// A MockBackend with test hooks: `prepare` runs in PrepareJob, `after_run` after RunJob has made
// the job's hardware fence (still inside the backend's RunJob); both outside the mock's lock.
// Records the order of PrepareJob and RunJob calls.
class HookBackend : public MockBackend {
 public:
  fence::FenceRef PrepareJob(Job& job) override {
    std::function<fence::FenceRef(Job&)> hook;
    {
      absl::MutexLock l(&mu_);
      events_.push_back({'P', job.finished().get()});
      hook = prepare_;
    }
    return hook ? hook(job) : nullptr;
  }
  absl::StatusOr<fence::FenceRef> RunJob(Job& job) override {
    std::function<void(Job&)> hook;
    {
      absl::MutexLock l(&mu_);
      events_.push_back({'R', job.finished().get()});
      ++runs_;
      hook = after_run_;
    }
    absl::StatusOr<fence::FenceRef> hw = MockBackend::RunJob(job);
    if (hook) hook(job);
    return hw;
  }
  // "P:i" / "R:i", i the index of the job's finished fence in `jobs`, else '?'.
  std::string Events(const std::vector<fence::FenceRef>& jobs) {
    absl::MutexLock l(&mu_);
    std::string out;
    for (const auto& [kind, f] : events_) {
      char id = '?';
      for (size_t i = 0; i < jobs.size(); ++i) {
        if (jobs[i].get() == f) id = static_cast<char>('0' + i);
      }
      out += std::string(1, kind) + id + " ";
    }
    return out;
  }
  std::vector<const fence::Fence*> RunOrder() {
    absl::MutexLock l(&mu_);
    std::vector<const fence::Fence*> out;
    for (const auto& [kind, f] : events_) {
      if (kind == 'R') out.push_back(f);
    }
    return out;
  }
  int runs() {
    absl::MutexLock l(&mu_);
    return runs_;
  }
  void SetPrepare(std::function<fence::FenceRef(Job&)> p) {
    absl::MutexLock l(&mu_);
    prepare_ = std::move(p);
  }
  void SetAfterRun(std::function<void(Job&)> r) {
    absl::MutexLock l(&mu_);
    after_run_ = std::move(r);
  }

 private:
  absl::Mutex mu_;
  std::function<fence::FenceRef(Job&)> prepare_ ABSL_GUARDED_BY(mu_);
  std::function<void(Job&)> after_run_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<char, const fence::Fence*>> events_ ABSL_GUARDED_BY(mu_);
  int runs_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sched::testing

#endif  // UDRM_TESTS_SCHED_HOOK_BACKEND_H_
