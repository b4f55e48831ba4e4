// Regression test for a defect udrm_stress found (scenario sched, any seed, within seconds):
// an armed job destroyed without Push waits for its dependencies before its finished fence
// signals (sched/job.h), but the entity's next job does not wait for it, so a later job's finished
// fence signals before the dropped job's — fences of one context out of seqno order (dma_fence's
// contract; Fence::IsLater and every "keep the later fence per context" rule rely on it).
// Fixed in sched/: the next armed job waits for the cancelled job's finished fence (Job::
// order_after_), a dependency the scheduler does not skip as same-entity.
#include <atomic>
#include <memory>

#include "absl/time/time.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/scheduler.h"

namespace {

class InstantBackend final : public sched::Backend {
 public:
  absl::StatusOr<fence::FenceRef> RunJob(sched::Job&) override { return fence::FenceRef(); }
};

// A dropped armed job (waiting for a dependency) and the entity's next job: the next job's
// finished fence must not signal before the dropped one's (same context, lower seqno).
TEST(ArmedJobOrderTest, LaterJobDoesNotFinishBeforeDroppedOne) {
  InstantBackend backend;
  auto sched = *sched::Scheduler::Create(&backend);
  {
    auto entity = *sched::Entity::Create({sched.get()});
    fence::FenceContext external("external");
    fence::FenceRef dep = external.NewFence();

    auto first = std::make_unique<sched::Job>();
    ASSERT_TRUE(first->Init(entity.get(), 1).ok());
    ASSERT_TRUE(first->AddDependency(dep).ok());
    fence::FenceRef dropped;
    {
      sched::ArmedJob armed = sched::Job::Arm(std::move(first));
      dropped = armed.finished();
    }  // destroyed without Push: cancelled once `dep` signals

    auto second = std::make_unique<sched::Job>();
    ASSERT_TRUE(second->Init(entity.get(), 1).ok());
    fence::FenceRef later = entity->Submit(std::move(second));
    ASSERT_LT(dropped->seqno(), later->seqno());
    ASSERT_EQ(dropped->context(), later->context());

    std::atomic<bool> dropped_signalled_first{true};
    fence::FenceCallback cb;
    const absl::Status s = later->AddCallback(&cb, [&](fence::Fence&) {
      dropped_signalled_first = dropped->IsSignaledFlag();
    });
    if (fence::IsAlreadySignaled(s)) dropped_signalled_first = dropped->IsSignaledFlag();
    // Give the later job the chance to finish (it runs at once), then release the dependency.
    (void)later->Wait(absl::Milliseconds(200));
    EXPECT_FALSE(dropped->IsSignaledFlag());
    dep->Signal();
    ASSERT_TRUE(dropped->Wait(absl::Seconds(10)).ok());
    ASSERT_TRUE(later->Wait(absl::Seconds(10)).ok());
    later->RemoveCallback(&cb);
    EXPECT_TRUE(dropped_signalled_first.load())
        << "job " << later->seqno() << " finished before the dropped job " << dropped->seqno()
        << " of the same entity";
  }
  sched.reset();
}

}  // namespace
