// sched::RunQueue — drm_sched_rq: the entities of one scheduler that have queued jobs, and the
// order in which the scheduler considers them.
//
// Policies (drm_sched_policy; fair is the kernel's default since 2025 and ours):
//   kFair       — one queue ordered by virtual runtime: each entity's GPU time (EntityStats)
//                 scaled by its priority (<< 1 KERNEL, 2 HIGH, 4 NORMAL, 7 LOW), so KERNEL gets
//                 about 2x the GPU time of HIGH, HIGH 4x NORMAL, NORMAL 8x LOW, and nobody
//                 starves. An entity that goes idle keeps its lead or lag relative to the queue's
//                 minimum; one that arrives fresh is placed by priority (a lower priority behind
//                 by about one average job, a higher one just ahead, an equal one just ahead if
//                 its jobs are shorter than the scheduler's average, else just behind).
//   kFifo       — priority levels KERNEL..LOW; within a level the entity whose head job was
//                 pushed first. Starves lower levels while higher ones have work.
//   kRoundRobin — priority levels; within a level the entity selected least recently.
// The scheduler picks the first *ready* entity in this order (sched/scheduler.h); if that
// entity's head job lacks credits it waits rather than fall through to the next one.
//
// Thread-safety: none of its own. The owning Scheduler holds it under its `mu_`, and so every
// entity field it reads or writes (Entity's "under the scheduler's mu_" fields).
#ifndef UDRM_SCHED_RUN_QUEUE_H_
#define UDRM_SCHED_RUN_QUEUE_H_

#include <cstdint>
#include <vector>

#include "absl/time/time.h"

namespace sched {

class Entity;

enum class Policy { kFair, kFifo, kRoundRobin };

class RunQueue {
 public:
  explicit RunQueue(Policy policy) : policy_(policy) {}

  // drm_sched_rq_add_entity: `e`'s queue went from empty to non-empty. `sched_avg_job` is the
  // scheduler's average job duration (fair placement).
  void Add(Entity* e, absl::Duration sched_avg_job);
  // drm_sched_rq_pop_entity: a job was just popped from `e`. Re-keys it if it has more jobs,
  // otherwise removes it (remembering its position relative to the queue for when it returns).
  void OnPop(Entity* e);
  // drm_sched_rq_remove_entity (kill, teardown). No-op if absent.
  void Remove(Entity* e);

  // True if `a` comes before `b` in selection order.
  bool Before(const Entity& a, const Entity& b) const;

  const std::vector<Entity*>& entities() const { return entities_; }
  bool empty() const { return entities_.empty(); }
  Policy policy() const { return policy_; }

 private:
  const Entity* Leftmost() const;
  void PlaceFair(Entity* e, absl::Duration sched_avg_job);

  const Policy policy_;
  // Few entities, added and removed as they go busy and idle (often once per job): a vector
  // needs no allocation per transition, unlike the std::list it replaced.
  std::vector<Entity*> entities_;
  uint64_t rr_clock_ = 0;       // round-robin stamps
  int64_t min_vruntime_ = 0;    // the last known leftmost virtual runtime (ns)
};

}  // namespace sched

#endif  // UDRM_SCHED_RUN_QUEUE_H_
