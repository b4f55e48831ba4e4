// fence::internal::Waiter — a blocking wait on "something happened or a token was cancelled".
//
// Not a public API. A waiter is woken by Wake() (from a fence callback) or by the cancel token it
// was armed with. Wake() may be called from any thread, any number of times; it is safe to destroy
// the waiter as soon as Block() has returned and every fence callback that can call Wake() has been
// removed or has run (Fence::RemoveCallback guarantees the latter when it returns false).
#ifndef UDRM_FENCE_INTERNAL_WAITER_H_
#define UDRM_FENCE_INTERNAL_WAITER_H_

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/cancel.h"

namespace fence::internal {

class Waiter final : public udrm::CancelToken::Waker {
 public:
  explicit Waiter(const udrm::CancelToken* cancel) : cancel_(cancel) {}
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  ~Waiter() = default;

  // Wakes Block(). Memory ordering: release; Block() returning OK acquires it.
  void Wake() override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    woken_ = true;
  }

  // Blocks until Wake(), the deadline (DeadlineExceeded) or cancellation (Cancelled). `ready`
  // is re-checked after every wake-up, so Wake() may be spurious. Checks cancellation first.
  template <typename Ready>
  absl::Status Block(absl::Time deadline, Ready ready) ABSL_LOCKS_EXCLUDED(mu_) {
    bool registered = false;
    if (cancel_ != nullptr) {
      registered = cancel_->Register(this);
      if (!registered) return absl::CancelledError("wait cancelled");
    }
    absl::Status result = absl::OkStatus();
    for (;;) {
      if (ready()) break;
      mu_.Lock();
      mu_.AwaitWithDeadline(absl::Condition(&woken_), deadline);
      bool woken = woken_;
      woken_ = false;
      mu_.Unlock();
      if (ready()) break;
      if (cancel_ != nullptr && cancel_->cancelled()) {
        result = absl::CancelledError("wait cancelled");
        break;
      }
      if (!woken && absl::Now() >= deadline) {
        result = absl::DeadlineExceededError("wait timed out");
        break;
      }
    }
    if (registered) cancel_->Unregister(this);
    return result;
  }

 private:
  const udrm::CancelToken* const cancel_;
  absl::Mutex mu_;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fence::internal

#endif  // UDRM_FENCE_INTERNAL_WAITER_H_
