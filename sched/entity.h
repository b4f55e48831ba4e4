// sched::Entity — drm_sched_entity: a FIFO of jobs (normally one per user context per engine).
//
// What it is: jobs pushed to an entity reach their scheduler's backend in push order. An entity
// owns a pair of fence contexts: its jobs' scheduled fences use fence_context() and their
// finished fences fence_context() + 1, with seqnos counting up by one per armed job.
//
// Status of this first slice: an entity is bound to the first scheduler of its list (load
// balancing and guilty handling are not implemented yet — issue 4).
//
// Lifetime: destroy entities before their scheduler. The destructor (drm_sched_entity_destroy)
// flushes for up to 1 s, then kills: jobs still queued never run; each waits for its dependencies
// and for the previous killed job, then its scheduled fence signals and its finished fence signals
// with NotFoundError ("ESRCH"), and it is freed. Jobs already on the hardware finish normally.
// Nothing blocks on those dependencies: the destructor returns at once.
//
// Thread-safety: Arm/Push of jobs may come from any thread (serialised by the entity's submission
// lock); Flush from any thread.
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

namespace sched {

class Job;
class Scheduler;

enum class Priority { kKernel = 0, kHigh = 1, kNormal = 2, kLow = 3 };

class Entity {
 public:
  // drm_sched_entity_init: InvalidArgument without a scheduler.
  static absl::StatusOr<std::unique_ptr<Entity>> Create(std::vector<Scheduler*> schedulers,
                                                        Priority priority = Priority::kNormal);
  ~Entity();
  Entity(const Entity&) = delete;
  Entity& operator=(const Entity&) = delete;

  // drm_sched_entity_flush: waits until every pushed job has been handed to the backend.
  // Returns the remaining time, or DeadlineExceeded.
  absl::StatusOr<absl::Duration> Flush(absl::Duration timeout);
  // drm_sched_entity_kill: as described above; later pushes fail the same way. Idempotent.
  void Kill();

  uint64_t fence_context() const { return context_; }
  Priority priority() const { return priority_.load(std::memory_order_relaxed); }
  // drm_sched_entity_set_priority: takes effect at the next selection. Any thread.
  void SetPriority(Priority p) { priority_.store(p, std::memory_order_relaxed); }
  Scheduler* scheduler() const { return scheduler_; }

 private:
  friend class Job;
  friend class Scheduler;
  Entity(Scheduler* scheduler, Priority priority);

  Scheduler* const scheduler_;
  std::atomic<Priority> priority_;
  const uint64_t context_;  // scheduled fences; finished fences use context_ + 1

  // Held from Job::Arm to Job::Push: arm and push of one entity are one atomic step.
  absl::Mutex submit_mu_;
  uint64_t fence_seq_ ABSL_GUARDED_BY(submit_mu_) = 0;

  // The scheduler's state for this entity lives under Scheduler::mu_ (see scheduler.h).
  std::deque<std::unique_ptr<Job>> queue_;
  bool in_rq_ = false;
  bool stopped_ = false;
  fence::FenceRef last_killed_;  // under Scheduler::killed_mu_: the chain of this entity's kills
  uint64_t last_selected_ = 0;  // round-robin: the scheduler's clock when last selected
  // A dependency callback is installed (one at a time); `dep_signaled_` is set by it.
  bool dep_pending_ = false;
  std::atomic<bool> dep_signaled_{false};
  fence::FenceRef dep_fence_;
  fence::FenceCallback dep_cb_;
};

}  // namespace sched

#endif  // UDRM_SCHED_ENTITY_H_
