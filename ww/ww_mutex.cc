#include "ww/ww_mutex.h"

#include <cstdlib>
#include <limits>
#include <optional>

#include "base/check.h"
#include "base/spin.h"
#include "base/status_tag.h"

namespace ww {
namespace {

absl::Status BackoffError() {
  return udrm::WithTag(absl::AbortedError("ww_mutex: back off (EDEADLK)"),
                       udrm::StatusTag::kBackoff);
}

absl::Status AlreadyHeldError() {
  return udrm::WithTag(
      absl::AlreadyExistsError("ww_mutex: already held by this context (EALREADY)"),
      udrm::StatusTag::kAlreadyHeld);
}

std::atomic<bool>& InjectionFlag() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("UDRM_WW_SLOWPATH_INJECTION");
    return env != nullptr && env[0] != '\0' && std::string_view(env) != "0";
  }()};
  return flag;
}

}  // namespace

namespace internal {

// A blocked locker, on its own stack, linked into the mutex's queue under the mutex's mu_.
struct Waiter {
  WaitNode* node;
  WwAcquireContext* ctx;  // null for a plain lock
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
};

// A WaitNode's waker for a std::stop_callback.
struct WakeOnStop {
  WaitNode* node;
  void operator()() const { node->Wake(); }
};

void WaitNode::Wake() {
  absl::MutexLock l(&mu_);
  woken_.store(true, std::memory_order_release);
}

void WaitNode::Sleep() {
  // Long enough to catch a short hold time, short enough not to steal the holder's CPU when
  // threads outnumber cores: 2000 spins made 16 threads on 2 cores 3x slower (exec_bench).
  constexpr int kSpins = 128;
  for (int i = 0; i < kSpins && !Woken(); ++i) udrm::CpuRelax();
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(this, &WaitNode::Woken));
  woken_.store(false, std::memory_order_relaxed);
}

}  // namespace internal

bool IsBackoff(const absl::Status& s) { return udrm::HasTag(s, udrm::StatusTag::kBackoff); }

bool IsAlreadyHeld(const absl::Status& s) { return udrm::HasTag(s, udrm::StatusTag::kAlreadyHeld); }

void SetSlowpathInjection(bool on) { InjectionFlag().store(on, std::memory_order_relaxed); }
bool SlowpathInjection() { return InjectionFlag().load(std::memory_order_relaxed); }

WwAcquireContext::WwAcquireContext(WwClass* ww_class, bool inject)
    : class_(ww_class),
      stamp_(ww_class->stamp_.fetch_add(1, std::memory_order_relaxed) + 1),
      inject_(inject && SlowpathInjection()),
      inject_countdown_(static_cast<uint32_t>(stamp_ & 0xf)) {}

WwAcquireContext::~WwAcquireContext() {
  if (!finished_) Fini();
}

void WwAcquireContext::Fini() {
  UDRM_CHECK(!finished_, "WwAcquireContext finished twice");
  UDRM_CHECK(acquired() == 0, "WwAcquireContext finished while it still holds locks");
  finished_ = true;
}

WwMutex::~WwMutex() {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(!locked_, "WwMutex destroyed while locked");
  UDRM_CHECK(head_ == nullptr, "WwMutex destroyed with waiters");
}

void WwMutex::CheckCanLock(const WwAcquireContext* ctx, bool slow) const {
  if (ctx == nullptr) return;
  UDRM_CHECK(ctx->class_ == class_, "WwMutex locked with a context of another WwClass");
  UDRM_CHECK(!ctx->done_, "WwMutex locked after WwAcquireContext::Done()");
  UDRM_CHECK(!ctx->finished_, "WwMutex locked with a finished WwAcquireContext");
  if (slow) UDRM_CHECK(ctx->acquired() == 0, "LockSlow while the context still holds locks");
  if (ctx->contending_lock_ != nullptr) {
    UDRM_DCHECK(ctx->contending_lock_ == this,
                "after a back-off, the next lock must be the contended mutex");
    UDRM_DCHECK(ctx->acquired() == 0, "after a back-off, release every lock before retrying");
  }
}

absl::Status WwMutex::Lock(WwAcquireContext* ctx) { return LockCommon(ctx, {}, false); }

absl::Status WwMutex::LockInterruptible(WwAcquireContext* ctx, std::stop_token cancel) {
  return LockCommon(ctx, cancel, false);
}

void WwMutex::LockSlow(WwAcquireContext* ctx) {
  absl::Status st = LockCommon(ctx, {}, true);
  UDRM_CHECK(st.ok(), "LockSlow failed: a context holding no locks cannot be told to back off");
}

absl::Status WwMutex::LockSlowInterruptible(WwAcquireContext* ctx, std::stop_token cancel) {
  return LockCommon(ctx, cancel, true);
}

void WwMutex::AcquireLocked(WwAcquireContext* ctx) {
  locked_ = true;
  locked_flag_.store(true, std::memory_order_relaxed);
  owner_ctx_ = ctx;
  if (ctx != nullptr) {
    ctx->contending_lock_ = nullptr;
    ctx->acquired_.fetch_add(1, std::memory_order_relaxed);
  }
}

absl::Status WwMutex::LockCommon(WwAcquireContext* ctx, const std::stop_token& cancel,
                                 bool slow) {
  CheckCanLock(ctx, slow);
  {
    absl::MutexLock l(&mu_);
    if (ctx != nullptr) {
      if (owner_ctx_ == ctx) return AlreadyHeldError();
      if (ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
    }
    if (!locked_ && head_ == nullptr) {
      AcquireLocked(ctx);
    } else {
      internal::WaitNode local;
      internal::Waiter w{ctx != nullptr ? &ctx->node_ : &local, ctx};
      absl::Status st = WaitLocked(&w, cancel);
      if (!st.ok()) return st;
    }
  }
  if (!slow && ctx != nullptr && ctx->acquired() > 1) return MaybeInjectBackoff(ctx);
  return absl::OkStatus();
}

// Queues `w`, then sleeps until the mutex is handed to it, it must back off, or it is cancelled.
absl::Status WwMutex::WaitLocked(internal::Waiter* w, const std::stop_token& cancel) {
  absl::Status st = AddWaiterLocked(w);
  if (!st.ok()) return st;
  // A stop request wakes the node (at once, here, if one was made already). Lock order: a
  // WwMutex's mu_, then a WaitNode's (a stop request takes only the latter); destroying the
  // callback at the end waits for a Wake() in progress on the requesting thread.
  std::optional<std::stop_callback<internal::WakeOnStop>> on_stop;
  if (cancel.stop_possible()) on_stop.emplace(cancel, internal::WakeOnStop{w->node});
  for (;;) {
    if (!locked_ && head_ == w) {
      RemoveWaiterLocked(w);
      AcquireLocked(w->ctx);
      break;
    }
    if (cancel.stop_requested()) {
      st = absl::CancelledError("lock interrupted");
    } else if (w->ctx != nullptr) {
      st = CheckKillLocked(w);
    }
    if (!st.ok()) {
      RemoveWaiterLocked(w);
      // A free mutex passes to the new first waiter. (Waiters behind only gain from our leaving.)
      if (!locked_ && head_ != nullptr) head_->node->Wake();
      break;
    }
    mu_.Unlock();
    w->node->Sleep();
    mu_.Lock();
  }
  return st;
}

// __ww_mutex_add_waiter: plain waiters go last; context waiters go before the first younger
// context waiter (plain waiters are skipped). Wait-Die: a context holding locks that finds an
// older context queued backs off at once, and younger waiters passed over are told to die.
// Wound-Wait: a context holding locks that queues behind a younger holder wounds it.
absl::Status WwMutex::AddWaiterLocked(internal::Waiter* w) {
  internal::Waiter* pos = nullptr;  // insert before this one; null: at the tail
  if (w->ctx != nullptr) {
    for (internal::Waiter* cur = tail_; cur != nullptr; cur = cur->prev) {
      if (cur->ctx == nullptr) continue;
      if (WwAcquireContext::IsYounger(*w->ctx, *cur->ctx)) {
        if (class_->is_wait_die()) {
          absl::Status st = Kill(w->ctx);
          if (!st.ok()) return st;
        }
        break;
      }
      pos = cur;
      // __ww_mutex_die: a younger waiter holding locks must die; it decides when woken.
      if (class_->is_wait_die() && cur->ctx->acquired() > 0) cur->node->Wake();
    }
  }
  w->next = pos;
  w->prev = pos != nullptr ? pos->prev : tail_;
  if (w->prev != nullptr) {
    w->prev->next = w;
  } else {
    head_ = w;
  }
  if (pos != nullptr) {
    pos->prev = w;
  } else {
    tail_ = w;
  }
  ++waiters_;
  if (w->ctx != nullptr && !class_->is_wait_die()) WoundHolderLocked(w->ctx);
  return absl::OkStatus();
}

void WwMutex::RemoveWaiterLocked(internal::Waiter* w) {
  if (w->prev != nullptr) {
    w->prev->next = w->next;
  } else {
    head_ = w->next;
  }
  if (w->next != nullptr) {
    w->next->prev = w->prev;
  } else {
    tail_ = w->prev;
  }
  --waiters_;
  w->prev = w->next = nullptr;
}

// __ww_mutex_wound: an older waiter holding locks wounds a younger holder and wakes it, so that
// it backs off if it is (or next gets) blocked while holding locks.
void WwMutex::WoundHolderLocked(WwAcquireContext* waiter_ctx) {
  WwAcquireContext* holder = owner_ctx_;
  if (holder == nullptr || holder == waiter_ctx || waiter_ctx->acquired() == 0) return;
  if (!WwAcquireContext::IsYounger(*holder, *waiter_ctx)) return;
  holder->wounded_.store(true, std::memory_order_relaxed);
  holder->node_.Wake();  // the holder cannot release us (it needs mu_), so it is alive
}

// __ww_mutex_check_kill: may this waiter keep waiting?
absl::Status WwMutex::CheckKillLocked(internal::Waiter* w) {
  WwAcquireContext* ctx = w->ctx;
  if (ctx->acquired() == 0) return absl::OkStatus();
  if (!class_->is_wait_die()) {
    return ctx->wounded_.load(std::memory_order_relaxed) ? Kill(ctx) : absl::OkStatus();
  }
  if (owner_ctx_ != nullptr && WwAcquireContext::IsYounger(*ctx, *owner_ctx_)) return Kill(ctx);
  for (internal::Waiter* cur = w->prev; cur != nullptr; cur = cur->prev) {
    if (cur->ctx != nullptr) return Kill(ctx);  // an older context is queued ahead of us
  }
  return absl::OkStatus();
}

absl::Status WwMutex::Kill(WwAcquireContext* ctx) {
  if (ctx->acquired() == 0) return absl::OkStatus();
  ctx->contending_lock_ = this;
  return BackoffError();
}

// ww_mutex_deadlock_injection: after a successful lock that is not the context's first.
absl::Status WwMutex::MaybeInjectBackoff(WwAcquireContext* ctx) {
  if (!ctx->inject_ || ctx->inject_countdown_-- != 0) return absl::OkStatus();
  uint32_t interval = ctx->inject_interval_;
  interval = interval > std::numeric_limits<uint32_t>::max() / 4
                 ? std::numeric_limits<uint32_t>::max()
                 : interval * 2 + interval + interval / 2;
  ctx->inject_interval_ = interval;
  ctx->inject_countdown_ = interval;
  Unlock();
  ctx->contending_lock_ = this;
  return BackoffError();
}

// ww_mutex_trylock: a context holding no locks starts afresh (a wound from its last transaction
// is stale); a successful trylock is an acquire like any other, so it is checked against the
// waiters that are already queued (ww_mutex_set_context_fastpath).
bool WwMutex::TryLock(WwAcquireContext* ctx) {
  if (ctx != nullptr) CheckCanLock(ctx, false);
  absl::MutexLock l(&mu_);
  if (ctx != nullptr && ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  if (locked_) return false;
  AcquireLocked(ctx);
  if (ctx != nullptr && head_ != nullptr) CheckWaitersLocked(ctx);
  return true;
}

// __ww_mutex_check_waiters, for a holder `ctx` that took the mutex past queued waiters.
// Wait-Die: the first context waiter, if younger than us and holding locks, is woken to die.
// Wound-Wait: an older context waiter holding locks would have wounded us had it queued after we
// took the mutex, so we wound ourselves: our next blocking lock while holding locks backs off.
void WwMutex::CheckWaitersLocked(WwAcquireContext* ctx) {
  for (internal::Waiter* cur = head_; cur != nullptr; cur = cur->next) {
    if (cur->ctx == nullptr) continue;
    if (class_->is_wait_die()) {
      if (cur->ctx->acquired() > 0 && WwAcquireContext::IsYounger(*cur->ctx, *ctx)) {
        cur->node->Wake();
      }
      return;
    }
    if (cur->ctx->acquired() > 0 && WwAcquireContext::IsYounger(*ctx, *cur->ctx)) {
      ctx->wounded_.store(true, std::memory_order_relaxed);
      return;
    }
  }
}

void WwMutex::Unlock() {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(locked_, "WwMutex unlocked while not locked");
  if (owner_ctx_ != nullptr) owner_ctx_->acquired_.fetch_sub(1, std::memory_order_relaxed);
  owner_ctx_ = nullptr;
  locked_ = false;
  locked_flag_.store(false, std::memory_order_relaxed);
  if (head_ != nullptr) head_->node->Wake();
}

bool WwMutex::IsHeldBy(const WwAcquireContext* ctx) const {
  absl::MutexLock l(&mu_);
  return locked_ && owner_ctx_ == ctx;
}

int WwMutex::WaiterCountForTesting() const {
  absl::MutexLock l(&mu_);
  return waiters_;
}

}  // namespace ww
