// sched::EntityStats — drm_sched_entity_stats: the GPU time an entity's jobs used, for the fair
// (virtual-runtime) policy.
//
// What it is: `runtime` is the sum of the entity's jobs' hardware durations (finished − start on
// the ring), added when the scheduler frees each job; `avg_job` is an EWMA of them (weight 1/4,
// as the kernel's DECLARE_EWMA(.., 6, 4)). The run queue turns them into a virtual runtime
// (sched/run_queue.h).
//
// Lifetime: shared by the entity and each of its armed jobs — a job can be freed after its entity
// is gone, and its runtime is still accounted.
// Thread-safety: every field is guarded by `mu` (jobs of one entity may be freed by two
// schedulers at once after the entity migrated). Lock order: Scheduler::mu_ before `mu`.
#ifndef UDRM_SCHED_ENTITY_STATS_H_
#define UDRM_SCHED_ENTITY_STATS_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sched {

struct EntityStats {
  absl::Mutex mu;
  absl::Duration runtime ABSL_GUARDED_BY(mu) = absl::ZeroDuration();
  absl::Duration avg_job ABSL_GUARDED_BY(mu) = absl::ZeroDuration();

  struct Snapshot {
    absl::Duration runtime, avg_job;
  };
  Snapshot Read() ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock l(&mu);
    return {runtime, avg_job};
  }

  void AddJobTime(absl::Duration d) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock l(&mu);
    runtime += d;
    avg_job = avg_job == absl::ZeroDuration() ? d : avg_job + (d - avg_job) / 4;
  }
};

}  // namespace sched

#endif  // UDRM_SCHED_ENTITY_STATS_H_
