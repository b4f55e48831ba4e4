// Scheduler: timeouts (TDR), stop/start recovery, karma, and teardown.
#include <thread>
#include <utility>

#include "base/check.h"
#include "sched/internal/tdr_timer.h"
#include "sched/job.h"
#include "sched/sched_fence.h"
#include "sched/scheduler.h"

namespace sched {

void Scheduler::ArmTimerLocked() {
  if (fault_pending_) return;  // the handler runs now (Fault)
  tdr_deadline_ = (options_.timeout == absl::InfiniteDuration() || tdr_disabled_ || paused_ ||
                   pending_.empty())
                      ? absl::InfiniteFuture()
                      : absl::Now() + options_.timeout;
  if (tdr_deadline_ == timer_set_) return;  // infinite and infinite: nothing to tell the timer
  timer_set_ = tdr_deadline_;
  internal::TdrTimer::Get().Set(this, tdr_deadline_, [this] {
    tdr_check_.store(true, std::memory_order_release);
    WakeUp();
  });
}

void Scheduler::Fault() {
  {
    absl::MutexLock l(&mu_);
    tdr_deadline_ = absl::Now();
    fault_pending_ = true;
  }
  tdr_check_.store(true, std::memory_order_release);
  WakeUp();
}

// drm_sched_job_timedout. On the executor thread. The handler does not count as work (in_work_):
// a Stop from another thread — a reset worker the handler waits for — must not wait for it, as
// the kernel's drm_sched_stop only parks the work items.
void Scheduler::HandleTimeout() {
  Job* job;
  {
    absl::MutexLock l(&mu_);
    fault_pending_ = false;  // seen (dropped if stopped, as the deadline Stop cleared)
    if (paused_ || absl::Now() < tdr_deadline_) return;  // progress re-armed it meanwhile
    if (pending_.empty() || pending_.front()->finished_->IsSignaledFlag() ||
        !Ran(*pending_.front())) {
      ArmTimerLocked();
      return;
    }
    // Off the list: nothing frees it while the backend looks at it.
    tdr_job_ = std::move(pending_.front());
    pending_.pop_front();
    free_guilty_ = false;
    job = tdr_job_.get();
    handler_job_ = job;
  }
  const TimeoutStatus status = backend_->TimedOutJob(*job);  // may Stop/Resubmit/Start
  std::unique_ptr<Job> to_free;
  {
    absl::MutexLock l(&mu_);
    handler_job_ = nullptr;
    if (tdr_job_ != nullptr) {
      if (free_guilty_) {
        to_free = std::move(tdr_job_);
      } else {
        pending_.push_front(std::move(tdr_job_));  // freed in order once its fence signals
      }
    }
    if (status == TimeoutStatus::kNoDevice) tdr_disabled_ = true;
    ArmTimerLocked();
  }
  if (to_free != nullptr) {
    (void)to_free->finished_->Wait();
    // A Stop on a reset worker may still be freeing: free_mu_ orders the two.
    absl::MutexLock f(&free_mu_);
    backend_->FreeJob(std::move(to_free));
  }
  WakeUp();  // a job put back may be freeable now
}

void Scheduler::Stop(Job* bad) {
  std::deque<std::unique_ptr<Job>> jobs;
  Job* in_handler;
  // The job whose RunJob this Stop interrupts (on the executor thread: from the backend's RunJob
  // or a callback of the job's scheduled fence); a Stop on another thread waits for the round,
  // so it never sees one.
  Job* running = nullptr;
  {
    absl::MutexLock l(&mu_);
    paused_ = true;
    stop_requested_.store(true, std::memory_order_relaxed);
    if (OnExecutorThread()) {
      running = running_.load(std::memory_order_relaxed);
    } else {
      mu_.Await(absl::Condition(
          +[](Scheduler* s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return !s->in_work_; }, this));
    }
    // The job in TimedOutJob goes back at the head, so the walk below covers it.
    if (tdr_job_ != nullptr) pending_.push_front(std::move(tdr_job_));
    in_handler = handler_job_;
    jobs.swap(pending_);
    tdr_deadline_ = absl::InfiniteFuture();
    fault_pending_ = false;
  }
  // Outside mu_: removing a hardware callback waits for it if it is running, and it signals the
  // finished fence, whose own callbacks may push jobs.
  std::deque<std::unique_ptr<Job>> keep;
  std::vector<std::unique_ptr<Job>> done;
  std::unique_ptr<Job> guilty;
  for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {  // newest first, as the kernel
    std::unique_ptr<Job>& job = *it;
    if (job.get() == running) {
      // In RunJob on this thread: left to RunJob, which detaches it once the backend's RunJob
      // returned (credits returned, hardware fence dropped) or completes it if it completed at
      // once; PendingSnapshot on other threads waits for that.
      stopped_in_run_.store(true, std::memory_order_relaxed);
      keep.push_front(std::move(job));
      continue;
    }
    if (!Ran(*job)) {
      // Selected, not handed to the backend (a Stop during a round): as if still on its entity.
      ReturnCredits(*job);
      keep.push_front(std::move(job));
      continue;
    }
    const bool detached_before = job->parent_ == nullptr && !job->finished_->IsSignaledFlag();
    if (detached_before ||
        (job->parent_ != nullptr && job->parent_->RemoveCallback(&job->hw_cb_))) {
      ReturnCredits(*job);  // none held if an earlier Stop detached it
      job->parent_ = nullptr;
      keep.push_front(std::move(job));
    } else if (job.get() == in_handler) {
      // The timeout handler still holds it (whether or not it is `bad`): freed when it returns.
      guilty = std::move(job);
    } else {
      done.push_back(std::move(job));
    }
  }
  {
    absl::MutexLock l(&mu_);
    UDRM_CHECK(pending_.empty(), "Scheduler::Stop raced with submission");
    pending_.swap(keep);
    if (guilty != nullptr) {
      if (handler_job_ == guilty.get()) {
        tdr_job_ = std::move(guilty);
        free_guilty_ = true;
      } else {
        done.push_back(std::move(guilty));  // the handler returned meanwhile
      }
    }
  }
  for (auto& job : done) (void)job->finished_->Wait();
  if (done.empty()) return;
  absl::MutexLock f(&free_mu_);  // the handler may be freeing its job on the executor thread
  for (auto& job : done) backend_->FreeJob(std::move(job));
}

void Scheduler::ReturnCredits(Job& job) {
  if (!job.credits_held_) return;
  job.credits_held_ = false;
  credit_count_.fetch_sub(job.credits_, std::memory_order_release);
}

void Scheduler::Start(absl::Status error) {
  const absl::Status fallback = error.ok() ? absl::CancelledError("ECANCELED") : error;
  Job* running = nullptr;
  if (OnExecutorThread()) {
    // A Start after a Stop inside the same RunJob: that job goes on as if not stopped.
    running = running_.load(std::memory_order_relaxed);
    if (running != nullptr) stopped_in_run_.store(false, std::memory_order_relaxed);
  }
  for (Job* job : PendingSnapshot()) {
    if (job == running) continue;
    // Completed at once by the RunJob a Stop interrupted (see Stop): nothing to re-attach.
    if (job->finished_->IsSignaledFlag()) continue;
    if (!job->credits_held_) {
      job->credits_held_ = true;
      credit_count_.fetch_add(job->credits_, std::memory_order_relaxed);
    }
    if (!Ran(*job)) continue;  // selected, not run: the work item runs it (see Stop)
    if (job->parent_ == nullptr) {
      JobDone(job, fallback);
    } else {
      AttachHardwareFence(job, error);
    }
  }
  {
    absl::MutexLock l(&mu_);
    paused_ = false;
    // Release: RunBatch reads it without mu_ and then runs jobs whose credits_held_ this wrote.
    stop_requested_.store(false, std::memory_order_release);
    ArmTimerLocked();
  }
  WakeUp();
}

bool Scheduler::Ran(const Job& job) { return job.scheduled_->IsSignaledFlag(); }

bool Scheduler::IsStopped() const {
  absl::MutexLock l(&mu_);
  return paused_;
}

std::vector<Job*> Scheduler::PendingSnapshot() {
  // A Stop on the executor thread inside RunJob(J): on another thread, wait until that RunJob
  // settled J (detached or completed), so J is not run, attached or finished twice.
  if (!OnExecutorThread()) {
    while (stopped_in_run_.load(std::memory_order_acquire)) std::this_thread::yield();
  }
  absl::MutexLock l(&mu_);
  UDRM_CHECK(paused_, "Scheduler: pending jobs walked while not stopped");
  std::vector<Job*> out;
  for (auto& job : pending_) out.push_back(job.get());
  return out;
}

void Scheduler::ResubmitJobs() {
  bool found_guilty = false;
  uint64_t guilty_context = 0;
  for (Job* job : PendingSnapshot()) {
    // Not on the hardware (see Stop), or completed by the RunJob a Stop interrupted.
    if (!Ran(*job) || job->finished_->IsSignaledFlag()) continue;
    if (!found_guilty && job->karma() > options_.hang_limit) {
      found_guilty = true;
      guilty_context = job->scheduled_->context();
    }
    if (found_guilty && job->scheduled_->context() == guilty_context) {
      job->finished_->SetError(absl::CancelledError("guilty context (ECANCELED)"));
    }
    absl::StatusOr<fence::FenceRef> hw = backend_->RunJob(*job);
    if (!hw.ok()) job->finished_->SetError(hw.status());
    job->parent_ = hw.ok() ? *hw : nullptr;
    if (job->parent_ != nullptr) static_cast<FinishedFence&>(*job->finished_).SetParent(*hw);
  }
}

void Scheduler::ForEachPendingJob(const std::function<void(Job&)>& fn) {
  for (Job* job : PendingSnapshot()) {
    if (Ran(*job)) fn(*job);
  }
}

void Scheduler::IncreaseKarma(Job& bad) {
  if (bad.priority() == Priority::kKernel) return;
  bad.karma_.fetch_add(1, std::memory_order_relaxed);
  if (bad.guilty_ != nullptr) bad.guilty_->store(true, std::memory_order_release);
}

bool Scheduler::InvalidateJob(Job& job, int threshold) {
  return job.karma_.fetch_add(1, std::memory_order_relaxed) + 1 > threshold;
}

// drm_sched_fini's second half, after the executor stopped: cancel what is still on the hardware
// (newest first), then free everything.
void Scheduler::CancelAndFreeAll() {
  std::deque<std::unique_ptr<Job>> pending;
  {
    absl::MutexLock l(&mu_);
    pending.swap(pending_);
  }
  for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
    if (Ran(**it) && !(*it)->finished_->IsSignaledFlag()) backend_->CancelJob(**it);
  }
  // The pending jobs first: a killed job may be chained behind one (its entity's last selected
  // job, e.g. one a Stop left selected and not run), and must not signal before it. Its gate
  // callback then completes it as that job's finished fence signals.
  for (auto& job : pending) {
    // A backend that did not cancel (or a job detached by Stop): make sure the hardware fence
    // can never reach the freed job, and fail the job ourselves.
    if (!Ran(*job)) job->scheduled_->Signal();  // selected, never run (see Stop)
    // RemoveCallback is false both when the callback ran (it waits for it: finished is then
    // signalled) and when none was attached (a hardware fence ResubmitJobs gave while stopped,
    // attached only by Start): the latter must be failed here too, or Wait() below never returns.
    if (!job->finished_->IsSignaledFlag() &&
        (job->parent_ == nullptr || job->parent_->RemoveCallback(&job->hw_cb_) ||
         !job->finished_->IsSignaledFlag())) {
      JobDone(job.get(), absl::CancelledError("scheduler torn down"));
    }
    (void)job->finished_->Wait();  // signalled by now: by cancellation or by the callback
    absl::MutexLock f(&free_mu_);
    backend_->FreeJob(std::move(job));
  }
  // Then the killed jobs whose dependencies never signalled: fail them now rather than wait
  // forever (in kill order, so one entity's killed jobs complete in order).
  std::vector<std::unique_ptr<Job>> killed;
  {
    absl::MutexLock l(&killed_mu_);
    killed.swap(killed_);
    killed_count_.store(0, std::memory_order_relaxed);
  }
  for (auto& job : killed) {
    if (job->parent_ != nullptr && job->parent_->RemoveCallback(&job->hw_cb_)) {
      CompleteKilled(job.get());
    }
    (void)job->finished_->Wait();
    absl::MutexLock f(&free_mu_);
    backend_->FreeJob(std::move(job));
  }
}

}  // namespace sched
