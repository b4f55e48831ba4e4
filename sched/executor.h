// sched::Executor — where a scheduler's work runs (the kernel's submit workqueue).
//
// What it is: a scheduler has one work item (select, run, free, timeout handling). It posts that
// item to an executor whenever there is something to do, and never has it queued or running
// twice, so run and free never overlap for one scheduler even on an executor shared by many —
// the guarantee an ordered workqueue gives, kept per scheduler. Two executors:
//   ThreadPoolExecutor(1) — the default: each scheduler creates its own one-thread executor.
//   ThreadPoolExecutor(n) or TbbExecutor (sched/tbb_executor.h) — caller-supplied, shared by
//   several schedulers; n threads serve them all.
//
// Lifetime: an executor passed to a scheduler must outlive it. Destroying an executor waits for
// the work already posted to finish; posting during destruction is a contract violation.
// Thread-safety: Post from any thread. Memory ordering: everything the poster wrote before Post
// is visible to the work when it runs (the hand-off goes through the executor's mutex).
#ifndef UDRM_SCHED_EXECUTOR_H_
#define UDRM_SCHED_EXECUTOR_H_

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace sched {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `work` soon on one of the executor's threads. Never blocks on the work; never runs it
  // on the calling thread.
  virtual void Post(absl::AnyInvocable<void()> work) = 0;
};

// `threads` std::threads serving one FIFO queue.
class ThreadPoolExecutor final : public Executor {
 public:
  explicit ThreadPoolExecutor(int threads = 1);
  ~ThreadPoolExecutor() override;
  void Post(absl::AnyInvocable<void()> work) override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool exit_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace sched

#endif  // UDRM_SCHED_EXECUTOR_H_
