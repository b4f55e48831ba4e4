#include "sched/job.h"

#include <utility>

#include "base/check.h"
#include "tbb/scalable_allocator.h"
#include "sched/entity.h"
#include "sched/sched_fence.h"
#include "sched/scheduler.h"

namespace sched {
namespace {
const void* ThisThread() {
  static thread_local char id;
  return &id;
}
}  // namespace

Job::~Job() = default;

#if !UDRM_SANITIZED
void* Job::operator new(std::size_t size) {
  void* p = scalable_malloc(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* Job::operator new(std::size_t size, std::align_val_t align) {
  void* p = scalable_aligned_malloc(size, static_cast<std::size_t>(align));
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void Job::operator delete(void* p) noexcept { scalable_free(p); }
void Job::operator delete(void* p, std::align_val_t) noexcept { scalable_aligned_free(p); }
#endif

absl::Status Job::Init(Entity* entity, uint32_t credits) {
  UDRM_CHECK(state_ == State::kNew, "Job::Init called twice");
  if (entity == nullptr) return absl::InvalidArgumentError("Job::Init without an entity");
  if (credits == 0) return absl::InvalidArgumentError("Job::Init with zero credits");
  entity_ = entity;
  credits_ = credits;
  state_ = State::kInitialized;
  return absl::OkStatus();
}

absl::Status Job::AddDependency(fence::FenceRef fence) {
  UDRM_CHECK(state_ == State::kInitialized, "Job::AddDependency outside Init..Arm");
  if (fence == nullptr) return absl::OkStatus();
  for (fence::FenceRef& dep : deps_) {
    if (dep->context() != fence->context()) continue;
    if (fence::Fence::IsLater(*fence, *dep)) dep = std::move(fence);  // keep the later one
    return absl::OkStatus();
  }
  deps_.push_back(std::move(fence));
  return absl::OkStatus();
}

absl::Status Job::AddResvDependencies(const fence::Resv& resv, fence::ResvUsage usage) {
  absl::Status st = absl::OkStatus();
  resv.ForEachLocked(usage, [&](const fence::FenceRef& f, fence::ResvUsage) {
    if (st.ok()) st = AddDependency(f);
  });
  return st;
}

void Job::Arm() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // the lock is released by Push
  UDRM_CHECK(state_ == State::kInitialized, "Job::Arm of a job that is not initialised (or armed)");
  Entity* e = entity_;
  e->submit_mu_.Lock();
  scheduler_ = e->SelectSchedulerLocked();
  priority_ = e->priority();
  guilty_ = e->guilty_;
  stats_ = e->stats_;
  const uint64_t seq = ++e->fence_seq_;
  FinishedFence::Pair fences =
      FinishedFence::CreatePair(e->context_, seq, scheduler_, dont_pipeline_);
  scheduled_ = std::move(fences.scheduled);
  finished_ = std::move(fences.finished);
  arming_thread_ = ThisThread();
  state_ = State::kArmed;
}

void Job::Push(std::unique_ptr<Job> job) ABSL_NO_THREAD_SAFETY_ANALYSIS {  // Arm took the lock
  UDRM_CHECK(job != nullptr && job->state_ == State::kArmed, "Job::Push of a job that is not armed");
  UDRM_CHECK(job->arming_thread_ == ThisThread(), "Job::Push on another thread than Arm");
  job->state_ = State::kPushed;
  Entity* e = job->entity_;
  Scheduler* s = job->scheduler_;
  s->Enqueue(e, std::move(job));  // from here the job may run, finish and be freed
  e->submit_mu_.Unlock();
}

fence::FenceRef Job::ArmAndPush(std::unique_ptr<Job> job) {
  job->Arm();
  fence::FenceRef finished = job->finished_;
  Push(std::move(job));
  return finished;
}

}  // namespace sched
