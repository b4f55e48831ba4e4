#include "sched/entity.h"

#include "base/check.h"
#include "fence/fence_context.h"
#include "sched/job.h"
#include "sched/scheduler.h"

namespace sched {

absl::StatusOr<std::unique_ptr<Entity>> Entity::Create(std::vector<Scheduler*> schedulers,
                                                       Priority priority) {
  if (schedulers.empty() || schedulers[0] == nullptr) {
    return absl::InvalidArgumentError("Entity needs at least one scheduler");
  }
  return std::unique_ptr<Entity>(new Entity(schedulers[0], priority));
}

Entity::Entity(Scheduler* scheduler, Priority priority)
    : scheduler_(scheduler), priority_(priority), context_(fence::FenceContext::Allocate(2)) {}

Entity::~Entity() {
  (void)Flush(absl::Seconds(1));  // MAX_WAIT_SCHED_ENTITY_Q_EMPTY
  Kill();
  scheduler_->RemoveEntity(this);
}

void Entity::Kill() { scheduler_->KillEntity(this); }

absl::StatusOr<absl::Duration> Entity::Flush(absl::Duration timeout) {
  return scheduler_->FlushEntity(this, timeout);
}

}  // namespace sched
