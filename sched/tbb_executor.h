// sched::TbbExecutor — a sched::Executor whose threads come from oneTBB (a tbb::task_arena).
//
// oneTBB supplies the threads only. The work itself is handed over through this class's own
// absl::Mutex-guarded queue: each Post queues the work and enqueues a data-free oneTBB task that
// runs the oldest queued work. ThreadSanitizer cannot see the synchronisation inside the
// precompiled libtbb, so nothing of ours is published through it (see tools/tsan.supp for the
// one report about oneTBB's own task fields).
//
// Lifetime: must outlive the schedulers using it; the destructor waits for posted work to finish.
// Thread-safety and memory ordering: as sched::Executor.
#ifndef UDRM_SCHED_TBB_EXECUTOR_H_
#define UDRM_SCHED_TBB_EXECUTOR_H_

#include <deque>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "oneapi/tbb/task_arena.h"
#include "sched/executor.h"

namespace sched {

class TbbExecutor final : public Executor {
 public:
  // At most `max_concurrency` oneTBB threads run work at once.
  explicit TbbExecutor(int max_concurrency);
  ~TbbExecutor() override;
  void Post(absl::AnyInvocable<void()> work) override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Kick;
  void RunOne() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // posted and not yet finished
  tbb::task_arena arena_;
};

}  // namespace sched

#endif  // UDRM_SCHED_TBB_EXECUTOR_H_
