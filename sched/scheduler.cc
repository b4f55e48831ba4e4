#include "sched/scheduler.h"

#include <algorithm>
#include <utility>

#include "base/check.h"
#include "fence/unwrap.h"
#include "spdlog/spdlog.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/sched_fence.h"

namespace sched {
namespace {

// The library's logger. Never called with a scheduler lock held.
spdlog::logger& Log() {
  static std::shared_ptr<spdlog::logger> logger = spdlog::default_logger()->clone("udrm.sched");
  return *logger;
}

}  // namespace

void Scheduler::Trace(TraceEvent event, const fence::Fence& job_fence, const fence::Fence* dep) {
  if (options_.trace == nullptr) return;
  TraceRecord r{event, options_.name, job_fence.context(), job_fence.seqno(),
                dep != nullptr ? dep->context() : 0, dep != nullptr ? dep->seqno() : 0,
                absl::Now()};
  options_.trace->Record(r);
}

void Scheduler::TraceLocked(TraceEvent event, const fence::Fence& job_fence,
                            const fence::Fence* dep) {
  if (options_.trace == nullptr) return;
  trace_buf_.push_back(TraceRecord{event, options_.name, job_fence.context(), job_fence.seqno(),
                                   dep != nullptr ? dep->context() : 0,
                                   dep != nullptr ? dep->seqno() : 0, absl::Now()});
}

void Scheduler::EmitBuffered(std::vector<TraceRecord>& records) {
  for (const TraceRecord& r : records) options_.trace->Record(r);
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Backend* backend,
                                                             SchedulerOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("Scheduler needs a backend");
  if (options.credit_limit == 0) return absl::InvalidArgumentError("credit_limit must be > 0");
  return std::unique_ptr<Scheduler>(new Scheduler(backend, std::move(options)));
}

Scheduler::Scheduler(Backend* backend, SchedulerOptions options)
    : backend_(backend), options_(std::move(options)), executor_([this] { ExecutorLoop(); }) {}

Scheduler::~Scheduler() {
  {
    absl::MutexLock l(&mu_);
    UDRM_CHECK(rq_.empty(), "Scheduler destroyed before its entities");
    stopping_ = true;
  }
  {
    absl::MutexLock l(&wake_mu_);
    exit_ = true;
  }
  executor_.join();
  // drm_sched_fini: cancel what is still on the hardware (newest first), then free everything.
  std::deque<std::unique_ptr<Job>> pending;
  {
    absl::MutexLock l(&mu_);
    pending.swap(pending_);
  }
  for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
    if (!(*it)->finished_->IsSignaledFlag()) backend_->CancelJob(**it);
  }
  // Killed jobs whose dependencies never signalled: fail them now rather than wait forever.
  std::vector<std::unique_ptr<Job>> killed;
  {
    absl::MutexLock l(&killed_mu_);
    killed.swap(killed_);
  }
  for (auto& job : killed) {
    if (job->parent_ != nullptr && job->parent_->RemoveCallback(&job->hw_cb_)) {
      CompleteKilled(job.get());
    }
    (void)job->finished_->Wait();
    backend_->FreeJob(std::move(job));
  }
  for (auto& job : pending) {
    // A backend that did not cancel: detach from the hardware fence so that it can never reach
    // the freed job, and fail the job ourselves.
    if (!job->finished_->IsSignaledFlag() && job->parent_ != nullptr &&
        job->parent_->RemoveCallback(&job->hw_cb_)) {
      JobDone(job.get(), absl::CancelledError("scheduler torn down"));
    }
    (void)job->finished_->Wait();  // signalled by now: by cancellation or by the callback
    backend_->FreeJob(std::move(job));
  }
}

void Scheduler::WakeUp() {
  absl::MutexLock l(&wake_mu_);
  wake_ = true;
}

void Scheduler::ExecutorLoop() {
  for (;;) {
    absl::Time deadline;
    {
      absl::MutexLock l(&mu_);
      deadline = tdr_deadline_;
    }
    bool woken;
    {
      absl::MutexLock l(&wake_mu_);
      woken = wake_mu_.AwaitWithDeadline(
          absl::Condition(
              +[](Scheduler* s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s->wake_ || s->exit_; },
              this),
          deadline);
      if (exit_) return;
      wake_ = false;
    }
    if (!woken) HandleTimeout();
    while (RunOnce()) {
    }
  }
}

void Scheduler::ArmTimerLocked() {
  tdr_deadline_ = (options_.timeout == absl::InfiniteDuration() || tdr_disabled_ || pending_.empty())
                      ? absl::InfiniteFuture()
                      : absl::Now() + options_.timeout;
}

// drm_sched_job_timedout.
void Scheduler::HandleTimeout() {
  std::unique_ptr<Job> job;
  {
    absl::MutexLock l(&mu_);
    if (absl::Now() < tdr_deadline_) return;  // progress re-armed it meanwhile
    if (pending_.empty() || pending_.front()->finished_->IsSignaledFlag()) {
      ArmTimerLocked();
      return;
    }
    job = std::move(pending_.front());  // off the list: nothing frees it while the backend looks
    pending_.pop_front();
  }
  const TimeoutStatus status = backend_->TimedOutJob(*job);
  absl::MutexLock l(&mu_);
  pending_.push_front(std::move(job));  // freed in order once its finished fence signals
  if (status == TimeoutStatus::kNoDevice) tdr_disabled_ = true;
  ArmTimerLocked();
}

bool Scheduler::RunOnce() {
  std::vector<std::unique_ptr<Job>> finished;
  Job* job = nullptr;
  std::vector<TraceRecord> records;
  int truncated;
  {
    absl::MutexLock l(&mu_);
    finished = TakeFinishedLocked();
    if (!stopping_) job = PopReadyJobLocked();
    records.swap(trace_buf_);
    truncated = std::exchange(truncated_, 0);
  }
  if (!records.empty()) EmitBuffered(records);
  if (truncated > 0) {
    Log().warn("{}: {} job(s) asked for more credits than the limit {}; truncated", options_.name,
               truncated, options_.credit_limit);
  }
  std::vector<std::unique_ptr<Job>> killed = TakeKilledDone();
  for (auto& j : killed) backend_->FreeJob(std::move(j));
  for (auto& j : finished) backend_->FreeJob(std::move(j));
  if (job != nullptr) RunJob(job);
  if ((!finished.empty() || job != nullptr) && options_.timeout != absl::InfiniteDuration()) {
    absl::MutexLock l(&mu_);
    ArmTimerLocked();  // progress: a job went to the backend or was freed
  }
  return !finished.empty() || !killed.empty() || job != nullptr;
}

// Frees strictly in the order jobs went to the backend: only the head of the pending list.
std::vector<std::unique_ptr<Job>> Scheduler::TakeFinishedLocked() {
  std::vector<std::unique_ptr<Job>> out;
  while (!pending_.empty() && pending_.front()->finished_->IsSignaledFlag()) {
    out.push_back(std::move(pending_.front()));
    pending_.pop_front();
  }
  return out;
}

// drm_sched_entity_add_dependency_cb, in a loop over the head job's dependencies. Returns true
// when nothing is left to wait for; false with a callback installed on the entity.
bool Scheduler::DependenciesResolvedLocked(Entity* e, Job& job) {
  for (;;) {
    fence::FenceRef dep;
    if (job.next_dep_ < job.deps_.size()) {
      dep = job.deps_[job.next_dep_++];
    } else {
      dep = backend_->PrepareJob(job);
      if (dep == nullptr) return true;
    }
    // The same entity: entity order already serialises them.
    if (dep->context() == e->context_ || dep->context() == e->context_ + 1) continue;
    // The same scheduler: the ring runs jobs in order, so being scheduled is enough — unless the
    // dependency failed or asked not to be pipelined.
    if (const FinishedFence* f = FinishedFence::Cast(dep.get());
        f != nullptr && f->scheduler() == this && !f->dont_pipeline() && f->error().ok()) {
      dep = f->scheduled();
    }
    if (dep->IsSignaled()) continue;
    e->dep_signaled_.store(false, std::memory_order_relaxed);
    absl::Status st = dep->AddCallback(&e->dep_cb_, [this, e](fence::Fence&) {
      e->dep_signaled_.store(true, std::memory_order_release);  // last touch of the entity
      WakeUp();
    });
    if (fence::IsAlreadySignaled(st)) continue;
    TraceLocked(TraceEvent::kAddDependency, *job.finished_, dep.get());
    e->dep_fence_ = std::move(dep);
    e->dep_pending_ = true;
    return false;
  }
}

Job* Scheduler::PopReadyJobLocked() {
  // Higher priority first (KERNEL = 0), then the policy's order.
  auto Before = [this](const Entity& a, const Entity& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (a.priority() != b.priority()) return a.priority() < b.priority();
    if (options_.policy == Policy::kRoundRobin) return a.last_selected_ < b.last_selected_;
    return a.queue_.front()->submit_stamp_ < b.queue_.front()->submit_stamp_;
  };
  Entity* best = nullptr;
  for (Entity* e : rq_) {
    if (e->dep_pending_) {
      if (!e->dep_signaled_.load(std::memory_order_acquire)) continue;
      e->dep_pending_ = false;
      e->dep_fence_ = nullptr;
    }
    Job& head = *e->queue_.front();
    if (!DependenciesResolvedLocked(e, head)) continue;
    if (best == nullptr || Before(*e, *best)) best = e;
  }
  if (best == nullptr) return nullptr;
  Job& head = *best->queue_.front();
  // drm_sched_can_queue: a job above the limit is truncated so that it can ever run; if the
  // credits are not there, wait for them (JobDone wakes us) rather than skip this entity.
  if (head.credits_ > options_.credit_limit) {
    head.credits_ = options_.credit_limit;
    ++truncated_;
  }
  if (options_.credit_limit - credit_count_.load(std::memory_order_acquire) < head.credits_) {
    if (!head.unschedulable_traced_) {
      head.unschedulable_traced_ = true;
      TraceLocked(TraceEvent::kUnschedulable, *head.finished_);
    }
    return nullptr;
  }
  credit_count_.fetch_add(head.credits_, std::memory_order_relaxed);
  std::unique_ptr<Job> job = std::move(best->queue_.front());
  best->queue_.pop_front();
  best->last_selected_ = ++rr_clock_;
  if (best->queue_.empty()) {
    best->in_rq_ = false;
    rq_.remove(best);
  }
  job->entity_ = nullptr;  // after pop the job no longer reaches its entity
  Job* raw = job.get();
  pending_.push_back(std::move(job));
  return raw;
}

void Scheduler::RunJob(Job* job) {
  Trace(TraceEvent::kRun, *job->finished_);
  absl::StatusOr<fence::FenceRef> hw = backend_->RunJob(*job);
  if (hw.ok() && *hw != nullptr) job->parent_ = *hw;  // the parent is set before `scheduled`
  job->scheduled_->Signal();
  if (!hw.ok()) return JobDone(job, hw.status());
  if (*hw == nullptr) return JobDone(job, absl::OkStatus());
  absl::Status st = job->parent_->AddCallback(
      &job->hw_cb_, [this, job](fence::Fence& f) { JobDone(job, f.error()); });
  if (fence::IsAlreadySignaled(st)) JobDone(job, job->parent_->error());
}

// drm_sched_job_done: may run on any thread (the one signalling the hardware fence). It must not
// touch the job after signalling `finished`: the executor may free it right away.
void Scheduler::JobDone(Job* job, absl::Status status) {
  const fence::FenceRef finished = job->finished_;
  Trace(TraceEvent::kDone, *finished);
  credit_count_.fetch_sub(job->credits_, std::memory_order_release);
  if (!status.ok()) finished->SetError(std::move(status));
  finished->Signal();
  WakeUp();
}

void Scheduler::Enqueue(Entity* e, std::unique_ptr<Job> job) {
  const fence::FenceRef finished = job->finished_;  // for the trace; the job may be gone below
  bool killed = false;
  {
    absl::MutexLock l(&mu_);
    if (e->stopped_) {
      killed = true;  // "Trying to push to a killed entity": the job is killed too
    } else {
      job->submit_stamp_ = ++next_submit_stamp_;
      e->queue_.push_back(std::move(job));
      if (!e->in_rq_) {
        e->in_rq_ = true;
        rq_.push_back(e);
      }
    }
  }
  if (killed) {
    std::deque<std::unique_ptr<Job>> jobs;
    jobs.push_back(std::move(job));
    KillJobs(e, std::move(jobs));
    return;
  }
  Trace(TraceEvent::kQueue, *finished);
  WakeUp();
}

absl::StatusOr<absl::Duration> Scheduler::FlushEntity(Entity* e, absl::Duration timeout) {
  const absl::Time deadline =
      timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
  absl::MutexLock l(&mu_);
  const bool idle = mu_.AwaitWithDeadline(
      absl::Condition(+[](Entity* x) { return x->queue_.empty(); }, e), deadline);
  if (!idle) return absl::DeadlineExceededError("entity still has queued jobs");
  if (timeout == absl::InfiniteDuration()) return timeout;
  return std::max(deadline - absl::Now(), absl::Nanoseconds(1));
}

void Scheduler::KillEntity(Entity* e) {
  std::deque<std::unique_ptr<Job>> jobs;
  {
    absl::MutexLock l(&mu_);
    if (e->stopped_) return;
    e->stopped_ = true;
    if (e->in_rq_) {
      rq_.remove(e);
      e->in_rq_ = false;
    }
    if (e->dep_pending_) {
      // The callback only sets an atomic and wakes the executor: removing it (which waits for a
      // running callback to return) cannot deadlock with mu_.
      e->dep_fence_->RemoveCallback(&e->dep_cb_);
      e->dep_pending_ = false;
      e->dep_fence_ = nullptr;
    }
    jobs.swap(e->queue_);
  }
  KillJobs(e, std::move(jobs));
}

// Signals through local references: once `finished` signals, the executor may free the job (and
// its fences with it) while this thread is still running the fences' callbacks.
void Scheduler::CompleteKilled(Job* job) {
  const fence::FenceRef scheduled = job->scheduled_;
  const fence::FenceRef finished = job->finished_;
  scheduled->Signal();
  finished->SetError(absl::NotFoundError("entity killed (ESRCH)"));
  finished->Signal();
}

void Scheduler::KillJobs(Entity* e, std::deque<std::unique_ptr<Job>> jobs) {
  for (auto& job : jobs) {
    job->entity_ = nullptr;
    Job* raw = job.get();
    std::vector<fence::FenceRef> wait(job->deps_.begin(), job->deps_.end());
    {
      absl::MutexLock l(&killed_mu_);
      // Killed jobs of one entity complete in order (the kernel chains them from last_scheduled).
      if (e->last_killed_ != nullptr) wait.push_back(e->last_killed_);
      e->last_killed_ = job->finished_;
      killed_.push_back(std::move(job));
    }
    // The gate is kept in parent_ (a killed job never gets a hardware fence) so it outlives the
    // callback; the callback completes the job and wakes the executor to free it.
    raw->parent_ = wait.empty() ? nullptr : fence::Merge(wait);
    if (raw->parent_ == nullptr ||
        fence::IsAlreadySignaled(raw->parent_->AddCallback(&raw->hw_cb_, [this, raw](fence::Fence&) {
          CompleteKilled(raw);
          WakeUp();
        }))) {
      CompleteKilled(raw);
    }
  }
  WakeUp();
}

std::vector<std::unique_ptr<Job>> Scheduler::TakeKilledDone() {
  std::vector<std::unique_ptr<Job>> done;
  absl::MutexLock l(&killed_mu_);
  for (auto& job : killed_) {
    if (job->finished_->IsSignaledFlag()) done.push_back(std::move(job));
  }
  killed_.erase(std::remove(killed_.begin(), killed_.end(), nullptr), killed_.end());
  return done;
}

void Scheduler::RemoveEntity(Entity* e) {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(e->queue_.empty(), "Entity removed with queued jobs");
  if (e->in_rq_) {
    rq_.remove(e);
    e->in_rq_ = false;
  }
}

}  // namespace sched
