#include "sched/scheduler.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/spin.h"
#include "fence/unwrap.h"
#include "sched/entity.h"
#include "sched/internal/entity_stats.h"
#include "sched/internal/run_queue.h"
#include "sched/internal/tdr_timer.h"
#include "sched/internal/test_hooks.h"
#include "sched/job.h"
#include "sched/log.h"
#include "sched/sched_fence.h"

namespace sched {
namespace {

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
    : backend_(backend),
      options_(std::move(options)),
      rq_(std::make_unique<internal::RunQueue>(options_.policy)),
      own_executor_(options_.executor == nullptr ? std::make_unique<ThreadPoolExecutor>(1)
                                                 : nullptr),
      executor_(options_.executor != nullptr ? options_.executor : own_executor_.get()) {}

// drm_sched_fini.
Scheduler::~Scheduler() {
  ready_.store(false, std::memory_order_relaxed);
  {
    absl::MutexLock l(&mu_);
    UDRM_CHECK(rq_->empty() && inbox_.load(std::memory_order_relaxed) == nullptr,
               "Scheduler destroyed before its entities");
    stopping_ = true;
  }
  {
    absl::MutexLock l(&wake_mu_);
    exiting_ = true;  // no more posts; wait for the work item in flight
    wake_mu_.Await(absl::Condition(
        +[](Scheduler* s) { return s->work_.load(std::memory_order_relaxed) == Work::kIdle; },
        this));
  }
  internal::TdrTimer::Get().Clear(this);
  batch_.clear();  // jobs left over by a Stop: cancelled below
  CancelAndFreeAll();
  // A callback that signalled the last fence may still be on its way out (JobDone).
  while (callbacks_running_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

namespace {
thread_local const Scheduler* tls_running = nullptr;  // the scheduler whose work item runs here
}  // namespace

bool Scheduler::OnExecutorThread() const { return tls_running == this; }

void Scheduler::WakeUp() {
  if (OnExecutorThread()) {
    // A callback run by the work item itself (e.g. RunJob completing at once): RunWork checks
    // self_wake_ after the rounds, so wake_mu_ is not needed.
    self_wake_ = true;
    return;
  }
  // Lock-free unless the work item is idle. Every path ends in a read-modify-write of work_
  // (acq_rel): the work item's next transition out of kQueued or kRunningAgain (also an RMW)
  // reads after it, so the round that follows sees what the caller did before WakeUp (e.g. its
  // inbox push) — a plain load could read a stale state and lose the wake-up.
  Work w = work_.load(std::memory_order_relaxed);
  while (w != Work::kIdle) {
    const Work next = w == Work::kRunning ? Work::kRunningAgain : w;
    if (work_.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                    std::memory_order_relaxed)) {
      return;
    }
  }
  // Idle: only here, under wake_mu_, does the state leave kIdle.
  absl::MutexLock l(&wake_mu_);
  if (exiting_) return;
  w = work_.load(std::memory_order_relaxed);
  for (;;) {
    if (w == Work::kIdle) {
      work_.exchange(Work::kQueued, std::memory_order_acq_rel);
      executor_->Post([this] { RunWork(); });
      return;
    }
    const Work next = w == Work::kRunning ? Work::kRunningAgain : w;
    if (work_.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                    std::memory_order_relaxed)) {
      return;
    }
  }
}

void Scheduler::RunWork() {
  work_.exchange(Work::kRunning, std::memory_order_acq_rel);  // from kQueued (see WakeUp)
  const Scheduler* outer = std::exchange(tls_running, this);
  for (;;) {
    if (tdr_check_.exchange(false, std::memory_order_acquire)) HandleTimeout();
    RunRounds();
    if (std::exchange(self_wake_, false)) continue;
    // Before going idle, give a submitter idle_spin to wake us without a thread wake-up. A wake-up
    // seen here needs no lock (only this work item leaves kRunningAgain); going idle is decided
    // under wake_mu_.
    if (udrm::SpinUntil(options_.idle_spin, [this] {
          return work_.load(std::memory_order_relaxed) == Work::kRunningAgain;
        })) {
      work_.exchange(Work::kRunning, std::memory_order_acq_rel);
      continue;
    }
    absl::MutexLock l(&wake_mu_);
    Work running = Work::kRunning;
    if (!work_.compare_exchange_strong(running, Work::kIdle, std::memory_order_acq_rel,
                                       std::memory_order_relaxed)) {
      work_.exchange(Work::kRunning, std::memory_order_acq_rel);  // kRunningAgain: one more
      continue;
    }
    break;  // idle: the destructor may go ahead
  }
  tls_running = outer;
}

// Rounds of: free finished jobs, then select up to kMaxBatch jobs (one selection after the other,
// in policy order, each charging its credits) and run them in selection order — until a round
// does nothing. The end of one round and the start of the next share one hold of mu_.
void Scheduler::RunRounds() {
  std::vector<std::unique_ptr<Job>>& finished = to_free_;
  std::vector<Job*>& batch = batch_;
  std::vector<TraceRecord> records;
  mu_.Lock();
  while (!paused_) {
    in_work_ = true;
    // The credits this round's selection may use: those free now. Read before the drain, so
    // that every job whose Push returned before one of them was freed is in the inbox (the push's
    // release happens before JobDone's release of the credit, which this acquire load reads) and
    // is a candidate of the selection (scheduler.h). A credit freed after this load is left to
    // the next round, which JobDone's WakeUp guarantees.
    const uint32_t credits_in_use = credit_count_.load(std::memory_order_acquire);
    // Pushed jobs join their entities before finished jobs are accounted: an entity that
    // arrived before a completion is placed (fair policy) with the statistics of that moment,
    // as the kernel places it at push time.
    DrainInboxLocked();
    TakeFinishedLocked(finished);
    if (auto* hook = internal::before_select_hook.load(std::memory_order_relaxed)) {
      hook(rq_->entities().size());
    }
    // Each selection sees the credits charged by the ones before it (`charged`, and
    // credit_count_ for a Start run by a callback on this thread), never a credit freed during
    // the round (the jobs selected here run only after the round).
    uint64_t charged = 0;
    while (!stopping_ && !paused_ && batch.size() < kMaxBatch) {
      Job* job = PopReadyJobLocked(credits_in_use, charged);
      if (job == nullptr) break;
      batch.push_back(job);
    }
    // Progress restarts the timer: a job freed here, or a job handed to the backend (below,
    // after the batch ran: the timeout counts from the last hand-off, not from the selection).
    if (!finished.empty()) ArmTimerLocked();
    records.swap(trace_buf_);
    const int truncated = std::exchange(truncated_, 0);
    mu_.Unlock();
    if (!records.empty()) EmitBuffered(records);
    if (truncated > 0) {
      log::Write(log::Level::kWarn,  // never with a scheduler lock held (sched/log.h)
                 absl::StrCat(options_.name, ": ", truncated,
                              " job(s) asked for more credits than the limit ",
                              options_.credit_limit, "; truncated"));
    }
    std::vector<std::unique_ptr<Job>> killed = TakeKilledDone();
    if (!killed.empty() || !finished.empty()) {
      absl::MutexLock f(&free_mu_);
      for (auto& j : killed) backend_->FreeJob(std::move(j));
      for (auto& j : finished) backend_->FreeJob(std::move(j));
    }
    const size_t ran = RunBatch();
    const bool progress = !finished.empty() || !killed.empty() || ran > 0;
    finished.clear();
    records.clear();
    mu_.Lock();
    // After the round's last RunJob returned, so the timeout counts from the last hand-off: a
    // timer that fired during a slow batch finds the deadline moved (HandleTimeout returns).
    if (ran > 0) ArmTimerLocked();
    if (!progress) break;
    // A Fault() (or an expired timer) waits for the timeout handler, which runs between rounds:
    // end this pass so a stream of submissions that keeps every round busy cannot defer it.
    if (tdr_check_.load(std::memory_order_relaxed)) {
      self_wake_ = true;
      break;
    }
  }
  in_work_ = false;
  mu_.Unlock();
}

// Runs the batch in selection order. Stops before a job when the scheduler is being stopped (a
// Stop from a callback this loop ran, or one on another thread waiting for the round to end): the
// jobs not run stay in the batch (and on the pending list, where Stop and Start know them as not
// run) and run, still in order, once the scheduler is started again.
size_t Scheduler::RunBatch() {
  size_t i = 0;
  for (; i < batch_.size(); ++i) {
    // Acquire: pairs with Start's release (its credits_held_ writes before JobDone's reads).
    if (stop_requested_.load(std::memory_order_acquire)) break;
    Job* job = batch_[i];
    // A context found guilty since the job was selected (a recovery during the round): the job is
    // cancelled as at selection (PopHeadLocked), and still goes to the backend.
    auto& finished = static_cast<FinishedFence&>(*job->finished_);
    if (finished.selected() && job->guilty_ != nullptr &&
        job->guilty_->load(std::memory_order_acquire)) {
      finished.ClearSelected();
      finished.SetError(absl::CancelledError("entity is guilty (ECANCELED)"));
    }
    RunJob(job);
  }
  batch_.erase(batch_.begin(), batch_.begin() + static_cast<std::ptrdiff_t>(i));
  return i;
}

// Frees strictly in the order jobs went to the backend: only the head of the pending list.
void Scheduler::TakeFinishedLocked(std::vector<std::unique_ptr<Job>>& out) {
  while (!pending_.empty() && pending_.front()->finished_->IsSignaledFlag()) {
    AccountLocked(*pending_.front());
    out.push_back(std::move(pending_.front()));
    pending_.pop_front();
  }
}

// The free worker's accounting for the fair policy: the job's time on the ring, which began when
// it was scheduled or, if it was pipelined behind the previous job, when that one ended.
void Scheduler::AccountLocked(Job& job) {
  const int64_t end = job.finished_->timestamp_ns();
  int64_t start = job.scheduled_->IsSignaledFlag() ? job.scheduled_->timestamp_ns() : end;
  start = std::max(start, last_freed_end_ns_);
  last_freed_end_ns_ = end;
  // A job that completed at once (RunJob returned no hardware fence) has one timestamp for both
  // fences: it is charged the minimum, so that its entity's virtual runtime still grows.
  const int64_t d = internal::JobChargeNs(start, end);
  job.stats_->AddJobTimeNs(d);
  avg_job_qns_ = internal::UpdateAverageQns(avg_job_qns_, d);
}

// drm_sched_job_dependency + drm_sched_entity_add_dependency_cb, in a loop over the head job's
// dependencies and then PrepareJob, without mu_: polling a fence (IsSignaled) or adding a
// callback may signal it and run its user callbacks on this thread. Returns null when nothing is
// left to wait for, or the fence the entity's callback now waits on; sets `behind_selected` (and
// returns null) when a dependency is a job this work item selected and has not run yet.
fence::FenceRef Scheduler::ResolveDependencies(Entity* e, Job& job, bool& behind_selected) {
  // The fences are looked at through raw pointers, and a reference is taken only to the one the
  // entity then waits on: the job, its entity's head, keeps its dependencies alive meanwhile
  // (KillEntity waits for preparing_), and `prepared` the one PrepareJob returned. A dependency
  // costs no reference-count round trip (two before: the copy out of deps_ and the scheduled
  // twin's).
  fence::FenceRef prepared;
  for (;;) {
    const fence::FenceRef* owner;  // the reference that keeps the dependency alive
    bool from_deps = false;
    if (job.next_dep_ == 0) {
      // The entity's cancelled previous job (sched/job.h): the same context, yet never queued,
      // so neither skipped nor pipelined.
      job.next_dep_ = 1;
      if (job.order_after_ == nullptr) continue;
      owner = &job.order_after_;
    } else if (job.next_dep_ - 1 < job.deps_.size()) {
      owner = &job.deps_[job.next_dep_++ - 1];
      from_deps = true;
      // The same entity: entity order already serialises them.
      const uint64_t c = (*owner)->context();
      if (c == e->context_ || c == e->context_ + 1) continue;
    } else {
      prepared = backend_->PrepareJob(job);  // once per fence it returned, then a final null
      if (prepared == nullptr) return nullptr;
      owner = &prepared;
      const uint64_t c = prepared->context();
      if (c == e->context_ || c == e->context_ + 1) continue;
    }
    fence::Fence* dep = owner->get();
    // The same scheduler: the ring runs jobs in order, so being scheduled is enough — unless the
    // dependency failed or asked not to be pipelined. A job this work item has already selected
    // counts as scheduled: it reaches RunJob (and its scheduled fence signals) before any job
    // selected after it, this one included (drm_sched_entity_add_dependency_cb, without the
    // callback). A job this work item has selected and not yet run (FinishedFence::selected)
    // will be scheduled before any job selected after it: a dependency in deps_ on it ends the
    // round's selection here, the job staying its entity's head (and the dependency to be
    // checked again), and the next round, after the dependency's RunJob, finds it scheduled —
    // no callback, and PrepareJob still comes after the dependency's RunJob (backend.h). A
    // fence PrepareJob returned cannot be asked for again: it is waited for (its scheduled
    // fence) like any other. Only a job that was not given an error at selection (a guilty
    // entity's) is marked selected (PopHeadLocked), and the mark is cleared when it runs
    // (RunJob): afterwards its scheduled fence and its error decide, so a job that failed or was
    // resubmitted with an error is waited for until it finishes.
    bool scheduled_twin = false;
    if (FinishedFence* f = FinishedFence::Cast(dep);
        f != nullptr && dep != job.order_after_.get() && f->scheduler() == this &&
        !f->dont_pipeline()) {
      if (f->selected() && from_deps) {
        --job.next_dep_;
        behind_selected = true;
        return nullptr;
      }
      if (f->error().ok()) {
        dep = &f->scheduled_;
        scheduled_twin = true;
      }
    }
    if (dep->IsSignaled()) continue;
    e->dep_signaled_.store(false, std::memory_order_relaxed);
    absl::Status st = dep->AddCallback(&e->dep_cb_, [this, e](fence::Fence&) {
      // Counted before the store: once the work item sees the store, the entity and then the
      // scheduler may go away, and the destructor waits for this count (see JobDone).
      callbacks_running_.fetch_add(1, std::memory_order_relaxed);
      e->dep_signaled_.store(true, std::memory_order_release);  // last touch of the entity
      if (auto* hook = internal::dep_callback_hook.load(std::memory_order_relaxed)) hook();
      WakeUp();
      callbacks_running_.fetch_sub(1, std::memory_order_release);
    });
    if (fence::IsAlreadySignaled(st)) continue;
    if (scheduled_twin) return FinishedFence::ScheduledOf(*owner);
    return owner == &prepared ? std::move(prepared) : *owner;
  }
}

// drm_sched_select_entity + drm_sched_entity_pop_job: the first ready entity in the run queue's
// order (no dependency callback pending), if its head job's credits are available; then its
// dependencies and PrepareJob, with mu_ released (preparing_ keeps a kill of the entity out);
// if it must wait for one, the next entity is tried. `credits_in_use`: credit_count_ as read
// before the round's drain (RunRounds); `charged`: the credits this round's selections charged so
// far. Credits freed since then are left to the next round (the contract in scheduler.h), even
// when a completion during the round lowered credit_count_ below what the round charged; credits
// charged since then by others (Start, from a callback run on this thread while mu_ is released)
// still count: the check uses the larger of the two.
Job* Scheduler::PopReadyJobLocked(uint32_t credits_in_use, uint64_t& charged) {
  for (;;) {
    internal::RqEntry* best_entry = nullptr;
    for (internal::RqEntry* r : rq_->entities()) {
      Entity* e = r->entity;
      if (e->dep_pending_) {
        if (!e->dep_signaled_.load(std::memory_order_acquire)) continue;
        e->dep_pending_ = false;
        e->dep_fence_ = nullptr;
      }
      if (best_entry == nullptr || rq_->Before(*r, *best_entry)) best_entry = r;
    }
    if (best_entry == nullptr) return nullptr;
    Entity* best = best_entry->entity;
    Job& head = *best->queue_.front();
    // drm_sched_can_queue: a job above the limit is truncated so that it can ever run; if the
    // credits are not there, wait for them (JobDone wakes us) rather than skip this entity.
    if (head.credits_ > options_.credit_limit) {
      head.credits_ = options_.credit_limit;
      ++truncated_;
    }
    const uint64_t in_use = std::max<uint64_t>(credits_in_use + charged,
                                               credit_count_.load(std::memory_order_relaxed));
    if (in_use > options_.credit_limit || options_.credit_limit - in_use < head.credits_) {
      if (!head.unschedulable_traced_) {
        head.unschedulable_traced_ = true;
        TraceLocked(TraceEvent::kUnschedulable, *head.finished_);
      }
      return nullptr;
    }
    // Only this work item pops or charges credits, and KillEntity waits for preparing_: the head
    // and the credit check stay valid while mu_ is released.
    preparing_ = best;
    mu_.Unlock();
    bool behind_selected = false;
    fence::FenceRef wait = ResolveDependencies(best, head, behind_selected);
    mu_.Lock();
    preparing_ = nullptr;
    if (behind_selected) return nullptr;  // the next round selects it (ResolveDependencies)
    if (wait != nullptr) {
      TraceLocked(TraceEvent::kAddDependency, *head.finished_, wait.get());
      best->dep_fence_ = std::move(wait);
      best->dep_pending_ = true;
      continue;
    }
    Job* job = PopHeadLocked(best);
    charged += job->credits_;
    return job;
  }
}

Job* Scheduler::PopHeadLocked(Entity* best) {
  Job& head = *best->queue_.front();
  // Popped even after a Stop while the head job's dependencies were resolved (from PrepareJob or
  // a dependency's callback on this thread, or a Stop on another thread waiting for the round):
  // the job then is one selected and not run, as those the Stop found (see Stop), and holds no
  // credits until Start charges them. The job's own flag says whether its credits are held.
  if (!paused_) {
    credit_count_.fetch_add(head.credits_, std::memory_order_relaxed);
    head.credits_held_ = true;
  }
  std::unique_ptr<Job> job = std::move(best->queue_.front());
  best->queue_.pop_front();
  best->queued_.fetch_sub(1, std::memory_order_relaxed);
  // A guilty context's jobs are cancelled, but still go to the backend (which should skip them).
  if (job->guilty_ != nullptr && job->guilty_->load(std::memory_order_acquire)) {
    job->finished_->SetError(absl::CancelledError("entity is guilty (ECANCELED)"));
  } else {
    static_cast<FinishedFence&>(*job->finished_).MarkSelected();  // see ResolveDependencies
  }
  best->last_scheduled_ = job->finished_;
  rq_->OnPop(best->rq_entry_.get(),
             best->queue_.empty() ? std::nullopt
                                  : std::optional<uint64_t>(best->queue_.front()->submit_stamp_));
  UpdateRqSizeLocked();
  job->entity_ = nullptr;  // after pop the job no longer reaches its entity
  Job* raw = job.get();
  pending_.push_back(std::move(job));
  return raw;
}

void Scheduler::AttachHardwareFence(Job* job, const absl::Status& fallback) {
  absl::Status st = job->parent_->AddCallback(
      &job->hw_cb_, [this, job](fence::Fence& f) { JobDone(job, f.error()); });
  if (fence::IsAlreadySignaled(st)) {
    absl::Status error = job->parent_->error();
    JobDone(job, error.ok() ? fallback : error);
  }
}

void Scheduler::RunJob(Job* job) {
  Trace(TraceEvent::kRun, *job->finished_);
  running_.store(job, std::memory_order_relaxed);  // for a Stop on this thread (see Stop)
  absl::StatusOr<fence::FenceRef> hw = backend_->RunJob(*job);
  if (hw.ok() && *hw != nullptr) {  // the parent is set before `scheduled` signals
    job->parent_ = *hw;
    static_cast<FinishedFence&>(*job->finished_).SetParent(*hw);
  }
  // The selected mark only shortcuts dependants within this batch (ResolveDependencies).
  static_cast<FinishedFence&>(*job->finished_).ClearSelected();
  // One clock read for both fences when the job completes at once (RunJob returned no hardware
  // fence, or an error): it did so by the time of this read.
  const absl::Time now = absl::Now();
  job->scheduled_->SignalWithTimestamp(now);
  // running_ is cleared before anything can signal `finished`: a Stop from a callback of it is
  // not one inside this RunJob.
  running_.store(nullptr, std::memory_order_relaxed);
  // A Stop on this thread since RunJob began (inside the backend's RunJob or a callback of
  // `scheduled`) kept the job on the pending list for this RunJob to settle (see Stop). The job
  // was handed to the hardware, so it ends as Stop leaves the others (drm_sched_stop): one whose
  // hardware fence — parent_, the one RunJob returned or one a ResubmitJobs from a callback of
  // `scheduled` gave it — has signalled completes with that fence's status, as Stop completes a
  // job whose fence callback already ran; one whose fence has not signalled is detached — the
  // reference dropped (a resubmitted one kept, for Start to attach), no callback attached, its
  // credits returned — for ResubmitJobs to run again or Start to fail; a job that completed at
  // once completes. Then it is settled: PendingSnapshot on another thread waits for that
  // (acquire).
  if (stopped_in_run_.load(std::memory_order_relaxed)) {
    if (!hw.ok() || *hw == nullptr) {
      JobDone(job, hw.ok() ? absl::OkStatus() : hw.status(), &now);
    } else if (job->parent_ != nullptr && job->parent_->IsSignaled()) {  // polls a backend fence
      // Signalled after `now` was read, maybe: JobDone reads the clock for `finished`.
      const absl::Status error = job->parent_->error();
      JobDone(job, error);
    } else {
      ReturnCredits(*job);
      if (job->parent_ == *hw) job->parent_ = nullptr;
    }
    stopped_in_run_.store(false, std::memory_order_release);
    return;
  }
  if (!hw.ok()) return JobDone(job, hw.status(), &now);
  if (*hw == nullptr) return JobDone(job, absl::OkStatus(), &now);
  AttachHardwareFence(job, absl::OkStatus());
}

// drm_sched_job_done: may run on any thread (the one signalling the hardware fence). It must not
// touch the job after signalling `finished`: the executor may free it right away; and the
// scheduler itself may be torn down as soon as the last finished fence signalled, so the
// destructor waits for `callbacks_running_` to drop to zero, its last touch.
void Scheduler::JobDone(Job* job, absl::Status status, const absl::Time* now) {
  callbacks_running_.fetch_add(1, std::memory_order_relaxed);
  const fence::FenceRef finished = job->finished_;
  Trace(TraceEvent::kDone, *finished);
  // Held unless the job was never charged (teardown of a job a Stop left detached).
  ReturnCredits(*job);
  jobs_score_.fetch_sub(1, std::memory_order_relaxed);
  if (!status.ok()) finished->SetError(std::move(status));
  finished->SignalWithTimestamp(now != nullptr ? *now : absl::Now());
  WakeUp();
  callbacks_running_.fetch_sub(1, std::memory_order_release);
}

}  // namespace sched
