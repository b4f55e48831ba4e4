#include "sched/internal/tdr_timer.h"

#include <utility>
#include <vector>

#include "absl/time/clock.h"

namespace sched::internal {

TdrTimer& TdrTimer::Get() {
  static TdrTimer* timer = new TdrTimer();  // never destroyed: see the header
  return *timer;
}

TdrTimer::TdrTimer() : thread_([this] { Loop(); }) { thread_.detach(); }

void TdrTimer::Set(const void* key, absl::Time deadline, absl::AnyInvocable<void()> fire) {
  absl::MutexLock l(&mu_);
  if (deadline == absl::InfiniteFuture()) {
    entries_.erase(key);
  } else {
    entries_[key] = Entry{deadline, std::move(fire)};
  }
  ++version_;
}

void TdrTimer::Clear(const void* key) {
  absl::MutexLock l(&mu_);  // a fire in progress holds mu_: this waits for it
  entries_.erase(key);
  ++version_;
}

absl::Time TdrTimer::EarliestLocked() const {
  absl::Time t = absl::InfiniteFuture();
  for (const auto& [key, e] : entries_) t = std::min(t, e.deadline);
  return t;
}

void TdrTimer::Loop() {
  absl::MutexLock l(&mu_);
  for (;;) {
    seen_ = version_;
    mu_.AwaitWithDeadline(
        absl::Condition(
            +[](TdrTimer* t) ABSL_NO_THREAD_SAFETY_ANALYSIS { return t->version_ != t->seen_; },
            this),
        EarliestLocked());
    const absl::Time now = absl::Now();
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      absl::AnyInvocable<void()> fire = std::move(it->second.fire);
      it = entries_.erase(it);
      fire();  // under mu_, so that Clear waits for it
    }
  }
}

}  // namespace sched::internal
