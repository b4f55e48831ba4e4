// Bounded spin-waiting: udrm::CpuRelax (the spin-wait hint: x86 PAUSE, nothing elsewhere) and
// udrm::SpinUntil, which polls a predicate for a bounded time before the caller falls back to
// blocking — for hand-offs that usually complete within microseconds, where a sleep and a
// futex wake-up cost more than the wait.
#ifndef UDRM_BASE_SPIN_H_
#define UDRM_BASE_SPIN_H_

#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace udrm {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls `done()` with CpuRelax() between polls until it returns true (true) or about `budget`
// has passed (false; the clock is read every 64 polls). A non-positive budget polls once.
template <typename Done>
bool SpinUntil(absl::Duration budget, Done done) {
  if (budget <= absl::ZeroDuration()) return done();
  const int64_t until = absl::GetCurrentTimeNanos() + absl::ToInt64Nanoseconds(budget);
  for (int i = 1;; ++i) {
    if (done()) return true;
    CpuRelax();
    if (i % 64 == 0 && absl::GetCurrentTimeNanos() >= until) return done();
  }
}

}  // namespace udrm

#endif  // UDRM_BASE_SPIN_H_
