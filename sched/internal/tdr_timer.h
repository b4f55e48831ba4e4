// sched::internal::TdrTimer — one process-wide thread that fires the schedulers' timeout (TDR)
// deadlines (the kernel's delayed work_tdr on a timeout workqueue).
//
// Each key (a scheduler) has at most one deadline; Set replaces it, InfiniteFuture clears it.
// At the deadline `fire` runs on the timer thread with the timer's lock held, so it must be
// short and must not call back into the timer; Clear waits for a `fire` of that key in progress,
// after which it never runs again for that key until the next Set.
//
// Lifetime: a function-local static, created on first use, never destroyed (it may be used
// from static destructors of schedulers).
// Thread-safety: all methods from any thread.
#ifndef UDRM_SCHED_INTERNAL_TDR_TIMER_H_
#define UDRM_SCHED_INTERNAL_TDR_TIMER_H_

#include <map>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sched::internal {

class TdrTimer {
 public:
  static TdrTimer& Get();

  void Set(const void* key, absl::Time deadline, absl::AnyInvocable<void()> fire)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Clear(const void* key) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    absl::Time deadline;
    absl::AnyInvocable<void()> fire;
  };
  TdrTimer();
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Time EarliestLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<const void*, Entry> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t seen_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace sched::internal

#endif  // UDRM_SCHED_INTERNAL_TDR_TIMER_H_
