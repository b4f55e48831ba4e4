#include "sched/internal/run_queue.h"

#include <algorithm>
#include <iterator>

#include "sched/internal/entity_stats.h"

namespace sched::internal {
namespace {

// vruntime_shift: KERNEL ~2x HIGH, HIGH ~4x NORMAL, NORMAL ~8x LOW in GPU time.
int Shift(Priority p) {
  static constexpr int kShift[] = {1, 2, 4, 7};
  return kShift[static_cast<int>(p)];
}

}  // namespace

const RqEntry* RunQueue::Leftmost() const {
  const RqEntry* best = nullptr;
  for (const RqEntry* e : entities_) {
    if (best == nullptr || e->vruntime < best->vruntime) best = e;
  }
  return best;
}

void RunQueue::Add(RqEntry* e, uint64_t head_stamp, int64_t sched_avg_job_qns) {
  if (e->in_rq) return;
  if (policy_ == Policy::kFair) PlaceFair(e, sched_avg_job_qns);
  e->in_rq = true;
  e->head_stamp = head_stamp;
  entities_.push_back(e);
}

// drm_sched_entity_restore_vruntime.
void RunQueue::PlaceFair(RqEntry* e, int64_t sched_avg_job_qns) {
  const RqEntry* head = Leftmost();
  if (head != nullptr) min_vruntime_ = std::max(min_vruntime_, head->vruntime);
  const int64_t min = head != nullptr ? head->vruntime : min_vruntime_;
  int64_t v = min + e->saved_relative;
  if (e->saved_relative == 0 && head != nullptr) {
    const int prio = static_cast<int>(e->prio());
    const int head_prio = static_cast<int>(head->prio());
    const int64_t avg_ns = e->stats->avg_job_ns();
    if (prio > head_prio) {  // lower priority: about one average job behind
      const int64_t us = 1 + avg_ns / 1000 + sched_avg_job_qns / 4000;
      v = min + (us << Shift(e->prio())) * 1000;
    } else if (prio < head_prio) {  // higher priority: just ahead
      v = min - (head_prio - prio);
    } else {  // equal: favour entities with short (interactive) jobs
      v = min + (avg_ns * 4 <= sched_avg_job_qns ? -1 : 1);
    }
  }
  e->vruntime = v;
  e->saved_relative = 0;
}

void RunQueue::OnPop(RqEntry* e, std::optional<uint64_t> next_head_stamp) {
  e->last_selected = ++rr_clock_;
  if (next_head_stamp.has_value()) {
    e->head_stamp = *next_head_stamp;
    if (policy_ == Policy::kFair) {  // drm_sched_entity_update_vruntime
      const int64_t runtime_ns = e->stats->runtime_ns();
      // Modulo 2^64: right even if the sum wrapped (after 2^63 ns of charges).
      const int64_t delta = static_cast<int64_t>(static_cast<uint64_t>(runtime_ns) -
                                                 static_cast<uint64_t>(e->prev_runtime_ns));
      e->prev_runtime_ns = runtime_ns;
      e->vruntime += delta << Shift(e->prio());
    }
    return;
  }
  Remove(e);
}

void RunQueue::Remove(RqEntry* e) {
  if (!e->in_rq) return;
  e->in_rq = false;
  entities_.erase(std::find(entities_.begin(), entities_.end(), e));
  if (policy_ != Policy::kFair) return;
  // Keep the entity's lead or lag behind the queue's minimum for when it comes back.
  const RqEntry* head = Leftmost();
  if (head == nullptr) {
    min_vruntime_ = std::max(min_vruntime_, e->vruntime);
    e->saved_relative = 0;
    return;
  }
  min_vruntime_ = std::max(min_vruntime_, std::min(head->vruntime, e->vruntime));
  e->saved_relative = std::max<int64_t>(0, e->vruntime - head->vruntime);
}

}  // namespace sched::internal
