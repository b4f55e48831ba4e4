#include "sched/entity.h"

#include <utility>

#include "base/check.h"
#include "fence/fence_context.h"
#include "sched/internal/entity_stats.h"
#include "sched/internal/run_queue.h"
#include "sched/job.h"
#include "sched/scheduler.h"

namespace sched {
namespace {

absl::Status CheckList(const std::vector<Scheduler*>& schedulers) {
  if (schedulers.empty()) return absl::InvalidArgumentError("Entity needs at least one scheduler");
  for (Scheduler* s : schedulers) {
    if (s == nullptr) return absl::InvalidArgumentError("Entity scheduler list holds a null");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Entity>> Entity::Create(std::vector<Scheduler*> schedulers,
                                                       Priority priority,
                                                       std::shared_ptr<std::atomic<bool>> guilty) {
  if (absl::Status st = CheckList(schedulers); !st.ok()) return st;
  return std::unique_ptr<Entity>(new Entity(std::move(schedulers), priority, std::move(guilty)));
}

Entity::Entity(std::vector<Scheduler*> schedulers, Priority priority,
               std::shared_ptr<std::atomic<bool>> guilty)
    : priority_(priority),
      context_(fence::FenceContext::Allocate(2)),
      stats_(std::make_shared<internal::EntityStats>()),
      guilty_(std::move(guilty)),
      scheduler_(schedulers[0]),
      rq_entry_(std::make_unique<internal::RqEntry>(this, &priority_, stats_.get())) {
  // A list of one is used once and then forgotten, as the kernel does.
  if (schedulers.size() > 1) schedulers_ = std::move(schedulers);
}

Entity::~Entity() {
  (void)Flush(absl::Seconds(1));  // MAX_WAIT_SCHED_ENTITY_Q_EMPTY
  Kill();
  scheduler()->RemoveEntity(this);
}

Scheduler* Entity::scheduler() {
  absl::MutexLock l(&submit_mu_);
  return scheduler_;
}

void Entity::Kill() {
  Scheduler* s;
  std::vector<Scheduler::KilledJob> killed;
  {
    // The chain is linked under the submit lock: a push after it is chained behind these jobs.
    absl::MutexLock l(&submit_mu_);
    killed_ = true;  // no more migrations: the kill chain stays on one scheduler
    s = scheduler_;
    killed = s->KillEntity(this);
  }
  s->ArmKilled(std::move(killed));  // may signal fences: no lock of ours held
}

absl::StatusOr<absl::Duration> Entity::Flush(absl::Duration timeout) {
  return scheduler()->FlushEntity(this, timeout);
}

absl::Status Entity::ModifySched(std::vector<Scheduler*> schedulers) {
  if (absl::Status st = CheckList(schedulers); !st.ok()) return st;
  absl::MutexLock l(&submit_mu_);
  schedulers_ = std::move(schedulers);
  return absl::OkStatus();
}

absl::Status Entity::error() {
  // Guilty (Scheduler::IncreaseKarma): fail at once, before the guilty job completes, so that
  // new submissions are refused early.
  if (guilty_ != nullptr && guilty_->load(std::memory_order_acquire)) {
    return absl::CancelledError("entity is guilty (ECANCELED)");
  }
  return scheduler()->EntityError(this);
}

// drm_sched_entity_select_rq + drm_sched_pick_best.
Scheduler* Entity::SelectSchedulerLocked() {
  if (schedulers_.empty() || killed_) return scheduler_;
  if (!scheduler_->EntityMayMove(this)) return scheduler_;
  Scheduler* best = nullptr;
  for (Scheduler* s : schedulers_) {
    if (!s->ready()) continue;
    if (best == nullptr || s->score() < best->score()) best = s;
  }
  if (best != nullptr && best != scheduler_) {
    scheduler_->RemoveEntity(this);
    scheduler_ = best;
  }
  if (schedulers_.size() == 1) schedulers_.clear();
  return scheduler_;
}

}  // namespace sched
