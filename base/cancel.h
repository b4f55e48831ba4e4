// udrm::CancelToken — user-space stand-in for a signal interrupting a kernel wait (-ERESTARTSYS).
//
// What it is: a one-shot flag that any thread may raise with Cancel(). Interruptible waits in udrm
// (fence waits, ww-mutex locks, resv waits) take an optional `const CancelToken*`; when the token is
// cancelled they stop waiting and return absl::CancelledError.
//
// Lifetime: the token must outlive every wait that was given it. Cancel() is permanent.
//
// Thread-safety: every method may be called from any thread at any time.
//
// Memory ordering: writes made before Cancel() are visible to a thread after cancelled() returns
// true, and to a thread whose wait returned CancelledError.
#ifndef UDRM_BASE_CANCEL_H_
#define UDRM_BASE_CANCEL_H_

#include <atomic>

#include "absl/synchronization/mutex.h"

namespace udrm {

class CancelToken {
 public:
  // A waker is registered by a wait for its duration; Wake() is called once, from Cancel(), with
  // no udrm lock held by the cancelling thread other than the token's own.
  class Waker {
   public:
    virtual void Wake() = 0;

   protected:
    ~Waker() = default;

   private:
    friend class CancelToken;
    Waker* next_ = nullptr;
    Waker* prev_ = nullptr;
  };

  CancelToken() = default;
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;
  ~CancelToken();

  // Raises the flag and wakes every registered waiter. Idempotent. Does not block on waiters.
  void Cancel() ABSL_LOCKS_EXCLUDED(mu_);

  // Non-blocking. Memory ordering: acquire.
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // Registers `w` to be woken by Cancel(). Returns false (and does not register) when the token is
  // already cancelled. A registered waker must be removed with Unregister() before it is destroyed;
  // Unregister() waits for a Wake() in progress on it to return.
  bool Register(Waker* w) const ABSL_LOCKS_EXCLUDED(mu_);
  void Unregister(Waker* w) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  std::atomic<bool> cancelled_{false};
  mutable absl::Mutex mu_;
  mutable Waker* head_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace udrm

#endif  // UDRM_BASE_CANCEL_H_
