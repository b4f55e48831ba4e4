#include "sched/job.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "sched/entity.h"
#include "sched/internal/job_memory.h"
#include "sched/log.h"
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

void* Job::operator new(std::size_t size) {
  return internal::AllocateJobMemory(size, alignof(std::max_align_t));
}
void* Job::operator new(std::size_t size, std::align_val_t align) {
  return internal::AllocateJobMemory(size, static_cast<std::size_t>(align));
}
void Job::operator delete(void* p) noexcept {
  internal::FreeJobMemory(p, alignof(std::max_align_t));
}
void Job::operator delete(void* p, std::align_val_t align) noexcept {
  internal::FreeJobMemory(p, static_cast<std::size_t>(align));
}

FinishedFence::Pair FinishedFence::CreatePair(uint64_t context, uint64_t seqno,
                                              const Scheduler* scheduler, bool dont_pipeline) {
  auto finished = std::allocate_shared<FinishedFence>(internal::JobAllocator<FinishedFence>(),
                                                      context, seqno, scheduler, dont_pipeline);
  fence::FenceRef scheduled(finished, &finished->scheduled_);
  return {std::move(scheduled), std::move(finished)};
}

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
  if (deps_.size() >= std::numeric_limits<uint32_t>::max() - 1) {  // next_dep_ counts them
    return absl::ResourceExhaustedError("Job::AddDependency: too many dependencies");
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

ArmedJob Job::Arm(std::unique_ptr<Job> job) ABSL_NO_THREAD_SAFETY_ANALYSIS {  // held by ArmedJob
  UDRM_CHECK(job != nullptr && job->state_ == State::kInitialized,
             "Job::Arm of a job that is not initialised (or armed)");
  Entity* e = job->entity_;
  e->submit_mu_.Lock();
  job->scheduler_ = e->SelectSchedulerLocked();
  job->priority_ = static_cast<uint8_t>(e->priority());
  job->guilty_ = e->guilty_;
  job->stats_ = e->stats_;
  const uint64_t seq = ++e->fence_seq_;
  FinishedFence::Pair fences =
      FinishedFence::CreatePair(e->context_, seq, job->scheduler_, job->dont_pipeline_);
  job->scheduled_ = std::move(fences.scheduled);
  job->finished_ = std::move(fences.finished);
  fence::FenceRef prev = std::exchange(e->last_armed_, job->finished_);
  // The previous job never enters the queue, so entity order does not order this one after it.
  if (std::exchange(e->last_armed_cancelled_, false) && !prev->IsSignaledFlag()) {
    job->order_after_ = prev;
  }
  job->state_ = State::kArmed;
  return ArmedJob(std::move(job), std::move(prev), ThisThread());
}

void Job::Push(std::unique_ptr<Job> job, const void* arming_thread)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {  // Arm took the lock
  UDRM_CHECK(arming_thread == ThisThread(), "ArmedJob::Push on another thread than Arm");
  job->state_ = State::kPushed;
  Entity* e = job->entity_;
  Scheduler* s = job->scheduler_;
  s->Enqueue(e, std::move(job));  // from here the job may run, finish and be freed
  e->submit_mu_.Unlock();
}

namespace {

// A cancelled job waiting, one fence at a time, for the fences that must signal before its own;
// then it signals them and destroys the job (and itself).
class Cancellation {
 public:
  Cancellation(std::unique_ptr<Job> job, std::vector<fence::FenceRef> wait)
      : job_(std::move(job)), wait_(std::move(wait)) {}

  // Deletes `this` when the job is complete (maybe before returning).
  void Next() {
    while (next_ < wait_.size()) {
      fence::Fence& f = *wait_[next_++];
      if (f.AddCallback(&cb_, [this](fence::Fence&) { Next(); }).ok()) return;
    }
    // Through local references: `wait_` (destroyed with `this`) may hold the fence whose
    // callback runs this.
    const fence::FenceRef scheduled = job_->scheduled(), finished = job_->finished();
    scheduled->Signal();
    finished->SetError(absl::CancelledError("armed job destroyed without Push"));
    finished->Signal();
    std::vector<fence::FenceRef> keep = std::move(wait_);
    delete this;  // destroys the job
  }

 private:
  std::unique_ptr<Job> job_;
  std::vector<fence::FenceRef> wait_;
  size_t next_ = 0;
  fence::FenceCallback cb_;
};

}  // namespace

void Job::Cancel(std::unique_ptr<Job> job, fence::FenceRef prev, const void* arming_thread)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  UDRM_CHECK(arming_thread == ThisThread(),
             "ArmedJob destroyed on another thread than Arm");
  job->state_ = State::kCancelled;
  Entity* e = job->entity_;
  job->entity_ = nullptr;
  e->last_armed_cancelled_ = true;  // the next armed job waits for this one's finished fence
  e->submit_mu_.Unlock();  // the entity is usable again: its next job takes the next seqno
#ifndef NDEBUG
  log::Write(log::Level::kWarn,
             absl::StrCat("job ", job->finished_->context(), ":", job->finished_->seqno(),
                          " was armed and destroyed without Push; cancelled"));
#endif
  // Like a killed job: after the previous job of the entity (seqno order) and the job's own
  // dependencies (whoever waits for its out-fence may rely on those being done).
  std::vector<fence::FenceRef> wait(job->deps_.begin(), job->deps_.end());
  if (prev != nullptr) wait.push_back(std::move(prev));
  (new Cancellation(std::move(job), std::move(wait)))->Next();
}

ArmedJob::~ArmedJob() {
  if (job_ != nullptr) Job::Cancel(std::move(job_), std::move(prev_), arming_thread_);
}

void ArmedJob::Push() && {
  UDRM_CHECK(job_ != nullptr, "ArmedJob::Push of a moved-from or pushed handle");
  prev_ = nullptr;
  Job::Push(std::move(job_), arming_thread_);
}

fence::FenceRef Entity::Submit(std::unique_ptr<Job> job) {
  UDRM_CHECK(job != nullptr && job->entity_ == this, "Entity::Submit of a job of another entity");
  ArmedJob armed = Job::Arm(std::move(job));
  fence::FenceRef finished = armed.finished();
  std::move(armed).Push();
  return finished;
}

}  // namespace sched
