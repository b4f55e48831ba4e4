// sched::Backend — drm_sched_backend_ops: what a driver (or a GPU emulator) plugs into a scheduler.
//
// Threads each callback can run on (no scheduler lock is held during any of them):
//   PrepareJob  — the scheduler's executor thread (its work item).
//   RunJob      — the executor thread; also the thread that calls Scheduler::ResubmitJobs (the
//                 timeout handler on the executor thread, or a reset worker).
//   TimedOutJob — the executor thread.
//   FreeJob     — the executor thread (finished jobs, killed jobs, and the job TimedOutJob was
//                 given, once it returned); the thread that calls Scheduler::Stop (jobs whose
//                 hardware fence had already signalled); the thread that destroys the scheduler.
//   CancelJob   — the thread that destroys the scheduler.
// Overlap:
//   - FreeJob calls of one scheduler never overlap each other, on whichever threads they run
//     (the scheduler holds one mutex of its own around every FreeJob call). FreeJob may call
//     into the scheduler (push jobs, Fault, ...) but must not call Stop or destroy the
//     scheduler: both free jobs themselves and would wait for the FreeJob that called them.
//   - PrepareJob and RunJob (and callbacks of the job's scheduled fence, which RunJob signals)
//     may call Scheduler::Stop and Start on the executor thread. Such a Stop frees the jobs whose
//     hardware fence already signalled there, so FreeJob then runs nested inside that PrepareJob
//     or RunJob (other jobs: the job being run stays pending; the one exception to the next
//     point); and the job being run is detached once RunJob returned (see Scheduler::Stop): a
//     RunJob that called Stop must not then wait for a ResubmitJobs or Start on another thread,
//     which wait for that.
//   - RunJob and FreeJob of one scheduler never overlap each other (the work item is never
//     running twice; Stop from another thread waits until it is between jobs, ResubmitJobs
//     requires a stopped scheduler, the destructor runs after the work item stopped) — provided
//     a ResubmitJobs on a reset worker is not still running when TimedOutJob returns: the job
//     TimedOutJob was given may be freed as soon as it returns. TimedOutJob itself may run while
//     a Stop it started on another thread calls FreeJob there; the job TimedOutJob holds is
//     never freed before it returns.
#ifndef UDRM_SCHED_BACKEND_H_
#define UDRM_SCHED_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "fence/fence.h"

namespace sched {

class Job;

// drm_gpu_sched_stat.
enum class TimeoutStatus { kReset, kNoDevice, kNoHang };

class Backend {
 public:
  virtual ~Backend() = default;

  // prepare_job: called for the head job of the entity the scheduler picked, once its credits are
  // available and its dependencies have signalled (for a pipelined dependency on a job of this
  // scheduler: its scheduled fence — that job's RunJob has returned); returns one more fence to
  // wait for, or null when there is none. Called again once per returned fence (after that fence
  // signalled) until it returns null; then the job runs. No scheduler lock is held; must not kill
  // the job's entity.
  virtual fence::FenceRef PrepareJob(Job& job) { return nullptr; }

  // run_job: start the job. Return its hardware fence (the job completes when it signals, with
  // its error), null (the job completes at once, successfully), or an error status (the job
  // completes at once with that error). Must not block on fences or allocate unboundedly: this
  // is the fence-signalling critical section.
  virtual absl::StatusOr<fence::FenceRef> RunJob(Job& job) = 0;

  // timedout_job: the job has made no progress for the scheduler's timeout.
  virtual TimeoutStatus TimedOutJob(Job& job) { return TimeoutStatus::kReset; }

  // free_job: the job's finished fence has signalled; the job is the backend's to destroy.
  virtual void FreeJob(std::unique_ptr<Job> job) {}

  // cancel_job: from Scheduler::Fini, for each job still on the hardware: signal its hardware
  // fence with an error (e.g. CancelledError). Do not free it; FreeJob follows.
  virtual void CancelJob(Job& job) {}
};

}  // namespace sched

#endif  // UDRM_SCHED_BACKEND_H_
