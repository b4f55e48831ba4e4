// sched::internal::RunQueue — drm_sched_rq: the entities of one scheduler that have queued jobs,
// and the order in which the scheduler considers them (the policies of sched/policy.h).
//
// The run queue sees an entity only through its RqEntry: the entity's run-queue state (the
// kernel keeps it in drm_sched_entity: rb_tree_node, vruntime, ...). Each Entity owns one and
// takes it along when it moves to another scheduler while idle (sched/entity.h).
//
// Thread-safety: none of its own. The owning Scheduler holds the run queue, and the mutable
// fields of every RqEntry, under its `mu_` (see sched/entity.h for how an entity's fields pass
// between schedulers).
#ifndef UDRM_SCHED_INTERNAL_RUN_QUEUE_H_
#define UDRM_SCHED_INTERNAL_RUN_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "sched/policy.h"

namespace sched {

class Entity;

namespace internal {

class EntityStats;

struct RqEntry {
  RqEntry(Entity* owner, const std::atomic<Priority>* prio, const EntityStats* gpu_time)
      : entity(owner), priority(prio), stats(gpu_time) {}

  // The entity's priority now (Entity::SetPriority may change it at any time; relaxed).
  Priority prio() const { return priority->load(std::memory_order_relaxed); }

  Entity* const entity;
  const std::atomic<Priority>* const priority;  // the entity's
  const EntityStats* const stats;               // the entity's GPU time (fair policy)

  // Under the scheduler's mu_.
  bool in_rq = false;
  uint64_t head_stamp = 0;                             // the head job's submit stamp, while in_rq
  uint64_t last_selected = 0;                          // round-robin key
  int64_t vruntime = 0;                                // fair key (virtual ns)
  int64_t prev_runtime_ns = 0;                         // fair: runtime at the last update
  int64_t saved_relative = 0;                          // fair: lead or lag kept while idle
};

class RunQueue {
 public:
  explicit RunQueue(Policy policy) : policy_(policy) {}

  // drm_sched_rq_add_entity: `e`'s queue went from empty to non-empty; `head_stamp` is its head
  // job's submit stamp (the FIFO key). `sched_avg_job_qns` is the scheduler's average job duration
  // (fair placement), in quarter nanoseconds (UpdateAverageQns). No-op if `e` is in the queue.
  void Add(RqEntry* e, uint64_t head_stamp, int64_t sched_avg_job_qns);
  // drm_sched_rq_pop_entity: a job was just popped from `e`. `next_head_stamp` is the submit
  // stamp of its new head job: it is re-keyed; nullopt (nothing queued): it is removed
  // (remembering its position relative to the queue for when it returns).
  void OnPop(RqEntry* e, std::optional<uint64_t> next_head_stamp);
  // drm_sched_rq_remove_entity (kill, teardown). No-op if absent.
  void Remove(RqEntry* e);

  // True if `a` comes before `b` in selection order. Inline: the selection calls it for each
  // entity in the queue, for every job.
  bool Before(const RqEntry& a, const RqEntry& b) const;

  const std::vector<RqEntry*>& entities() const { return entities_; }
  bool empty() const { return entities_.empty(); }
  Policy policy() const { return policy_; }

 private:
  const RqEntry* Leftmost() const;
  void PlaceFair(RqEntry* e, int64_t sched_avg_job_qns);

  const Policy policy_;
  // Few entities, added and removed as they go busy and idle (often once per job): a vector
  // needs no allocation per transition, unlike the std::list it replaced.
  std::vector<RqEntry*> entities_;
  uint64_t rr_clock_ = 0;     // round-robin stamps
  int64_t min_vruntime_ = 0;  // the last known leftmost virtual runtime (ns)
};

inline bool RunQueue::Before(const RqEntry& a, const RqEntry& b) const {
  if (policy_ == Policy::kFair) {
    if (a.vruntime != b.vruntime) return a.vruntime < b.vruntime;
    return a.head_stamp < b.head_stamp;
  }
  if (a.prio() != b.prio()) return a.prio() < b.prio();
  if (policy_ == Policy::kRoundRobin) return a.last_selected < b.last_selected;
  return a.head_stamp < b.head_stamp;
}

}  // namespace internal
}  // namespace sched

#endif  // UDRM_SCHED_INTERNAL_RUN_QUEUE_H_
