// Scheduler: the entity side — push, flush, kill, load-balancing queries.
#include <algorithm>
#include <utility>

#include "base/check.h"
#include "fence/unwrap.h"
#include "sched/entity.h"
#include "sched/internal/run_queue.h"
#include "sched/job.h"
#include "sched/sched_fence.h"
#include "sched/scheduler.h"

namespace sched {

// Under the entity's submit_mu_ (Job::Push). Entity::Kill sets killed_ under that lock too, so
// every push before a kill is in the inbox when KillEntity drains it, and every push after it
// sees killed_.
// (The analysis cannot see that lock: Arm takes it and Push releases it.)
void Scheduler::Enqueue(Entity* e, std::unique_ptr<Job> job) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  jobs_score_.fetch_add(1, std::memory_order_relaxed);
  if (e->killed_) {
    // "Trying to push to a killed entity": the job is killed too (CompleteKilled takes the
    // score back).
    std::deque<std::unique_ptr<Job>> jobs;
    jobs.push_back(std::move(job));
    ArmKilled(LinkKilled(e, std::move(jobs)));
    return;
  }
  e->queued_.fetch_add(1, std::memory_order_relaxed);
  Trace(TraceEvent::kQueue, *job->finished_);  // before the job can run (or be freed)
  Job* raw = job.release();
  Job* head = inbox_.load(std::memory_order_relaxed);
  do {
    raw->inbox_next_ = head;
  } while (!inbox_.compare_exchange_weak(head, raw, std::memory_order_release,
                                         std::memory_order_relaxed));
  WakeUp();
}

void Scheduler::DrainInboxLocked() {
  // Every round calls this: an empty inbox costs a load, not a write to the pushers' line.
  if (inbox_.load(std::memory_order_relaxed) == nullptr) return;
  Job* list = inbox_.exchange(nullptr, std::memory_order_acquire);
  Job* in_order = nullptr;  // the stack is newest first: reverse it
  while (list != nullptr) {
    Job* next = list->inbox_next_;
    list->inbox_next_ = in_order;
    in_order = list;
    list = next;
  }
  while (in_order != nullptr) {
    std::unique_ptr<Job> job(in_order);
    in_order = job->inbox_next_;
    job->inbox_next_ = nullptr;
    Entity* e = job->entity_;
    const uint64_t stamp = job->submit_stamp_ = ++next_submit_stamp_;
    e->queue_.push_back(std::move(job));
    rq_->Add(e->rq_entry_.get(), stamp, avg_job_qns_);  // no-op if it is there
  }
  UpdateRqSizeLocked();
}

absl::StatusOr<absl::Duration> Scheduler::FlushEntity(Entity* e, absl::Duration timeout) {
  const absl::Time deadline =
      timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
  absl::MutexLock l(&mu_);
  const bool idle = mu_.AwaitWithDeadline(
      absl::Condition(
          +[](Entity* x) { return x->queued_.load(std::memory_order_relaxed) == 0; }, e),
      deadline);
  if (!idle) return absl::DeadlineExceededError("entity still has queued jobs");
  if (timeout == absl::InfiniteDuration()) return timeout;
  return std::max(deadline - absl::Now(), absl::Nanoseconds(1));
}

// Called by Entity::Kill with the entity's submit_mu_ held, so no push of this entity slips
// between the drain and the links of the kill chain (a push after it sees killed_ and is chained
// behind these jobs). Nothing here signals a fence; the caller arms the returned jobs after
// releasing submit_mu_.
std::vector<Scheduler::KilledJob> Scheduler::KillEntity(Entity* e) {
  std::deque<std::unique_ptr<Job>> jobs;
  fence::FenceRef last_scheduled;
  std::pair<Scheduler*, Entity*> self_and_e(this, e);
  {
    absl::MutexLock l(&mu_);
    // Not while the work item resolves this entity's head job without mu_ (entity_idle).
    mu_.Await(absl::Condition(
        +[](std::pair<Scheduler*, Entity*>* p) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return p->first->preparing_ != p->second;
        },
        &self_and_e));
    if (e->stopped_) return {};
    DrainInboxLocked();  // every job pushed before the kill (see Enqueue)
    e->stopped_ = true;  // from here on the entity's last_scheduled_ does not change
    rq_->Remove(e->rq_entry_.get());
    UpdateRqSizeLocked();
    if (e->dep_pending_) {
      // The callback only sets an atomic and wakes the executor: removing it (which waits for a
      // running callback to return) cannot deadlock with mu_.
      e->dep_fence_->RemoveCallback(&e->dep_cb_);
      e->dep_pending_ = false;
      e->dep_fence_ = nullptr;
    }
    jobs.swap(e->queue_);
    e->queued_.fetch_sub(static_cast<int64_t>(jobs.size()), std::memory_order_relaxed);
    last_scheduled = e->last_scheduled_;
  }
  {
    // drm_sched_entity_kill: the chain starts at the last job that went to the hardware, so no
    // killed job signals before it (a Resv holding the killed job's fence must not look idle
    // while the hardware still writes).
    absl::MutexLock l(&killed_mu_);
    if (e->last_killed_ == nullptr && last_scheduled != nullptr &&
        !last_scheduled->IsSignaledFlag()) {
      e->last_killed_ = std::move(last_scheduled);
    }
  }
  return LinkKilled(e, std::move(jobs));
}

// Signals through local references: once `finished` signals, the executor may free the job (and
// its fences with it) while this thread is still running the fences' callbacks.
void Scheduler::CompleteKilled(Job* job) {
  const fence::FenceRef scheduled = job->scheduled_;
  const fence::FenceRef finished = job->finished_;
  jobs_score_.fetch_sub(1, std::memory_order_relaxed);
  scheduled->Signal();
  finished->SetError(absl::NotFoundError("entity killed (ESRCH)"));
  finished->Signal();
}

std::vector<Scheduler::KilledJob> Scheduler::LinkKilled(Entity* e,
                                                        std::deque<std::unique_ptr<Job>> jobs) {
  std::vector<KilledJob> out;
  out.reserve(jobs.size());
  for (auto& job : jobs) {
    job->entity_ = nullptr;
    KilledJob k{job.get(), {}};
    // Every dependency must have finished ("to avoid data corruptions"): a scheduled fence of a
    // job is replaced by that job's finished fence.
    for (const fence::FenceRef& dep : job->deps_) k.wait.push_back(FinishedFence::FinishedOf(dep));
    // Its entity's cancelled previous job (sched/job.h), which is in no kill chain.
    if (job->order_after_ != nullptr) k.wait.push_back(job->order_after_);
    absl::MutexLock l(&killed_mu_);
    // Killed jobs of one entity complete in order, after its last scheduled job.
    if (e->last_killed_ != nullptr) k.wait.push_back(e->last_killed_);
    e->last_killed_ = job->finished_;
    killed_.push_back(std::move(job));
    killed_count_.fetch_add(1, std::memory_order_release);
    out.push_back(std::move(k));
  }
  return out;
}

void Scheduler::ArmKilled(std::vector<KilledJob> jobs) {
  for (KilledJob& k : jobs) {
    Job* raw = k.job;
    // The gate is kept in parent_ (a killed job never gets a hardware fence) so it outlives the
    // callback; the callback completes the job and wakes the executor to free it.
    raw->parent_ = k.wait.empty() ? nullptr : fence::Merge(k.wait);
    if (raw->parent_ == nullptr ||
        fence::IsAlreadySignaled(raw->parent_->AddCallback(&raw->hw_cb_, [this, raw](fence::Fence&) {
          callbacks_running_.fetch_add(1, std::memory_order_relaxed);  // see JobDone
          CompleteKilled(raw);
          WakeUp();
          callbacks_running_.fetch_sub(1, std::memory_order_release);
        }))) {
      CompleteKilled(raw);
    }
  }
  WakeUp();
}

std::vector<std::unique_ptr<Job>> Scheduler::TakeKilledDone() {
  std::vector<std::unique_ptr<Job>> done;
  if (killed_count_.load(std::memory_order_acquire) == 0) return done;  // the common case
  absl::MutexLock l(&killed_mu_);
  for (auto& job : killed_) {
    if (job->finished_->IsSignaledFlag()) done.push_back(std::move(job));
  }
  killed_.erase(std::remove(killed_.begin(), killed_.end(), nullptr), killed_.end());
  killed_count_.store(static_cast<int>(killed_.size()), std::memory_order_relaxed);
  return done;
}

void Scheduler::RemoveEntity(Entity* e) {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(e->queued_.load(std::memory_order_relaxed) == 0, "Entity removed with queued jobs");
  rq_->Remove(e->rq_entry_.get());
  UpdateRqSizeLocked();
}

void Scheduler::UpdateRqSizeLocked() {
  rq_size_.store(static_cast<int64_t>(rq_->entities().size()), std::memory_order_relaxed);
}

bool Scheduler::EntityMayMove(Entity* e) {
  absl::MutexLock l(&mu_);
  return e->queued_.load(std::memory_order_relaxed) == 0 &&
         (e->last_scheduled_ == nullptr || e->last_scheduled_->IsSignaledFlag());
}

absl::Status Scheduler::EntityError(Entity* e) {
  fence::FenceRef last;
  {
    absl::MutexLock l(&mu_);
    last = e->last_scheduled_;
  }
  if (last == nullptr || !last->IsSignaledFlag()) return absl::OkStatus();
  return last->error();
}

}  // namespace sched
