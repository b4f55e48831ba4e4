#include "sched/run_queue.h"

#include <algorithm>
#include <iterator>

#include "sched/entity.h"
#include "sched/job.h"

namespace sched {
namespace {

// vruntime_shift: KERNEL ~2x HIGH, HIGH ~4x NORMAL, NORMAL ~8x LOW in GPU time.
int Shift(Priority p) {
  static constexpr int kShift[] = {1, 2, 4, 7};
  return kShift[static_cast<int>(p)];
}

}  // namespace

const Entity* RunQueue::Leftmost() const {
  const Entity* best = nullptr;
  for (const Entity* e : entities_) {
    if (best == nullptr || e->vruntime_ < best->vruntime_) best = e;
  }
  return best;
}

void RunQueue::Add(Entity* e, absl::Duration sched_avg_job) {
  if (e->in_rq_) return;
  if (policy_ == Policy::kFair) PlaceFair(e, sched_avg_job);
  e->in_rq_ = true;
  entities_.push_back(e);
}

// drm_sched_entity_restore_vruntime.
void RunQueue::PlaceFair(Entity* e, absl::Duration sched_avg_job) {
  const Entity* head = Leftmost();
  if (head != nullptr) min_vruntime_ = std::max(min_vruntime_, head->vruntime_);
  const int64_t min = head != nullptr ? head->vruntime_ : min_vruntime_;
  int64_t v = min + e->saved_relative_;
  if (e->saved_relative_ == 0 && head != nullptr) {
    const int prio = static_cast<int>(e->priority());
    const int head_prio = static_cast<int>(head->priority());
    const absl::Duration avg = e->stats_->avg_job();
    if (prio > head_prio) {  // lower priority: about one average job behind
      const int64_t us = 1 + absl::ToInt64Microseconds(avg) +
                         absl::ToInt64Microseconds(sched_avg_job);
      v = min + (us << Shift(e->priority())) * 1000;
    } else if (prio < head_prio) {  // higher priority: just ahead
      v = min - (head_prio - prio);
    } else {  // equal: favour entities with short (interactive) jobs
      v = min + (avg <= sched_avg_job ? -1 : 1);
    }
  }
  e->vruntime_ = v;
  e->saved_relative_ = 0;
}

void RunQueue::OnPop(Entity* e) {
  e->last_selected_ = ++rr_clock_;
  if (!e->queue_.empty()) {
    if (policy_ == Policy::kFair) {  // drm_sched_entity_update_vruntime
      const absl::Duration runtime = e->stats_->runtime();
      const int64_t delta = absl::ToInt64Nanoseconds(runtime - e->prev_runtime_);
      e->prev_runtime_ = runtime;
      e->vruntime_ += delta << Shift(e->priority());
    }
    return;
  }
  Remove(e);
}

void RunQueue::Remove(Entity* e) {
  if (!e->in_rq_) return;
  e->in_rq_ = false;
  entities_.erase(std::find(entities_.begin(), entities_.end(), e));
  if (policy_ != Policy::kFair) return;
  // Keep the entity's lead or lag behind the queue's minimum for when it comes back.
  const Entity* head = Leftmost();
  if (head == nullptr) {
    min_vruntime_ = std::max(min_vruntime_, e->vruntime_);
    e->saved_relative_ = 0;
    return;
  }
  min_vruntime_ = std::max(min_vruntime_, std::min(head->vruntime_, e->vruntime_));
  e->saved_relative_ = std::max<int64_t>(0, e->vruntime_ - head->vruntime_);
}

bool RunQueue::Before(const Entity& a, const Entity& b) const {
  if (policy_ == Policy::kFair) {
    if (a.vruntime_ != b.vruntime_) return a.vruntime_ < b.vruntime_;
    return a.queue_.front()->submit_stamp_ < b.queue_.front()->submit_stamp_;
  }
  if (a.priority() != b.priority()) return a.priority() < b.priority();
  if (policy_ == Policy::kRoundRobin) return a.last_selected_ < b.last_selected_;
  return a.queue_.front()->submit_stamp_ < b.queue_.front()->submit_stamp_;
}

}  // namespace sched
