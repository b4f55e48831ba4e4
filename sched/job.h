// sched::Job — drm_sched_job: one unit of work pushed through an entity to a scheduler.
//
// Life of a job:
//   1. Init(entity, credits) — fallible: InvalidArgument for zero credits or no entity.
//   2. AddDependency / AddResvDependencies — fences the job must wait for. Each call consumes the
//      reference it is given; for fences of one context only the later one is kept.
//   3. Job::Arm(std::move(job)) — the point of no return: picks the entity's scheduler (load
//      balancing), assigns the entity's next seqno and creates the scheduled and finished fences
//      (publish finished() as the job's out-fence from here on). It returns an ArmedJob, a
//      move-only handle that holds the entity's submission lock until it is pushed or destroyed,
//      so arm-then-push of one entity is atomic and seqno order equals queue order; another
//      thread arming the same entity waits.
//   4. std::move(armed).Push() — hands the job to the scheduler. The caller must not touch the
//      job afterwards (it may already be running, done and freed). Entity::Submit(std::move(job))
//      does 3 and 4 in one call and returns the finished fence: the common case.
//   An ArmedJob destroyed without Push cancels the job: the submission lock is released at once
//   (the entity stays usable, nothing blocks), and once the entity's previously armed job has
//   finished and the job's dependencies have signalled, its scheduled fence signals and its
//   finished fence signals with CancelledError; then the job is destroyed. The backend never sees
//   it (no RunJob, no FreeJob). Debug builds log a warning. Seqno order holds on both sides: the
//   entity's next armed job waits for the cancelled job's finished fence (an ordering dependency
//   the scheduler never skips as "same entity", and a killed job waits for it too), so no later
//   job of the entity signals its scheduled or finished fence before the cancelled job's.
//   5. The scheduler resolves dependencies, runs the job (Backend::RunJob), signals scheduled(),
//      then finished() when the hardware fence signals, then calls Backend::FreeJob.
// A job's failure travels on finished(), never as a return value.
//
// Thread-safety: a job belongs to the thread that builds it until Push; then to the scheduler.
// Broken contracts (dependencies after Arm, Push or destruction of an ArmedJob on another thread
// than Arm, Arm of a job not initialised) crash.
#ifndef UDRM_SCHED_JOB_H_
#define UDRM_SCHED_JOB_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "fence/fence.h"
#include "fence/resv.h"
#include "sched/entity.h"

namespace sched {

class ArmedJob;
class Scheduler;
namespace internal {
class EntityStats;
}  // namespace internal

class Job {
 public:
  Job() = default;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  virtual ~Job();

  // Jobs, and classes derived from Job, are allocated with these (sched/internal/job_memory.h:
  // oneTBB's scalable allocator, or the global one in a process with a sanitizer runtime). A job
  // is made on the submitting thread and freed on the scheduler's, which glibc's malloc serves
  // slowly. Make jobs with `new` / std::make_unique as usual; never std::malloc them.
  // Memory (sched_bench VALUE job_bytes, usable bytes from the allocator): a plain Job from Init
  // through Arm holds 512 B: the Job's 256 B block and its fence pair's 256 B block.
  static void* operator new(std::size_t size);
  static void* operator new(std::size_t size, std::align_val_t align);
  static void operator delete(void* p) noexcept;
  static void operator delete(void* p, std::align_val_t align) noexcept;

  // drm_sched_job_init.
  absl::Status Init(Entity* entity, uint32_t credits);
  // drm_sched_job_add_dependency: null is OK (nothing to wait for).
  absl::Status AddDependency(fence::FenceRef fence);
  // drm_sched_job_add_resv_dependencies: every fence of `resv` with usage <= `usage`. The resv
  // must be locked by the caller.
  absl::Status AddResvDependencies(const fence::Resv& resv, fence::ResvUsage usage);
  // DRM_SCHED_FENCE_DONT_PIPELINE: dependants on this scheduler wait for finished, not scheduled.
  // Before Arm.
  void SetDontPipeline() { dont_pipeline_ = true; }

  // drm_sched_job_arm: takes the entity's submission lock, held by the returned handle until it
  // is pushed or destroyed (see ArmedJob). Blocks while another thread holds an ArmedJob of the
  // same entity.
  [[nodiscard]] static ArmedJob Arm(std::unique_ptr<Job> job);

  uint32_t credits() const { return credits_; }
  const fence::FenceRef& scheduled() const { return scheduled_; }
  const fence::FenceRef& finished() const { return finished_; }
  absl::Span<const fence::FenceRef> dependencies() const { return deps_; }
  // From Arm on: the scheduler the job went to, and the entity's priority at Arm (s_priority).
  Scheduler* scheduler() const { return scheduler_; }
  Priority priority() const { return static_cast<Priority>(priority_); }
  // How often the job was blamed for a hang (Scheduler::IncreaseKarma). Memory ordering: relaxed.
  int karma() const { return karma_.load(std::memory_order_relaxed); }

 private:
  friend class ArmedJob;
  friend class Entity;  // Submit checks the job is its own
  friend class Scheduler;
  enum class State : uint8_t { kNew, kInitialized, kArmed, kPushed, kCancelled };
  // ArmedJob's two ends. `prev` is the finished fence of the entity's previously armed job.
  // `arming_thread`: the thread that armed the job (checked to be this one).
  static void Push(std::unique_ptr<Job> job, const void* arming_thread);
  static void Cancel(std::unique_ptr<Job> job, fence::FenceRef prev, const void* arming_thread);

  // Pointers and references first, then the small fields packed together (Job stays within 256 B,
  // see "Memory" above).
  Entity* entity_ = nullptr;  // cleared when the scheduler pops the job
  // Set by Arm.
  Scheduler* scheduler_ = nullptr;
  std::shared_ptr<std::atomic<bool>> guilty_;
  std::shared_ptr<internal::EntityStats> stats_;
  absl::InlinedVector<fence::FenceRef, 2> deps_;  // most jobs have 0-2: no allocation
  // Set by Arm when the entity's previously armed job was cancelled (destroyed without Push): its
  // finished fence, waited for before deps_ (the scheduler never skips it as same-entity) and by a
  // kill, so this job's fences signal after the cancelled job's (seqno order). Kept until freed.
  fence::FenceRef order_after_;
  union {
    Job* inbox_next_ = nullptr;  // from Push until drained: the inbox's link (Scheduler::Enqueue)
    uint64_t submit_stamp_;      // from the drain on: the scheduler's FIFO key
  };
  fence::FenceRef scheduled_;
  fence::FenceRef finished_;
  fence::FenceRef parent_;  // the hardware fence (scheduler: under its mu_ once pending)
  fence::FenceCallback hw_cb_;
  std::atomic<int> karma_{0};
  uint32_t credits_ = 0;
  // Scheduler: dependency resolution progress — 0: order_after_ not yet checked; k >= 1:
  // order_after_ resolved and deps_[0 .. k-1) checked.
  uint32_t next_dep_ = 0;
  State state_ = State::kNew;
  uint8_t priority_ = static_cast<uint8_t>(Priority::kNormal);  // a Priority
  bool dont_pipeline_ = false;
  // The scheduler's two flags, one byte (Job stays within 256 B): the unschedulable trace was
  // recorded (the work item, before the job is selected); the job's credits are charged to
  // credit_count_ (set at a selection made while not stopped and by Start, cleared by the one that returns them: JobDone,
  // Stop, or RunJob after a Stop inside it).
  bool unschedulable_traced_ : 1 = false;
  bool credits_held_ : 1 = false;
};

// An armed job that must be pushed: the type-level form of "after arm the job must be pushed".
// Move-only; holds the entity's submission lock (see Job above). Push or destroy it on the thread
// that armed it. Destroying it without Push cancels the job (see the life of a job above).
class [[nodiscard]] ArmedJob {
 public:
  ArmedJob(ArmedJob&& other) noexcept = default;
  ArmedJob& operator=(ArmedJob&&) = delete;  // replacing a live handle would cancel it silently
  ArmedJob(const ArmedJob&) = delete;
  ArmedJob& operator=(const ArmedJob&) = delete;
  ~ArmedJob();

  // drm_sched_entity_push_job: hands the job to its scheduler and releases the submission lock.
  // Does not block. Writes made before Push are visible to the backend's RunJob for the job.
  void Push() &&;

  // The armed job, for its fences and fields until Push.
  Job& job() const { return *job_; }
  Job* operator->() const { return job_.get(); }
  const fence::FenceRef& scheduled() const { return job_->scheduled(); }
  const fence::FenceRef& finished() const { return job_->finished(); }

 private:
  friend class Job;
  ArmedJob(std::unique_ptr<Job> job, fence::FenceRef prev, const void* arming_thread)
      : job_(std::move(job)), prev_(std::move(prev)), arming_thread_(arming_thread) {}

  std::unique_ptr<Job> job_;  // null once pushed (or moved from)
  fence::FenceRef prev_;      // the entity's previously armed job's finished fence, or null
  const void* arming_thread_;  // Push and the destructor must run on it
};

}  // namespace sched

#endif  // UDRM_SCHED_JOB_H_
