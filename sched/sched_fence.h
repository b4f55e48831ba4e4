// sched::SchedFence — drm_sched_fence: a job's "scheduled" and "finished" fences.
//
// What it is: every armed job has two fences. `scheduled` (on the entity's context) signals when
// the job has been handed to the backend (run_job returned); `finished` (on the entity's context
// + 1) signals when the job's hardware fence signals, with its error. `finished` is the job's
// out-fence: drivers publish it (in a Resv, a syncobj) from Arm() on. A FinishedFence knows its
// scheduler and its scheduled twin, which is how a dependency on a job of the same scheduler is
// pipelined (waited for only until it is scheduled). It also knows its parent, the hardware
// fence, once the job runs: a deadline set on the finished fence (DRM_SCHED_FENCE_FLAG_HAS_
// DEADLINE_BIT) is kept and forwarded to the parent as soon as it exists.
//
// Lifetime: the two fences are one allocation (CreatePair) owned through fence::FenceRefs that
// share one reference count: either keeps both alive. The scheduled fence is a member of the
// finished one, reached through an aliasing FenceRef, so shared_from_this() does not work on it
// (nothing in udrm calls it on a fence it did not create itself).
// Memory: the pair is one 256 B block (sched_bench VALUE fence_bytes, usable bytes).
// Thread-safety and memory ordering: as fence::Fence.
#ifndef UDRM_SCHED_SCHED_FENCE_H_
#define UDRM_SCHED_SCHED_FENCE_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <typeinfo>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fence/fence.h"

namespace sched {

class Scheduler;
class FinishedFence;

// The scheduled twin of a FinishedFence: a plain fence that knows its pair (to_drm_sched_fence
// for a scheduled fence), so a killed job can wait for the finished fence instead.
class ScheduledFence final : public fence::Fence {
 public:
  ScheduledFence(uint64_t context, uint64_t seqno, FinishedFence* finished)
      : Fence(context, seqno, fence::SeqnoWidth::k64), finished_(finished) {}
  FinishedFence* finished() const { return finished_; }

 protected:
  std::string_view DriverNameHook() const override { return "drm_sched"; }

 private:
  FinishedFence* const finished_;
};

class FinishedFence final : public fence::Fence {
 public:
  struct Pair {
    fence::FenceRef scheduled, finished;
  };
  // drm_sched_fence_alloc + init: the scheduled fence on `context`, the finished one on
  // `context` + 1, both with `seqno` (64-bit), in one allocation (from the jobs' allocator:
  // sched/internal/job_memory.h).
  static Pair CreatePair(uint64_t context, uint64_t seqno, const Scheduler* scheduler,
                         bool dont_pipeline);
  // Use CreatePair.
  FinishedFence(uint64_t context, uint64_t seqno, const Scheduler* scheduler, bool dont_pipeline)
      : Fence(context + 1, seqno, fence::SeqnoWidth::k64),
        scheduler_and_flags_(reinterpret_cast<uintptr_t>(scheduler) |
                             (dont_pipeline ? kDontPipelineBit : 0)),
        scheduled_(context, seqno, this) {}

  // to_drm_sched_fence for a finished fence: the FinishedFence `f` is, or null.
  // FinishedFence is final: an exact type check is enough, and cheaper than a dynamic_cast (which
  // the scheduler pays for every dependency it resolves).
  static const FinishedFence* Cast(const fence::Fence* f) {
    return f != nullptr && typeid(*f) == typeid(FinishedFence) ? static_cast<const FinishedFence*>(f)
                                                                : nullptr;
  }
  static FinishedFence* Cast(fence::Fence* f) {
    return const_cast<FinishedFence*>(Cast(static_cast<const fence::Fence*>(f)));
  }

  const Scheduler* scheduler() const {
    return reinterpret_cast<const Scheduler*>(
        scheduler_and_flags_.load(std::memory_order_relaxed) & ~kFlagBits);
  }
  // The scheduled twin of `finished` (a reference to this fence).
  static fence::FenceRef ScheduledOf(const fence::FenceRef& finished) {
    return fence::FenceRef(finished, &static_cast<FinishedFence&>(*finished).scheduled_);
  }
  // `f` itself, or the finished twin if `f` is a job's scheduled fence (drm_sched_entity_kill_jobs_cb:
  // a killed job waits for its dependencies to finish, never merely to be scheduled).
  static fence::FenceRef FinishedOf(const fence::FenceRef& f) {
    if (const fence::Fence* p = f.get(); p != nullptr && typeid(*p) == typeid(ScheduledFence)) {
      return fence::FenceRef(f, static_cast<const ScheduledFence*>(p)->finished());  // final
    }
    return f;
  }
  // DRM_SCHED_FENCE_DONT_PIPELINE: dependants wait for this fence itself, never its twin.
  bool dont_pipeline() const {
    return (scheduler_and_flags_.load(std::memory_order_relaxed) & kDontPipelineBit) != 0;
  }
  // The job was selected by its scheduler (taken off its entity, to be handed to the backend in
  // selection order) without an error (not a guilty entity's) and has not been run yet: set at
  // selection, cleared just before its scheduled fence signals; written and read only by that
  // scheduler's work item. Relaxed.
  bool selected() const {
    return (scheduler_and_flags_.load(std::memory_order_relaxed) & kSelectedBit) != 0;
  }

  // The scheduler, when the job's RunJob returned a hardware fence (before `scheduled` signals):
  // forwards a deadline set earlier.
  void SetParent(fence::FenceRef parent) ABSL_LOCKS_EXCLUDED(parent_mu_) {
    int64_t deadline;
    {
      absl::MutexLock l(&parent_mu_);
      parent_ = parent;
      deadline = deadline_ns_;
    }
    if (deadline == kNoDeadline) return;
    parent->SetDeadline(deadline == std::numeric_limits<int64_t>::min()
                            ? absl::InfinitePast()
                            : absl::FromUnixNanos(deadline));
  }

 protected:
  std::string_view DriverNameHook() const override { return "drm_sched"; }
  // drm_sched_fence_set_deadline_finished: keep the earliest deadline; forward it to the parent
  // if the job already runs.
  void SetDeadlineHook(absl::Time deadline) override ABSL_LOCKS_EXCLUDED(parent_mu_) {
    // Kept in Unix nanoseconds (saturating; InfiniteFuture is "none"), forwarded as given.
    if (deadline == absl::InfiniteFuture()) return;
    const int64_t ns = deadline == absl::InfinitePast() ? std::numeric_limits<int64_t>::min()
                                                        : absl::ToUnixNanos(deadline);
    fence::FenceRef parent;
    {
      absl::MutexLock l(&parent_mu_);
      if (ns >= deadline_ns_) return;
      deadline_ns_ = ns;
      parent = parent_;
    }
    if (parent != nullptr) parent->SetDeadline(deadline);
  }

 private:
  friend class Scheduler;  // MarkSelected, ClearSelected
  // Only the scheduler's work item writes the word after construction: a load and a store.
  void MarkSelected() {
    scheduler_and_flags_.store(scheduler_and_flags_.load(std::memory_order_relaxed) | kSelectedBit,
                               std::memory_order_relaxed);
  }
  void ClearSelected() {
    scheduler_and_flags_.store(
        scheduler_and_flags_.load(std::memory_order_relaxed) & ~kSelectedBit,
        std::memory_order_relaxed);
  }

  static constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();
  static constexpr uintptr_t kDontPipelineBit = 1;  // DRM_SCHED_FENCE_DONT_PIPELINE
  static constexpr uintptr_t kSelectedBit = 2;      // see selected()
  static constexpr uintptr_t kFlagBits = 3;
  // The scheduler (aligned: its two low bits are free), with the two flags above. First, next to
  // the fence's timestamp: MarkSelected dirties a cache line that the signal writes anyway.
  std::atomic<uintptr_t> scheduler_and_flags_;

  absl::Mutex parent_mu_;
  fence::FenceRef parent_ ABSL_GUARDED_BY(parent_mu_);
  // The earliest deadline set (Unix nanoseconds), or kNoDeadline.
  int64_t deadline_ns_ ABSL_GUARDED_BY(parent_mu_) = kNoDeadline;
  ScheduledFence scheduled_;  // the scheduled twin (see Lifetime above)
};

}  // namespace sched

#endif  // UDRM_SCHED_SCHED_FENCE_H_
