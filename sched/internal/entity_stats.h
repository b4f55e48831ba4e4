// sched::internal::EntityStats — drm_sched_entity_stats: the GPU time an entity's jobs used, for
// the fair (virtual-runtime) policy.
//
// What it is: `runtime` is the sum of the entity's jobs' hardware durations (finished − start on
// the ring), added when the scheduler frees each job; `avg_job` is an EWMA of them (weight 1/4,
// as the kernel's DECLARE_EWMA(.., 6, 4)). The run queue turns them into a virtual runtime
// (sched/internal/run_queue.h).
//
// Lifetime: shared by the entity and each of its armed jobs — a job can be freed after its entity
// is gone, and its runtime is still accounted.
// Thread-safety: lock-free; any thread. Jobs of one entity may be freed by two schedulers at once
// after the entity migrated, so AddJobTimeNs is a compare-and-swap loop. The two fields are each
// atomic, not a consistent pair (the policy reads them separately). Memory ordering: relaxed
// (statistics; nothing is published through them).
#ifndef UDRM_SCHED_INTERNAL_ENTITY_STATS_H_
#define UDRM_SCHED_INTERNAL_ENTITY_STATS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace sched::internal {

class EntityStats {
 public:
  // In nanoseconds: the scheduler keeps its accounting in integers (see AccountLocked).
  int64_t runtime_ns() const { return runtime_ns_.load(std::memory_order_relaxed); }
  int64_t avg_job_ns() const { return avg_job_ns_.load(std::memory_order_relaxed); }

  // `ns` ≥ 0.
  void AddJobTimeNs(int64_t ns) {
    runtime_ns_.fetch_add(ns, std::memory_order_relaxed);
    int64_t avg = avg_job_ns_.load(std::memory_order_relaxed);
    while (!avg_job_ns_.compare_exchange_weak(avg, avg == 0 ? ns : avg + (ns - avg) / 4,
                                              std::memory_order_relaxed)) {
    }
  }

 private:
  std::atomic<int64_t> runtime_ns_{0};
  std::atomic<int64_t> avg_job_ns_{0};
};

// The fair policy's charge for one job (Scheduler::AccountLocked): its time on the ring, from
// `start` to `end` (Unix nanoseconds; INT64_MIN / INT64_MAX for an infinite time, as
// fence::Fence::timestamp_ns), at least kMinJobChargeNs — a job that completed at once still
// weighs — and at most kMaxJobChargeNs (about 104 days: the virtual-runtime shifts and the sums
// stay within int64).
inline constexpr int64_t kMinJobChargeNs = 1000;
inline constexpr int64_t kMaxJobChargeNs = int64_t{1} << 53;
inline int64_t JobChargeNs(int64_t start, int64_t end) {
  int64_t d;
  if (__builtin_sub_overflow(end, start, &d)) d = end < start ? 0 : kMaxJobChargeNs;
  return std::clamp(d, kMinJobChargeNs, kMaxJobChargeNs);
}

// The scheduler's average job time: an EWMA of weight 1/4 of the charges, kept in quarter
// nanoseconds — the resolution of the absl::Duration arithmetic it replaced, so that the average
// and the placement that compares with it (RunQueue::PlaceFair) are unchanged. 0: no job yet.
inline int64_t UpdateAverageQns(int64_t avg_qns, int64_t charge_ns) {
  const int64_t q = charge_ns * 4;
  return avg_qns == 0 ? q : avg_qns + (q - avg_qns) / 4;
}

}  // namespace sched::internal

#endif  // UDRM_SCHED_INTERNAL_ENTITY_STATS_H_
