// sched::SchedFence — drm_sched_fence: a job's "scheduled" and "finished" fences.
//
// What it is: every armed job has two fences. `scheduled` (on the entity's context) signals when
// the job has been handed to the backend (run_job returned); `finished` (on the entity's context
// + 1) signals when the job's hardware fence signals, with its error. `finished` is the job's
// out-fence: drivers publish it (in a Resv, a syncobj) from Arm() on. A FinishedFence knows its
// scheduler and its scheduled twin, which is how a dependency on a job of the same scheduler is
// pipelined (waited for only until it is scheduled).
//
// Lifetime: shared (fence::FenceRef); the finished fence keeps the scheduled one alive.
// Thread-safety and memory ordering: as fence::Fence.
#ifndef UDRM_SCHED_SCHED_FENCE_H_
#define UDRM_SCHED_SCHED_FENCE_H_

#include <cstdint>
#include <memory>

#include "fence/fence.h"

namespace sched {

class Scheduler;

class FinishedFence final : public fence::Fence {
 public:
  FinishedFence(uint64_t context, uint64_t seqno, const Scheduler* scheduler,
                fence::FenceRef scheduled, bool dont_pipeline)
      : Fence(context, seqno, fence::SeqnoWidth::k64),
        scheduler_(scheduler),
        scheduled_(std::move(scheduled)),
        dont_pipeline_(dont_pipeline) {}

  // to_drm_sched_fence for a finished fence: the FinishedFence `f` is, or null.
  static const FinishedFence* Cast(const fence::Fence* f) {
    return dynamic_cast<const FinishedFence*>(f);
  }

  const Scheduler* scheduler() const { return scheduler_; }
  const fence::FenceRef& scheduled() const { return scheduled_; }
  // DRM_SCHED_FENCE_DONT_PIPELINE: dependants wait for this fence itself, never its twin.
  bool dont_pipeline() const { return dont_pipeline_; }

 protected:
  std::string_view DriverNameHook() const override { return "drm_sched"; }

 private:
  const Scheduler* const scheduler_;
  const fence::FenceRef scheduled_;
  const bool dont_pipeline_;
};

}  // namespace sched

#endif  // UDRM_SCHED_SCHED_FENCE_H_
