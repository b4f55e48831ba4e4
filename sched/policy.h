// sched::Policy and sched::Priority — the order in which a scheduler considers its entities
// (drm_sched_policy, drm_sched_priority). A driver picks a policy per scheduler
// (SchedulerOptions::policy) and a priority per entity (Entity::Create, Entity::SetPriority).
//
// Policies (fair is the kernel's default since 2025 and ours):
//   kFair       — one queue ordered by virtual runtime: each entity's GPU time scaled by its
//                 priority (<< 1 KERNEL, 2 HIGH, 4 NORMAL, 7 LOW), so KERNEL gets about 2x the
//                 GPU time of HIGH, HIGH 4x NORMAL, NORMAL 8x LOW, and nobody starves. An entity
//                 that goes idle keeps its lead or lag relative to the queue's minimum; one that
//                 arrives fresh is placed by priority (a lower priority behind by about one
//                 average job, a higher one just ahead, an equal one just ahead if its jobs are
//                 shorter than the scheduler's average, else just behind).
//   kFifo       — priority levels KERNEL..LOW; within a level the entity whose head job was
//                 pushed first. Starves lower levels while higher ones have work.
//   kRoundRobin — priority levels; within a level the entity selected least recently.
// The scheduler picks the first *ready* entity in this order (sched/scheduler.h); if that
// entity's head job lacks credits it waits rather than fall through to the next one.
#ifndef UDRM_SCHED_POLICY_H_
#define UDRM_SCHED_POLICY_H_

namespace sched {

enum class Policy { kFair, kFifo, kRoundRobin };

// Lower values come first.
enum class Priority { kKernel = 0, kHigh = 1, kNormal = 2, kLow = 3 };

}  // namespace sched

#endif  // UDRM_SCHED_POLICY_H_
