// sched::Scheduler — drm_gpu_scheduler: feeds jobs from entities to one backend (a ring).
//
// What it does: picks the first ready entity in its run queue's order (sched/policy.h; the
// fair virtual-runtime policy by default), resolves that entity's head job's dependencies (a
// fence of the same entity is ignored; a finished fence of a job on this same scheduler is waited
// for only until that job is scheduled, unless it carries an error or asks not to be pipelined —
// a dependency (Job::AddDependency) on a job this scheduler selected and has not yet run ends the
// round's selection at that job, which stays its entity's head, and the next round, after that
// dependency's RunJob, selects it with no callback; Backend::PrepareJob is called at selection
// and a fence it returns is waited for by that job's entity only, as any dependency; any other
// fence is waited for),
// charges its credits — waiting for credits rather than skipping the chosen entity — and calls
// Backend::RunJob, then signals the job's scheduled fence; when the
// hardware fence signals, the finished fence signals with its error and the credits come back;
// finished jobs are freed (Backend::FreeJob) in the order they were handed to the backend, and
// their hardware time is charged to their entity (the fair policy's virtual runtime).
//
// What a selection sees: every job whose Push returned before the credits that the selection
// uses were freed (the kernel selects from the run queue at selection time, and such a push is
// already there) — e.g. with one credit, jobs pushed while a job runs and before its hardware
// fence signals all compete for the credit it frees, by priority and policy, whichever thread
// signals it. A job pushed later (or concurrently) may or may not be a candidate. A selection
// only uses credits that were free when its round began; a credit freed during a round is used
// by the next round, which the completion always triggers: a round never selects more than the
// credits free at its start minus what its own selections charged. A round makes up to 32
// selections (one after the other, each in policy order and charging its credits) under one hold
// of `mu_` — released only while a chosen head job's dependencies are resolved — and then runs
// the selected jobs in selection order (the kernel runs one per work-item pass; its contract does
// not require it). A Stop during a round takes effect before the round's next job (see Stop).
// A job whose context (the entity's guilty flag) is found guilty after its selection but before
// its RunJob — a recovery during the round — gets CancelledError then and still goes to the
// backend, as one guilty at selection; no job depending on it was selected before its RunJob
// (above), so a dependant on this scheduler that resolves it after that sees the error and waits
// for its finished fence (one waiting on its scheduled fence, e.g. a fence PrepareJob returned
// before the context turned guilty, does not).
// GPU time of jobs that finish during a round is charged to their entities (the fair policy's
// key) at the next round; a job that completes at once (no hardware fence) is charged 1 µs
// (internal::kMinJobChargeNs), so that priorities still weigh the service of a synchronous
// backend.
//
// Threads and locks: the scheduler's one work item (selection, RunJob, FreeJob, the timeout
// handler) runs on its executor (sched/executor.h: its own thread by default, or one shared with
// other schedulers) and is never queued or running twice, so run and free never overlap. A
// process-wide timer thread (internal/tdr_timer.h) only wakes the work item at TDR deadlines.
// Job::Push does not take `mu_`: jobs arrive through a lock-free inbox that the work item drains
// under `mu_`. `mu_` guards the run queue, entity queues and the pending list; it is never held
// while calling the backend, and no fence callback of the scheduler takes it — callbacks
// (dependency signalled, hardware fence signalled) only touch atomics, and `wake_mu_` when the
// work item is idle, so a fence may signal from any thread.
// Rule: no user fence callback ever runs while the scheduler holds `mu_`. The scheduler never
// signals, polls (IsSignaled) or adds a callback to a fence with `mu_` held, so a callback on a
// dependency or a job's fence may push to any entity of the same scheduler, or call any public
// method of it (tests/sched/sched_review_test.cc: NoUserCallbackUnderSchedulerLock).
//
// Timeouts (TDR): the timer restarts whenever a job is handed to the backend or freed (a round
// hands its jobs to the backend one after the other and restarts the timer once the last RunJob
// returned, so the timeout counts from the last hand-off, however slow the backend's RunJob,
// never from the selection); on expiry
// the head of the pending list (the oldest job on the hardware) is taken off the list and given
// to Backend::TimedOutJob on the executor thread, then put back at the head (so it is freed in
// order once its finished fence signals — the kernel leaves a reset job to the driver; we never
// leak it). The timer is re-armed unless the result is kNoDevice.
//
// Recovery (the kernel's recipe for a hardware scheduler), typically inside TimedOutJob:
//   Stop(bad) → IncreaseKarma(*bad) → reset the "hardware" → ResubmitJobs() (deprecated in the
//   kernel but kept) or ForEachPendingJob(...) → Start(status).
//
// Lifetime: create with Create(); destroy entities first; the destructor (drm_sched_fini) stops
// the executor, cancels jobs still on the hardware through Backend::CancelJob and frees them.
#ifndef UDRM_SCHED_SCHEDULER_H_
#define UDRM_SCHED_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "sched/backend.h"
#include "sched/executor.h"
#include "sched/policy.h"
#include "sched/trace.h"

namespace sched {

class Entity;
class Job;
namespace internal {
class RunQueue;
}  // namespace internal

struct SchedulerOptions {
  std::string name = "udrm";
  uint32_t credit_limit = std::numeric_limits<uint32_t>::max();
  Policy policy = Policy::kFair;
  // TDR: when no job has been handed to the backend or freed for this long while jobs are on
  // the hardware, the oldest one is blamed (Backend::TimedOutJob). Infinite: no timeout.
  absl::Duration timeout = absl::InfiniteDuration();
  // ResubmitJobs: jobs of the context of the first job with karma above this are cancelled.
  int hang_limit = 0;
  // Trace events (sched/trace.h); null: none. Must outlive the scheduler.
  TraceSink* trace = nullptr;
  // Where the scheduler's work runs; null: a one-thread executor of its own. A shared one must
  // outlive the scheduler.
  Executor* executor = nullptr;
  // Before going idle, the work item polls for a wake-up this long (CPU spinning, no lock held):
  // a submitter that pushes again within it hands over without putting the executor's thread to
  // sleep and waking it (a futex round trip of several microseconds). Zero: go idle at once. On
  // a shared executor this delays its other work items by at most this much. Not in the kernel
  // (a workqueue sleeps at once); a user-space trade of CPU for latency, measured in sched_bench.
  absl::Duration idle_spin = absl::Microseconds(20);
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
  // Load-balancing score: entities with queued jobs + jobs pushed and not done. Relaxed.
  int64_t score() const {
    return jobs_score_.load(std::memory_order_relaxed) + rq_size_.load(std::memory_order_relaxed);
  }
  // False once teardown began; entities stop picking it. Relaxed.
  bool ready() const { return ready_.load(std::memory_order_relaxed); }

  // drm_sched_fault: run the timeout handler now (if a job is on the hardware). Any thread. The
  // handler runs on the work item before its next round: a round under way finishes its batch
  // first (at most 32 jobs), and submissions that keep the rounds busy do not defer it further.
  // A Fault() made while stopped may be handled before Start or right after it (not fixed).
  void Fault() ABSL_LOCKS_EXCLUDED(mu_, wake_mu_);

  // drm_sched_stop: pauses selection and freeing (blocks until the executor is between jobs,
  // unless called on it; it does not wait for a running Backend::TimedOutJob, so it may be
  // called from the handler itself or from a reset worker the handler waits for); detaches every
  // pending job from its hardware fence and returns its credits; jobs whose hardware fence
  // already signalled are freed here (FreeJob on this thread, after a FreeJob in progress on
  // another thread returns) — except the job in TimedOutJob, which is freed when that returns.
  // Jobs still finishing keep signalling their finished fences while stopped. Not for teardown.
  // A Stop during a round (e.g. from a callback of a job the round ran) takes effect before the
  // round's next job: jobs the round selected but did not hand to the backend are treated like
  // jobs still on their entities (the kernel's Stop parks the work item between jobs, so it
  // never sees one) — their credits come back, their fences stay unsignalled, ResubmitJobs and
  // ForEachPendingJob skip them, and after Start they run once, in selection order. So is a job
  // selected after the Stop (one whose Backend::PrepareJob, or a callback run while its
  // dependencies were resolved, called Stop): it holds no credits until Start. A Stop on the
  // executor thread while RunJob(J) is under way (inside the backend's RunJob, or a callback of
  // J's scheduled fence) leaves J to that RunJob; once the backend's RunJob returned and J's
  // scheduled fence signalled, RunJob settles J as Stop treats the others: a J whose hardware
  // fence (the one RunJob returned, or one a ResubmitJobs from a scheduled callback gave it) has
  // signalled by then completes with that fence's status, like a job whose fence signalled
  // before Stop; a J whose hardware fence has not signalled is detached (the fence dropped — a
  // resubmitted one is kept for Start to attach —, no callback attached, its credits returned;
  // pending, for ResubmitJobs to run again or Start to fail, even if the fence signals later,
  // as for any job whose fence signals after Stop detached it); and a J that completed at once
  // (or with an error) completes. Start,
  // ResubmitJobs and ForEachPendingJob on another thread wait until that RunJob has settled J,
  // so the RunJob (or callback) that called Stop must not then wait for such a call.
  void Stop(Job* bad) ABSL_LOCKS_EXCLUDED(mu_, free_mu_);
  // drm_sched_start: re-charges the pending jobs' credits and re-attaches them to their hardware
  // fences; a job without one (not resubmitted) finishes with `error`, or CancelledError if OK; a
  // job whose hardware fence already signalled finishes with that fence's error, else `error`.
  // A selected job not yet run (see Stop) is only re-charged: the work item runs it. Then
  // resumes selection and the timer. Each job's credits are charged once, whatever the number
  // of Stop/Start pairs. On the executor thread inside the RunJob(J) a Stop interrupted, J goes
  // on as if not stopped; on another thread, Start first waits for that RunJob to settle J
  // (see Stop).
  void Start(absl::Status error) ABSL_LOCKS_EXCLUDED(mu_);
  bool IsStopped() const ABSL_LOCKS_EXCLUDED(mu_);
  // drm_sched_resubmit_jobs (deprecated upstream): calls RunJob again for every pending job, in
  // order, on this thread; the first job with karma > hang_limit marks its context guilty and
  // every pending job of that context gets CancelledError. Contract: stopped (crash otherwise).
  void ResubmitJobs() ABSL_LOCKS_EXCLUDED(mu_);
  // drm_sched_for_each_pending_job: `fn` for each job on the hardware (handed to the backend),
  // oldest first, on this thread, no lock held; includes a job whose finished fence already
  // signalled and is not yet freed (ResubmitJobs skips those). Contract: stopped.
  void ForEachPendingJob(const std::function<void(Job&)>& fn) ABSL_LOCKS_EXCLUDED(mu_);

  // drm_sched_increase_karma: unless `bad` is a kernel-priority job, raises its karma and marks
  // its entity's guilty flag (if it has one): the entity's later jobs get CancelledError.
  static void IncreaseKarma(Job& bad);
  // drm_sched_invalidate_job: ++karma > threshold.
  static bool InvalidateJob(Job& job, int threshold);

 private:
  friend class Entity;
  friend class Job;
  explicit Scheduler(Backend* backend, SchedulerOptions options);

  // --- entities (scheduler_entity.cc) ---
  // Job::Push: hand `job` to the scheduler through the inbox (no mu_) and wake the executor; a
  // job of a killed entity is killed instead. Called with the entity's submit_mu_ held (Job::Push).
  void Enqueue(Entity* entity, std::unique_ptr<Job> job) ABSL_LOCKS_EXCLUDED(mu_);
  // Moves the inbox's jobs, in push order, onto their entities' queues.
  void DrainInboxLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveEntity(Entity* entity) ABSL_LOCKS_EXCLUDED(mu_);
  // A killed job and the fences it waits for before it completes.
  struct KilledJob {
    Job* job;
    std::vector<fence::FenceRef> wait;
  };
  // drm_sched_entity_kill, first half (Entity::Kill, under the entity's submit lock): takes the
  // entity's queued jobs and links them into its kill chain, which starts at its last scheduled
  // job. Signals nothing: pass the result to ArmKilled once the submit lock is released.
  [[nodiscard]] std::vector<KilledJob> KillEntity(Entity* entity)
      ABSL_LOCKS_EXCLUDED(mu_, killed_mu_);
  // Killed jobs: never run; complete with ESRCH once their dependencies have finished and the
  // previous killed job (or the entity's last scheduled job) has signalled.
  [[nodiscard]] std::vector<KilledJob> LinkKilled(Entity* entity,
                                                  std::deque<std::unique_ptr<Job>> jobs)
      ABSL_LOCKS_EXCLUDED(mu_, killed_mu_);
  // Installs the completion callbacks (a callback, no blocking); then the executor frees them.
  void ArmKilled(std::vector<KilledJob> jobs) ABSL_LOCKS_EXCLUDED(mu_, killed_mu_);
  void CompleteKilled(Job* job);
  std::vector<std::unique_ptr<Job>> TakeKilledDone() ABSL_LOCKS_EXCLUDED(killed_mu_);
  absl::StatusOr<absl::Duration> FlushEntity(Entity* entity, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Load balancing: nothing queued and the last scheduled job finished.
  bool EntityMayMove(Entity* entity) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status EntityError(Entity* entity) ABSL_LOCKS_EXCLUDED(mu_);
  void UpdateRqSizeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- the work item (scheduler.cc) ---
  // From fence callbacks too: one read-modify-write of work_ while the work item is queued or
  // running; wake_mu_ (and the executor's queue) only to post it when it is idle.
  void WakeUp() ABSL_LOCKS_EXCLUDED(wake_mu_);
  void RunWork() ABSL_LOCKS_EXCLUDED(wake_mu_, mu_);
  // True inside this scheduler's work item (e.g. Backend::TimedOutJob calling Stop).
  bool OnExecutorThread() const;
  // Rounds of: free finished jobs, then select up to kMaxBatch jobs and run them in selection
  // order, until one does nothing.
  void RunRounds() ABSL_LOCKS_EXCLUDED(mu_, free_mu_);
  // Appends to `out` (kept by the caller across rounds: no allocation per job).
  void TakeFinishedLocked(std::vector<std::unique_ptr<Job>>& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AccountLocked(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases mu_ while it resolves the chosen head job's dependencies (ResolveDependencies).
  // `credits_in_use`: credit_count_ as read before the round drained the inbox; `charged`: the
  // credits the round's selections charged so far (updated).
  Job* PopReadyJobLocked(uint32_t credits_in_use, uint64_t& charged)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Job* PopHeadLocked(Entity* entity) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  fence::FenceRef ResolveDependencies(Entity* entity, Job& job, bool& behind_selected)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Installs the hardware-fence callback (RunJob and Start); `fallback` is the status used when
  // the hardware fence has already signalled without an error.
  void AttachHardwareFence(Job* job, const absl::Status& fallback);
  // Runs batch_ in order until a Stop; removes the jobs it ran from batch_ and returns how many.
  size_t RunBatch() ABSL_LOCKS_EXCLUDED(mu_);
  void RunJob(Job* job) ABSL_LOCKS_EXCLUDED(mu_);
  // `now`: the signal time to record on `finished` (null: read the clock).
  void JobDone(Job* job, absl::Status status, const absl::Time* now = nullptr);
  void Trace(TraceEvent event, const fence::Fence& job_fence, const fence::Fence* dep = nullptr);
  // Records made under mu_ are buffered and emitted after it is released.
  void TraceLocked(TraceEvent event, const fence::Fence& job_fence,
                   const fence::Fence* dep = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EmitBuffered(std::vector<TraceRecord>& records);

  // --- timeouts and recovery (scheduler_recovery.cc) ---
  // The TDR check: blames the oldest pending job if the timer has expired.
  void HandleTimeout() ABSL_LOCKS_EXCLUDED(mu_, free_mu_);
  void ArmTimerLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<Job*> PendingSnapshot() ABSL_LOCKS_EXCLUDED(mu_);
  // The job went through RunJob (its scheduled fence signalled); a pending job that did not was
  // selected and is waiting in batch_ (see Stop).
  static bool Ran(const Job& job);
  // JobDone, Stop: returns the job's credits if it holds them (Job::credits_held_); release.
  void ReturnCredits(Job& job);
  // Teardown: fail and free whatever is left (Fini).
  void CancelAndFreeAll() ABSL_LOCKS_EXCLUDED(mu_, killed_mu_, free_mu_);

  Backend* const backend_;
  const SchedulerOptions options_;
  std::atomic<uint32_t> credit_count_{0};
  std::atomic<int64_t> jobs_score_{0};
  std::atomic<int64_t> rq_size_{0};
  std::atomic<bool> ready_{true};
  std::atomic<bool> tdr_check_{false};  // the timer fired or Fault(): run HandleTimeout
  // Fence callbacks (JobDone, killed-job completion, an entity's dependency callback) still
  // running; the destructor waits for 0.
  std::atomic<int> callbacks_running_{0};

  // Submission inbox: a lock-free stack (Treiber push by Enqueue, linked through
  // Job::inbox_next_; taken whole with one exchange under mu_), so a push never contends for mu_
  // with the work item. Push: release; take: acquire.
  std::atomic<Job*> inbox_{nullptr};

  // Held around every Backend::FreeJob call — the work item's, the timeout handler's job once
  // the handler returned, a Stop's (on whichever thread calls it) and teardown's — so FreeJob never
  // runs on two threads at once (sched/backend.h). Taken with no other scheduler lock held; the
  // backend's FreeJob may call into the scheduler (which takes the locks below), so it comes first
  // in the lock order. Nothing is guarded by it: it orders the calls.
  absl::Mutex free_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  const std::unique_ptr<internal::RunQueue> rq_ ABSL_PT_GUARDED_BY(mu_);  // entities with jobs
  std::deque<std::unique_ptr<Job>> pending_ ABSL_GUARDED_BY(mu_);  // handed to the backend
  uint64_t next_submit_stamp_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;   // Stop..Start
  // The work item is in RunRounds (not while in TimedOutJob: a Stop from a reset worker the
  // handler waits for must not wait for the handler).
  bool in_work_ ABSL_GUARDED_BY(mu_) = false;
  // The entity whose head job's dependencies the work item resolves with mu_ released; a kill of
  // it waits (the kernel's entity_idle).
  Entity* preparing_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::Time tdr_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  // A Fault() the handler has not seen yet: no re-arm (e.g. the one after a round ran jobs)
  // moves its deadline (now) later. HandleTimeout and Stop clear it.
  bool fault_pending_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time timer_set_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();  // what TdrTimer holds
  bool tdr_disabled_ ABSL_GUARDED_BY(mu_) = false;  // after kNoDevice
  // The job inside Backend::TimedOutJob (off the pending list), and whether Stop asked for it
  // to be freed afterwards (its hardware fence had signalled).
  std::unique_ptr<Job> tdr_job_ ABSL_GUARDED_BY(mu_);
  bool free_guilty_ ABSL_GUARDED_BY(mu_) = false;
  // The job the backend's TimedOutJob is looking at, while it runs (a Stop never frees it).
  Job* handler_job_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Fair-policy accounting: the scheduler's average job time, and the previous freed job's end
  // (a job pipelined behind it only started on the ring then).
  // In integers (the average in quarter nanoseconds, internal::UpdateAverageQns; the end in
  // Unix nanoseconds, as Fence::timestamp_ns): the per-job update in absl::Duration /
  // absl::Time arithmetic cost about 15% of the work item's instructions per job (callgrind,
  // sched_bench S1 and S3).
  int64_t avg_job_qns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_freed_end_ns_ ABSL_GUARDED_BY(mu_) = std::numeric_limits<int64_t>::min();
  std::vector<TraceRecord> trace_buf_ ABSL_GUARDED_BY(mu_);
  // RunRounds' batch of jobs to free; only the work item touches it (kept to reuse its memory).
  std::vector<std::unique_ptr<Job>> to_free_;
  // RunRounds' jobs selected in one round, run in order after it; only the work item touches it.
  // Jobs left over by a Stop stay in it (and at the tail of pending_), before the next round's
  // selections.
  static constexpr size_t kMaxBatch = 32;
  std::vector<Job*> batch_;
  // The job in RunJob (from before the backend's RunJob until `scheduled` signalled and its
  // callbacks returned), else null. Only the executor thread touches it (a Stop or Start there).
  std::atomic<Job*> running_{nullptr};
  // A Stop on the executor thread kept running_ (its RunJob under way) for RunJob to settle; a
  // Start on that thread inside the same RunJob clears it. Written only by the executor thread;
  // RunJob clears it (release) once the job is detached or completed, and PendingSnapshot on
  // another thread waits for false (acquire).
  std::atomic<bool> stopped_in_run_{false};
  // paused_, for RunBatch's check before each job without mu_ (relaxed: a Stop on another thread
  // waits for the round to end anyway; one on this thread is seen at once).
  std::atomic<bool> stop_requested_{false};
  int truncated_ ABSL_GUARDED_BY(mu_) = 0;  // oversized jobs to warn about, outside mu_

  // Killed jobs until freed; their callbacks never take it (they only signal and WakeUp()).
  absl::Mutex killed_mu_;
  std::vector<std::unique_ptr<Job>> killed_ ABSL_GUARDED_BY(killed_mu_);
  std::atomic<int> killed_count_{0};  // killed_.size(), to skip killed_mu_ when there are none

  std::unique_ptr<Executor> own_executor_;
  Executor* const executor_;

  // The work item's state: never queued or running twice.
  enum class Work { kIdle, kQueued, kRunning, kRunningAgain };
  // WakeUp called by the work item itself (a callback it ran); only the work item touches it.
  bool self_wake_ = false;
  absl::Mutex wake_mu_;
  // Leaves kIdle only under wake_mu_ (WakeUp posts the work item) and enters it only under
  // wake_mu_ (the work item going idle; the destructor waits for it there). Every other
  // transition is a lock-free read-modify-write: a WakeUp while the work item is queued or
  // running takes no lock (kRunning -> kRunningAgain, or an unchanged kQueued / kRunningAgain).
  std::atomic<Work> work_{Work::kIdle};
  bool exiting_ ABSL_GUARDED_BY(wake_mu_) = false;
};

}  // namespace sched

#endif  // UDRM_SCHED_SCHEDULER_H_
