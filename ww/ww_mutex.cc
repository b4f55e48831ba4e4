#include "ww/ww_mutex.h"

#include <cstdlib>
#include <limits>
#include <optional>

#include "absl/time/clock.h"
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

// A first waiter beaten to the mutex by bargers for this long asks for hand-over.
constexpr int64_t kHandoffAfterNs = 1'000'000;

// How long a locker spins on a held mutex (before queueing, or as the first waiter) before it
// sleeps: about a transaction's hold time (exec_bench).
constexpr absl::Duration kSpinBudget = absl::Microseconds(1);

}  // namespace

namespace internal {

// A blocked locker, on its own stack, linked into the mutex's queue under the mutex's mu_.
struct Waiter {
  WaitNode* node;
  WwAcquireContext* ctx;  // null for a plain lock
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  bool granted = false;  // Unlock() handed the mutex over (set under the mutex's mu_)
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

void WaitNode::Sleep(absl::Duration spin) {
  udrm::SpinUntil(spin, [this] { return Woken(); });
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(this, &WaitNode::Woken));
  woken_.store(false, std::memory_order_relaxed);
}

}  // namespace internal

bool IsBackoff(const absl::Status& s) { return udrm::HasTag(s, udrm::StatusTag::kBackoff); }

bool IsAlreadyHeld(const absl::Status& s) { return udrm::HasTag(s, udrm::StatusTag::kAlreadyHeld); }

void SetSlowpathInjection(bool on) { InjectionFlag().store(on, std::memory_order_relaxed); }
bool SlowpathInjection() { return InjectionFlag().load(std::memory_order_relaxed); }

void WwAcquireContext::FiniFailed() const {
  UDRM_CHECK(!finished_, "WwAcquireContext finished twice");
  UDRM_CHECK(acquired() == 0, "WwAcquireContext finished while it still holds locks");
  std::abort();  // unreachable: one of the checks above failed
}

WwMutex::~WwMutex() {
  absl::MutexLock l(&mu_);
  UDRM_CHECK(!IsLocked(), "WwMutex destroyed while locked");
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

bool WwMutex::TryTake(WwAcquireContext* ctx, uintptr_t* seen) {
  static_assert(alignof(WwAcquireContext) > kFlags, "a context's address leaves the flag bits free");
  uintptr_t s = state_.load(std::memory_order_relaxed);
  while ((s & kLocked) == 0) {
    // A free mutex has no holder and no hand-over request: only kWaiters carries over.
    if (state_.compare_exchange_weak(s, (s & kWaiters) | kLocked | reinterpret_cast<uintptr_t>(ctx),
                                     std::memory_order_seq_cst, std::memory_order_relaxed)) {
      *seen = s;
      return true;
    }
  }
  return false;
}

void WwMutex::PublishOwner(WwAcquireContext* ctx) {
  owner_stamp_.store(ctx != nullptr ? ctx->stamp_ : 0, std::memory_order_relaxed);
}

void WwMutex::SetOwner(WwAcquireContext* ctx) {
  PublishOwner(ctx);
  if (ctx != nullptr) CountAcquire(ctx);
}

void WwMutex::CountAcquire(WwAcquireContext* ctx) {
  ctx->contending_lock_ = nullptr;
  // The context's thread is the only writer: a plain increment, no locked instruction.
  ctx->acquired_.store(ctx->acquired_.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
}

// ww_mutex_set_context_fastpath: a context that took the mutex without mu_ checks the waiters
// that were queued when it took it (`seen`, the state its compare-exchange replaced). A waiter
// that queues later reads this context from the state word its fetch_or returns.
void WwMutex::AfterFastAcquire(WwAcquireContext* ctx, uintptr_t seen) {
  if (ctx == nullptr || (seen & kWaiters) == 0) return;
  absl::MutexLock l(&mu_);
  if (head_ != nullptr) CheckWaitersLocked(ctx);
}

// Whether waiting is what the ww rules would make `ctx` do (judged on the holder's stamp, a hint:
// the decision proper is taken under mu_ after the spin), and no one is queued to be passed.
bool WwMutex::MaySpin(const WwAcquireContext* ctx) const {
  if ((state_.load(std::memory_order_relaxed) & kWaiters) != 0) return false;
  if (spinner_.load(std::memory_order_relaxed)) return false;
  if (ctx == nullptr || ctx->acquired() == 0) return true;
  if (ctx->wounded_.load(std::memory_order_relaxed)) return false;
  if (!class_->is_wait_die()) return !BehindYoungerHolder(ctx);
  const uint64_t owner = owner_stamp_.load(std::memory_order_relaxed);
  return owner == 0 || static_cast<int64_t>(owner - ctx->stamp_) > 0;
}

// Wound-Wait, a context holding locks: the holder (by its stamp, a hint) is a younger context.
// Such a waiter does not spin (a subset of the kernel's ww_mutex_spin_on_owner rule, which also
// stops behind older holders; here those are still spun on, a hint only): it queues at
// once and wounds the holder. Spinning would only delay the wound, and when the holder is itself
// waiting for a lock this context holds — a cycle, common when few objects are shared — nothing
// moves until the spin budget runs out.
bool WwMutex::BehindYoungerHolder(const WwAcquireContext* ctx) const {
  const uint64_t owner = owner_stamp_.load(std::memory_order_relaxed);
  return owner != 0 && static_cast<int64_t>(owner - ctx->stamp_) > 0;
}

// The kernel's optimistic spin, bounded by time rather than by the owner's running state (which
// user space cannot see): a preempted holder costs the spinner kSpinBudget, then it sleeps.
bool WwMutex::SpinThenTake(WwAcquireContext* ctx, uintptr_t* seen) {
  bool expected = false;
  if (!spinner_.compare_exchange_strong(expected, true, std::memory_order_acquire,
                                        std::memory_order_relaxed)) {
    return false;
  }
  bool taken = false;
  udrm::SpinUntil(kSpinBudget, [&] {
    const uintptr_t s = state_.load(std::memory_order_relaxed);
    if ((s & kWaiters) != 0) return true;  // someone queued: do not pass them
    if (ctx != nullptr && ctx->acquired() > 0) {
      if (ctx->wounded_.load(std::memory_order_relaxed)) return true;  // back off instead
      // Wound-Wait: the mutex passed to a younger context meanwhile: queue and wound it.
      if (!class_->is_wait_die() && BehindYoungerHolder(ctx)) return true;
    }
    taken = (s & kLocked) == 0 && TryTake(ctx, seen);
    return taken;
  });
  spinner_.store(false, std::memory_order_release);
  return taken;
}

absl::Status WwMutex::LockCommon(WwAcquireContext* ctx, const std::stop_token& cancel,
                                 bool slow) {
  CheckCanLock(ctx, slow);
  if (ctx != nullptr) {
    // Only this context's thread makes the holder ctx (or a hand-over to this thread while it
    // waits here), so the lock-free read is exact.
    if (OwnerOf(state_.load(std::memory_order_relaxed)) == ctx) return AlreadyHeldError();
    if (ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  }
  uintptr_t seen = 0;
  if (TryTake(ctx, &seen) || (MaySpin(ctx) && SpinThenTake(ctx, &seen))) {
    SetOwner(ctx);
    AfterFastAcquire(ctx, seen);
  } else {
    absl::MutexLock l(&mu_);
    if (TryTake(ctx, &seen)) {
      SetOwner(ctx);
      if (ctx != nullptr && head_ != nullptr) CheckWaitersLocked(ctx);
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

// Queues `w`, then sleeps until it takes the mutex (as the first waiter) or is handed it, must
// back off, or is cancelled.
absl::Status WwMutex::WaitLocked(internal::Waiter* w, const std::stop_token& cancel) {
  absl::Status st = AddWaiterLocked(w);
  if (!st.ok()) return st;
  // A stop request wakes the node (at once, here, if one was made already). Lock order: a
  // WwMutex's mu_, then a WaitNode's (a stop request takes only the latter); destroying the
  // callback at the end waits for a Wake() in progress on the requesting thread.
  std::optional<std::stop_callback<internal::WakeOnStop>> on_stop;
  if (cancel.stop_possible()) on_stop.emplace(cancel, internal::WakeOnStop{w->node});
  // When this waiter became the first (0: it is not): the ~1 ms a barger may overtake it for
  // counts from then, not from queueing — with more threads than cores a waiter commonly queues
  // for longer than that behind others, and asking every new first waiter for hand-over at once
  // would pass each release to a sleeping thread (a convoy).
  int64_t first_since = 0;
  bool slept = false;
  for (;;) {
    if (w->granted) {  // handed over by Unlock(): already out of the queue and published
      if (w->ctx != nullptr) CountAcquire(w->ctx);
      break;
    }
    uintptr_t seen;
    if (head_ == w && TryTake(w->ctx, &seen)) {
      RemoveWaiterLocked(w);
      SetOwner(w->ctx);
      break;
    }
    if (cancel.stop_requested()) {
      st = absl::CancelledError("lock interrupted");
    } else if (w->ctx != nullptr) {
      st = CheckKillLocked(w);
      if (st.ok() && w->ctx->backoff_before_sleep_) st = CheckSleepLocked(w);
    }
    if (!st.ok()) {
      if (head_ == w) state_.fetch_and(~kHandoff, std::memory_order_relaxed);
      RemoveWaiterLocked(w);
      // A free mutex passes to the new first waiter. (Waiters behind only gain from our leaving.)
      if (!IsLocked() && head_ != nullptr) head_->node->Wake();
      break;
    }
    // Starved: woken as the first waiter and still beaten to it for long enough.
    if (head_ != w) {
      first_since = 0;
    } else if (first_since == 0) {
      first_since = absl::GetCurrentTimeNanos();
    } else if (slept && absl::GetCurrentTimeNanos() - first_since > kHandoffAfterNs &&
               !AskHandoffLocked()) {
      continue;  // released meanwhile: take it
    }
    // Only the first waiter spins (the kernel's first-waiter optimistic spin): the others would
    // take CPU from the holder when threads outnumber cores.
    const absl::Duration spin = head_ == w ? kSpinBudget : absl::ZeroDuration();
    mu_.Unlock();
    w->node->Sleep(spin);
    mu_.Lock();
    slept = true;
  }
  return st;
}

// Sets kHandoff while the mutex is held; false if it is free (nothing to ask for).
bool WwMutex::AskHandoffLocked() {
  uintptr_t s = state_.load(std::memory_order_relaxed);
  while ((s & kLocked) != 0) {
    if ((s & kHandoff) != 0 ||
        state_.compare_exchange_weak(s, s | kHandoff, std::memory_order_seq_cst,
                                     std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
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
  state_.fetch_or(kWaiters, std::memory_order_seq_cst);
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
  if (head_ == nullptr) state_.fetch_and(~kWaiters, std::memory_order_seq_cst);
}

// __ww_mutex_wound: an older waiter holding locks wounds a younger holder and wakes it, so that
// it backs off if it is (or next gets) blocked while holding locks.
void WwMutex::WoundHolderLocked(WwAcquireContext* waiter_ctx) {
  WwAcquireContext* holder = OwnerOf(state_.load(std::memory_order_seq_cst));
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
  WwAcquireContext* owner = OwnerOf(state_.load(std::memory_order_seq_cst));
  if (owner != nullptr && WwAcquireContext::IsYounger(*ctx, *owner)) return Kill(ctx);
  for (internal::Waiter* cur = w->prev; cur != nullptr; cur = cur->prev) {
    if (cur->ctx != nullptr) return Kill(ctx);  // an older context is queued ahead of us
  }
  return absl::OkStatus();
}

// WwAcquireContext::SetBackoffBeforeSleep: a Wound-Wait context holding locks that would sleep
// behind an older holder backs off instead (the holder it waits for may itself be asleep in such
// a wait, and each of those sleepers keeps its locks from everyone younger: a convoy when threads
// outnumber cores). Behind a younger holder (which it has wounded) it waits, so the oldest
// transaction never backs off this way and still completes.
absl::Status WwMutex::CheckSleepLocked(internal::Waiter* w) {
  WwAcquireContext* ctx = w->ctx;
  if (class_->is_wait_die() || ctx->acquired() == 0) return absl::OkStatus();
  WwAcquireContext* owner = OwnerOf(state_.load(std::memory_order_seq_cst));
  if (owner != nullptr && WwAcquireContext::IsYounger(*ctx, *owner)) return Kill(ctx);
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
  if (ctx != nullptr) {
    CheckCanLock(ctx, false);
    if (ctx->acquired() == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  }
  uintptr_t seen;
  if (!TryTake(ctx, &seen)) return false;
  SetOwner(ctx);
  AfterFastAcquire(ctx, seen);
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

void WwMutex::UnlockNotLocked() {
  udrm::internal::CheckFailed(__FILE__, __LINE__, "IsLocked()", "WwMutex unlocked while not locked");
}

// Waiters are queued (kWaiters): wake the first, or hand the mutex to it if it asked.
void WwMutex::UnlockSlow() {
  absl::MutexLock l(&mu_);
  internal::Waiter* first = head_;
  if (first != nullptr && (state_.load(std::memory_order_relaxed) & kHandoff) != 0) {
    RemoveWaiterLocked(first);
    // kLocked stays (no one can barge); the holder becomes the first waiter's context. Under
    // mu_ only this thread changes the word while it is locked.
    uintptr_t s = state_.load(std::memory_order_relaxed);
    while (!state_.compare_exchange_weak(
        s, (s & kWaiters) | kLocked | reinterpret_cast<uintptr_t>(first->ctx),
        std::memory_order_seq_cst, std::memory_order_relaxed)) {
    }
    PublishOwner(first->ctx);
    first->granted = true;
    first->node->Wake();
    return;
  }
  state_.fetch_and(kWaiters, std::memory_order_seq_cst);  // no holder, no hand-over
  if (first != nullptr) first->node->Wake();
}

bool WwMutex::IsHeldBy(const WwAcquireContext* ctx) const {
  const uintptr_t s = state_.load(std::memory_order_relaxed);
  return (s & kLocked) != 0 && OwnerOf(s) == ctx;
}

int WwMutex::WaiterCountForTesting() const {
  absl::MutexLock l(&mu_);
  return waiters_;
}

}  // namespace ww
