// sched::internal test hooks — injection points that let a test widen a race window
// deterministically. Compiled into every build, null by default: a hook costs one relaxed load
// where it is called. Only tests (and sched_bench's memory counts) set them, and back to null
// afterwards.
#ifndef UDRM_SCHED_INTERNAL_TEST_HOOKS_H_
#define UDRM_SCHED_INTERNAL_TEST_HOOKS_H_

#include <atomic>
#include <cstddef>

namespace sched::internal {

// Called by an entity's dependency callback after it marked the dependency signalled and before
// it wakes the scheduler (the window in which the scheduler may otherwise be destroyed).
inline std::atomic<void (*)()> dep_callback_hook{nullptr};

// Called by the work item in every round after it drained the inbox and took the finished jobs,
// right before it selects a job, with the scheduler's `mu_` held (so a hook must not call into
// that scheduler; pushing to its entities and signalling fences without a lock is fine).
// `queued_entities`: how many entities have queued jobs (the candidates of the selection).
inline std::atomic<void (*)(size_t queued_entities)> before_select_hook{nullptr};

// Called with the usable size of every block the jobs' allocator (job_memory.h) takes from
// oneTBB's scalable allocator (positive) or gives back to it (negative) — not for blocks from the
// global operator new, which a counting program sees itself. For memory measurements (sched_bench).
inline std::atomic<void (*)(long long bytes)> job_memory_hook{nullptr};

}  // namespace sched::internal

#endif  // UDRM_SCHED_INTERNAL_TEST_HOOKS_H_
