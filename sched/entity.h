// sched::Entity — drm_sched_entity: a FIFO of jobs (normally one per user context per engine).
//
// What it is: jobs pushed to an entity reach a backend in push order. An entity owns a pair of
// fence contexts: its jobs' scheduled fences use fence_context() and their finished fences
// fence_context() + 1, with seqnos counting up by one per armed job.
//
// Load balancing (drm_sched_entity_select_rq): an entity created on several schedulers picks, at
// every Job::Arm, the one with the smallest score (entities queued + jobs not done) among those
// still ready — but only when it is idle: nothing queued and its last scheduled job finished, so
// its jobs never overtake one another across schedulers. Created on one scheduler, it stays there
// (unless ModifySched gives it another list).
//
// Guilty: an entity may share a `guilty` flag with its user context; Scheduler::IncreaseKarma
// raises it when one of its jobs hung. From then on its jobs' finished fences carry
// CancelledError ("ECANCELED") — they are still handed to the backend, which should skip them.
//
// Lifetime: destroy entities before their schedulers. The destructor (drm_sched_entity_destroy)
// flushes for up to 1 s, then kills: jobs still queued never run; each waits for its dependencies
// and for the previous killed job, then its scheduled fence signals and its finished fence signals
// with NotFoundError ("ESRCH"), and it is freed. Jobs already on the hardware finish normally.
// Nothing blocks on those dependencies: the destructor returns at once.
//
// Thread-safety: Arm/Push of jobs may come from any thread (serialised by the entity's submission
// lock, see sched/job.h); Flush, Kill, SetPriority, ModifySched and error() from any thread.
#ifndef UDRM_SCHED_ENTITY_H_
#define UDRM_SCHED_ENTITY_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "sched/policy.h"

namespace sched {

class Job;
class Scheduler;
namespace internal {
class EntityStats;
struct RqEntry;
}  // namespace internal

class Entity {
 public:
  // drm_sched_entity_init: InvalidArgument for an empty list or a null scheduler.
  static absl::StatusOr<std::unique_ptr<Entity>> Create(
      std::vector<Scheduler*> schedulers, Priority priority = Priority::kNormal,
      std::shared_ptr<std::atomic<bool>> guilty = nullptr);
  ~Entity();
  Entity(const Entity&) = delete;
  Entity& operator=(const Entity&) = delete;

  // Arm + Push of `job`, which Init() bound to this entity (a contract: crash otherwise): the
  // common path in one call. Returns the job's finished fence. Blocks as Job::Arm.
  fence::FenceRef Submit(std::unique_ptr<Job> job) ABSL_LOCKS_EXCLUDED(submit_mu_);

  // drm_sched_entity_flush: blocks until every pushed job has been handed to a backend (or
  // killed). Returns the remaining time, or DeadlineExceeded.
  absl::StatusOr<absl::Duration> Flush(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(submit_mu_);
  // drm_sched_entity_kill: as described above; later pushes are killed the same way. Idempotent.
  // Waits for an Arm..Push in progress on another thread; does not wait for the killed jobs.
  // Also waits while the scheduler resolves this entity's head job (its dependencies and
  // Backend::PrepareJob, on the executor thread): so never call it — nor destroy the entity —
  // from that resolution (PrepareJob of this entity's job, or a callback of a fence the scheduler
  // polls or hooks for it and so may run there), which would wait for itself (the kernel's
  // drm_sched_entity_kill likewise waits for entity_idle).
  void Kill() ABSL_LOCKS_EXCLUDED(submit_mu_);
  // drm_sched_entity_modify_sched: the schedulers to balance over from the next Arm on
  // (subject to the idle rule above). InvalidArgument for an empty list or a null scheduler.
  absl::Status ModifySched(std::vector<Scheduler*> schedulers) ABSL_LOCKS_EXCLUDED(submit_mu_);
  // drm_sched_entity_error: CancelledError once the entity's guilty flag is set (a job of it
  // was blamed for a hang); else the error of the last job handed to a backend (OK if none, or
  // if it has not finished).
  absl::Status error() ABSL_LOCKS_EXCLUDED(submit_mu_);

  uint64_t fence_context() const { return context_; }
  Priority priority() const { return priority_.load(std::memory_order_relaxed); }
  // drm_sched_entity_set_priority: takes effect at the next selection (fair: the next virtual
  // runtime update). Any thread. Memory ordering: relaxed (a hint).
  void SetPriority(Priority p) { priority_.store(p, std::memory_order_relaxed); }
  // The scheduler the entity is on now (it may change at the next Arm).
  Scheduler* scheduler() ABSL_LOCKS_EXCLUDED(submit_mu_);
  const std::shared_ptr<std::atomic<bool>>& guilty() const { return guilty_; }

 private:
  friend class Job;
  friend class Scheduler;
  Entity(std::vector<Scheduler*> schedulers, Priority priority,
         std::shared_ptr<std::atomic<bool>> guilty);
  // Job::Arm: load balancing; returns the scheduler the job goes to.
  Scheduler* SelectSchedulerLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(submit_mu_);

  std::atomic<Priority> priority_;
  const uint64_t context_;  // scheduled fences; finished fences use context_ + 1
  const std::shared_ptr<internal::EntityStats> stats_;
  const std::shared_ptr<std::atomic<bool>> guilty_;

  // Held from Job::Arm to Job::Push: arm and push of one entity are one atomic step.
  absl::Mutex submit_mu_;
  Scheduler* scheduler_ ABSL_GUARDED_BY(submit_mu_);
  std::vector<Scheduler*> schedulers_ ABSL_GUARDED_BY(submit_mu_);  // empty: stay put
  uint64_t fence_seq_ ABSL_GUARDED_BY(submit_mu_) = 0;
  // The finished fence of the last armed job: a job cancelled after it signals after it.
  fence::FenceRef last_armed_ ABSL_GUARDED_BY(submit_mu_);
  // That job was cancelled (destroyed without Push): the next armed job waits for last_armed_.
  bool last_armed_cancelled_ ABSL_GUARDED_BY(submit_mu_) = false;
  bool killed_ ABSL_GUARDED_BY(submit_mu_) = false;

  // Under the current scheduler's mu_ (see scheduler.h). An entity changes scheduler only when
  // idle (nothing queued, no dependency callback): the arming thread takes the old scheduler's
  // mu_ to check, then pushes to the new one's inbox (release), which the new one takes under
  // its mu_ (acquire), so these fields pass between them in order.
  std::deque<std::unique_ptr<Job>> queue_;
  // Jobs pushed and not yet popped or killed, counting those still in the scheduler's inbox.
  // Incremented by Push, decremented under the scheduler's mu_. Memory ordering: relaxed (the
  // readers hold mu_ or submit_mu_, which order it).
  std::atomic<int64_t> queued_{0};
  // The run queue's state of this entity (sched/internal/run_queue.h); its fields are under the
  // scheduler's mu_ like these.
  const std::unique_ptr<internal::RqEntry> rq_entry_;
  bool stopped_ = false;
  fence::FenceRef last_scheduled_;  // finished fence of the last job popped
  // A dependency callback is installed (one at a time); `dep_signaled_` is set by it.
  bool dep_pending_ = false;
  std::atomic<bool> dep_signaled_{false};
  fence::FenceRef dep_fence_;
  fence::FenceCallback dep_cb_;

  fence::FenceRef last_killed_;  // under the scheduler's killed_mu_: the chain of this entity's kills
};

}  // namespace sched

#endif  // UDRM_SCHED_ENTITY_H_
