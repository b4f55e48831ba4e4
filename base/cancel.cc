#include "base/cancel.h"

#include "base/check.h"

namespace udrm {

CancelToken::~CancelToken() {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(head_ == nullptr, "CancelToken destroyed while a wait still uses it");
}

void CancelToken::Cancel() {
  absl::MutexLock l(&mu_);
  if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
  // Wakers run under mu_, so Unregister() (which takes mu_) cannot return while one runs.
  for (Waker* w = head_; w != nullptr; w = w->next_) w->Wake();
}

bool CancelToken::Register(Waker* w) const {
  absl::MutexLock l(&mu_);
  if (cancelled_.load(std::memory_order_relaxed)) return false;
  w->prev_ = nullptr;
  w->next_ = head_;
  if (head_ != nullptr) head_->prev_ = w;
  head_ = w;
  return true;
}

void CancelToken::Unregister(Waker* w) const {
  absl::MutexLock l(&mu_);
  if (w->prev_ != nullptr) {
    w->prev_->next_ = w->next_;
  } else if (head_ == w) {
    head_ = w->next_;
  }
  if (w->next_ != nullptr) w->next_->prev_ = w->prev_;
  w->next_ = w->prev_ = nullptr;
}

}  // namespace udrm
