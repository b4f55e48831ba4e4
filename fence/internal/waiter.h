// fence::internal::Waiter — a blocking wait on "something happened or a token was cancelled".
//
// Not a public API. A waiter is woken by Wake() (from a fence callback) or by a stop request on
// the token it was armed with (a std::stop_callback registered for the duration of Block()). Wake() may be called from any thread, any number of times; it is safe to destroy
// the waiter as soon as Block() has returned and every fence callback that can call Wake() has been
// removed or has run (Fence::RemoveCallback guarantees the latter when it returns false).
#ifndef UDRM_FENCE_INTERNAL_WAITER_H_
#define UDRM_FENCE_INTERNAL_WAITER_H_

#include <optional>
#include <stop_token>
#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fence::internal {

class Waiter final {
 public:
  explicit Waiter(std::stop_token cancel) : cancel_(std::move(cancel)) {}
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  ~Waiter() = default;

  // Wakes Block(). Memory ordering: release; Block() returning OK acquires it.
  void Wake() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    woken_ = true;
  }

  // Blocks until Wake(), the deadline (DeadlineExceeded) or cancellation (Cancelled). `ready`
  // is re-checked after every wake-up, so Wake() may be spurious. Checks cancellation first.
  template <typename Ready>
  absl::Status Block(absl::Time deadline, Ready ready) ABSL_LOCKS_EXCLUDED(mu_) {
    if (cancel_.stop_requested()) return absl::CancelledError("wait cancelled");
    // Deregistered when Block returns; its destructor waits for a Wake() in progress on the
    // requesting thread. A request made meanwhile runs Wake() here, at once.
    std::optional<std::stop_callback<WakeOnStop>> on_stop;
    if (cancel_.stop_possible()) on_stop.emplace(cancel_, WakeOnStop{this});
    absl::Status result = absl::OkStatus();
    for (;;) {
      if (ready()) break;
      mu_.Lock();
      mu_.AwaitWithDeadline(absl::Condition(&woken_), deadline);
      bool woken = woken_;
      woken_ = false;
      mu_.Unlock();
      if (ready()) break;
      if (cancel_.stop_requested()) {
        result = absl::CancelledError("wait cancelled");
        break;
      }
      if (!woken && absl::Now() >= deadline) {
        result = absl::DeadlineExceededError("wait timed out");
        break;
      }
    }
    return result;
  }

 private:
  struct WakeOnStop {
    Waiter* waiter;
    void operator()() const { waiter->Wake(); }
  };

  const std::stop_token cancel_;
  absl::Mutex mu_;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fence::internal

#endif  // UDRM_FENCE_INTERNAL_WAITER_H_
