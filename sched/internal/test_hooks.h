// sched::internal test hooks — injection points that let a test widen a race window
// deterministically. Compiled into every build, null by default: a hook costs one relaxed load
// where it is called. Only tests set them (before the race, and back to null afterwards).
#ifndef UDRM_SCHED_INTERNAL_TEST_HOOKS_H_
#define UDRM_SCHED_INTERNAL_TEST_HOOKS_H_

#include <atomic>

namespace sched::internal {

// Called by an entity's dependency callback after it marked the dependency signalled and before
// it wakes the scheduler (the window in which the scheduler may otherwise be destroyed).
inline std::atomic<void (*)()> dep_callback_hook{nullptr};

}  // namespace sched::internal

#endif  // UDRM_SCHED_INTERNAL_TEST_HOOKS_H_
