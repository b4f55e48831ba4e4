// sched::Scheduler — drm_gpu_scheduler: feeds jobs from entities to one backend (a ring).
//
// What it does: picks the ready entity whose head job was pushed first (FIFO), resolves that
// job's dependencies (a fence of the same entity is ignored; a finished fence of a job on this
// same scheduler is waited for only until that job is scheduled, unless it carries an error or
// asks not to be pipelined; any other fence is waited for), charges its credits — waiting for
// credits rather than skipping the chosen entity — and calls Backend::RunJob, then signals the
// job's scheduled fence; when the hardware fence signals, the finished fence signals with its
// error and the credits come back; finished jobs are freed (Backend::FreeJob) in the order they
// were handed to the backend.
//
// Threads and locks: one executor thread per scheduler runs selection, RunJob and FreeJob, so run
// and free never overlap. `mu_` guards the run queue, entity queues and the pending list; it is
// never held while calling the backend, and no fence callback takes it — callbacks (dependency
// signalled, hardware fence signalled) only touch atomics and `wake_mu_`, so a fence may signal
// from any thread, even one holding `mu_`.
//
// Timeouts: the timer restarts whenever a job is handed to the backend or freed; on expiry the
// head of the pending list (the oldest job on the hardware) is taken off the list and given to
// Backend::TimedOutJob on the executor thread, then put back at the head (kNoHang: it is still
// running; kReset: the backend has failed its hardware fence; either way it is freed once its
// finished fence signals). The timer is re-armed unless the result is kNoDevice.
//
// Status of this first slice (issue 4): FIFO and round-robin selection with priorities, credits,
// timeouts; not yet the fair policy, load balancing, stop/start/karma recovery, entity kill,
// trace events.
//
// Lifetime: create with Create(); destroy entities first; the destructor (Fini) stops the
// executor, cancels jobs still on the hardware through Backend::CancelJob and frees them.
#ifndef UDRM_SCHED_SCHEDULER_H_
#define UDRM_SCHED_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <limits>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "sched/backend.h"
#include "sched/trace.h"

namespace sched {

class Entity;
class Job;

// Entity selection among ready entities of the highest priority present (KERNEL first):
// kFifo — the entity whose head job was pushed first; kRoundRobin — the entity selected least
// recently. (The 2025 fair, virtual-runtime policy is not implemented yet.)
enum class Policy { kFifo, kRoundRobin };

struct SchedulerOptions {
  std::string name = "udrm";
  uint32_t credit_limit = std::numeric_limits<uint32_t>::max();
  Policy policy = Policy::kFifo;
  // TDR: when no job has been handed to the backend or freed for this long while jobs are on
  // the hardware, the oldest one is blamed (Backend::TimedOutJob). Infinite: no timeout.
  absl::Duration timeout = absl::InfiniteDuration();
  // Trace events (sched/trace.h); null: none. Must outlive the scheduler.
  TraceSink* trace = nullptr;
};

class Scheduler {
 public:
  // drm_sched_init: InvalidArgument without a backend or with a zero credit limit.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(Backend* backend,
                                                           SchedulerOptions options = {});
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  const std::string& name() const { return options_.name; }
  uint32_t credit_limit() const { return options_.credit_limit; }
  // Credits of jobs handed to the backend and not finished. Memory ordering: relaxed (a gauge).
  uint32_t credit_count() const { return credit_count_.load(std::memory_order_relaxed); }

 private:
  friend class Entity;
  friend class Job;
  explicit Scheduler(Backend* backend, SchedulerOptions options);

  // Job::Push: queue `job` on its entity and wake the executor.
  void Enqueue(Entity* entity, std::unique_ptr<Job> job) ABSL_LOCKS_EXCLUDED(mu_);
  void RemoveEntity(Entity* entity) ABSL_LOCKS_EXCLUDED(mu_);
  void KillEntity(Entity* entity) ABSL_LOCKS_EXCLUDED(mu_);
  // Killed jobs: never run; complete with ESRCH once their dependencies and the previous killed
  // job have signalled (a callback, no blocking); then the executor frees them.
  void KillJobs(Entity* entity, std::deque<std::unique_ptr<Job>> jobs)
      ABSL_LOCKS_EXCLUDED(mu_, killed_mu_);
  static void CompleteKilled(Job* job);
  std::vector<std::unique_ptr<Job>> TakeKilledDone() ABSL_LOCKS_EXCLUDED(killed_mu_);
  absl::StatusOr<absl::Duration> FlushEntity(Entity* entity, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu_);
  // From fence callbacks: only wake_mu_.
  void WakeUp() ABSL_LOCKS_EXCLUDED(wake_mu_);

  void ExecutorLoop();
  // The TDR check: blames the oldest pending job if the timer has expired.
  void HandleTimeout() ABSL_LOCKS_EXCLUDED(mu_);
  void ArmTimerLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One round: free finished jobs, then pick and run at most one job. True if it did anything.
  bool RunOnce() ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<std::unique_ptr<Job>> TakeFinishedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Job* PopReadyJobLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool DependenciesResolvedLocked(Entity* entity, Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunJob(Job* job) ABSL_LOCKS_EXCLUDED(mu_);
  void JobDone(Job* job, absl::Status status);
  void Trace(TraceEvent event, const fence::Fence& job_fence, const fence::Fence* dep = nullptr);
  // Records made under mu_ are buffered and emitted after it is released.
  void TraceLocked(TraceEvent event, const fence::Fence& job_fence,
                   const fence::Fence* dep = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EmitBuffered(std::vector<TraceRecord>& records);

  Backend* const backend_;
  const SchedulerOptions options_;
  std::atomic<uint32_t> credit_count_{0};

  mutable absl::Mutex mu_;
  std::list<Entity*> rq_ ABSL_GUARDED_BY(mu_);                 // entities with queued jobs
  std::deque<std::unique_ptr<Job>> pending_ ABSL_GUARDED_BY(mu_);  // handed to the backend
  uint64_t next_submit_stamp_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t rr_clock_ ABSL_GUARDED_BY(mu_) = 0;                     // round-robin stamps
  absl::Time tdr_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool tdr_disabled_ ABSL_GUARDED_BY(mu_) = false;                 // after kNoDevice
  std::vector<TraceRecord> trace_buf_ ABSL_GUARDED_BY(mu_);
  int truncated_ ABSL_GUARDED_BY(mu_) = 0;  // oversized jobs to warn about, outside mu_

  // Killed jobs until freed; their callbacks never take it (they only signal and WakeUp()).
  absl::Mutex killed_mu_;
  std::vector<std::unique_ptr<Job>> killed_ ABSL_GUARDED_BY(killed_mu_);

  absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool exit_ ABSL_GUARDED_BY(wake_mu_) = false;

  std::thread executor_;
};

}  // namespace sched

#endif  // UDRM_SCHED_SCHEDULER_H_
