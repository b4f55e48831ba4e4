// ww::WwMutex — ww_mutex: wound/wait mutexes with acquire contexts.
//
// What it is: a mutex that many objects carry (every fence::Resv has one) so that a thread can lock
// an arbitrary set of them in any order without deadlock. Each locking transaction runs under a
// WwAcquireContext, which takes a *stamp* from its WwClass; a lower stamp is older and wins. When
// two transactions contend, the class's algorithm decides who backs off:
//  - Wait-Die (the kernel's DEFINE_WD_CLASS; dma_resv's class): a younger context that holds locks
//    and would wait for an older one "dies" — Lock() returns a back-off status at once.
//  - Wound-Wait (DEFINE_WW_CLASS): an older context that holds locks and waits for a younger holder
//    "wounds" it; the wounded context backs off the next time it would block while holding locks.
// On back-off the caller must Unlock() everything locked with that context, then LockSlow() the
// contended mutex (which blocks and cannot fail), then take the rest again, keeping the same
// context (and so its stamp) so that it ages and eventually wins. A context that holds no locks is
// never told to back off.
//
// Waiters: context waiters queue in stamp order (oldest first); waiters without a context queue
// FIFO and are skipped over by the sort, so they are not starved. Only the first waiter is woken
// by an Unlock(), so among queued waiters the first one goes next; a barging locker (below) may
// still take the mutex before it, for at most about a millisecond.
//
// Barging (as the kernel's mutex, whose lock path tries a trylock and an optimistic spin before it
// queues): Lock(), LockSlow() and TryLock() take a *free* mutex even when waiters are queued,
// because handing every release to a sleeping waiter costs a wake-up per lock and, with more
// threads than cores, a convoy. Such an acquire is checked against the queue as the kernel's
// ww_mutex_set_context_fastpath does (Wound-Wait: an older waiter holding locks wounds the new
// holder; Wait-Die: the first context waiter, if younger and holding locks, is woken to die).
// Starvation is bounded: a waiter that has been the first for longer than about 1 ms (counted from
// when it became the first, not from when it queued) and, woken, finds the mutex taken asks for
// hand-over (the kernel's MUTEX_FLAG_HANDOFF), and the next Unlock() passes the mutex to it
// directly, so no one can barge.
//
// Spinning (the kernel's optimistic spin): before queueing, a locker may spin for about a
// microsecond while the mutex is held, if no waiter is queued, no other thread is spinning on it,
// and waiting is what the ww rules allow it (no context, a context holding no locks, Wait-Die
// behind a younger holder by the holder's stamp, or an unwounded Wound-Wait context behind an
// older holder or one without a context). A Wound-Wait context holding locks does not spin
// behind a younger context (a subset of the kernel's ww_mutex_spin_on_owner rule, which stops
// spinning behind any context holder once the waiter holds locks): it queues at once, which
// wounds the holder — spinning would only delay the wound, for the whole spin when the holder
// waits for one of its locks. A queued first waiter polls for as long before it sleeps; the
// others sleep at once. The spins are bounded, so a preempted holder costs
// at most that much; every ww decision (die, wound) is still taken under the internal lock.
//
// Without a context, Lock(nullptr)/Unlock() behave as a plain mutex. Mixing context and
// context-less locking of one class, or two contexts of one class on one thread, can deadlock
// undetected, as in the kernel.
//
// Lifetime: a WwMutex must be unlocked when destroyed; a WwAcquireContext must hold no locks when
// finished (Fini() or destruction). Both are contract checks that crash.
//
// Thread-safety: a WwAcquireContext belongs to one thread. WwMutex methods may be called from any
// thread; Unlock() is called by the thread that locked.
//
// Memory ordering: Unlock() happens-before the next successful lock of the same mutex (as for any
// mutex), so writes made while holding it are visible to the next holder. Lock()/Unlock() of an
// uncontended mutex are one atomic compare-exchange each and take no internal lock.
#ifndef UDRM_WW_WW_MUTEX_H_
#define UDRM_WW_WW_MUTEX_H_

#include <atomic>
#include <cstdint>
#include <stop_token>
#include <string>
#include <string_view>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ww {

enum class WwAlgorithm { kWaitDie, kWoundWait };

// ww_class: the algorithm, and the stamp counter its contexts draw from.
class WwClass {
 public:
  explicit WwClass(WwAlgorithm algorithm, std::string name = "")
      : algorithm_(algorithm), name_(std::move(name)) {}
  WwClass(const WwClass&) = delete;
  WwClass& operator=(const WwClass&) = delete;

  WwAlgorithm algorithm() const { return algorithm_; }
  bool is_wait_die() const { return algorithm_ == WwAlgorithm::kWaitDie; }
  std::string_view name() const { return name_; }

 private:
  friend class WwAcquireContext;
  const WwAlgorithm algorithm_;
  const std::string name_;
  std::atomic<uint64_t> stamp_{0};
};

// The kernel's -EDEADLK: release every lock of the context, LockSlow() the contended mutex, retry.
bool IsBackoff(const absl::Status& s);
// The kernel's -EALREADY: the context already holds this mutex.
bool IsAlreadyHeld(const absl::Status& s);

// CONFIG_DEBUG_WW_MUTEX_SLOWPATH at run time: when on, Lock() makes the second and later locks of
// a context return a back-off artificially, first after (stamp & 15) locks, then at intervals that
// grow 3.5x each time, so every caller's back-off path runs. Contexts read the switch when they
// are created. The default comes from the environment variable UDRM_WW_SLOWPATH_INJECTION (set
// and not "0" means on). Thread-safe.
void SetSlowpathInjection(bool on);
bool SlowpathInjection();

namespace internal {

// A thread's wake-up flag while it waits for a WwMutex; woken by lock hand-over, by a waiter ahead
// leaving, by a wound (Wound-Wait) or by a stop request on its cancel token.
class WaitNode final {
 public:
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until woken since the last Sleep() returned. Polls for up to `spin` first: ww-mutex
  // hold times are short, and a futex sleep and wake-up costs several microseconds here.
  void Sleep(absl::Duration spin) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  bool Woken() const { return woken_.load(std::memory_order_acquire); }

  absl::Mutex mu_;
  // Set under mu_ (so a sleeper in Await() re-checks it) and read lock-free by a spinner.
  std::atomic<bool> woken_{false};
};

struct Waiter;

}  // namespace internal

class WwMutex;

// ww_acquire_ctx. Create it on the thread that will lock (ww_acquire_init), call Done() when no
// more locks will be taken (optional), and let it be destroyed or call Fini() once every lock is
// released.
class WwAcquireContext {
 public:
  // `inject` false is ww_acquire_init_noinject: never subject to slow-path injection.
  explicit WwAcquireContext(WwClass* ww_class, bool inject = true)
      : class_(ww_class),
        stamp_(ww_class->stamp_.fetch_add(1, std::memory_order_relaxed) + 1),
        inject_(inject && SlowpathInjection()),
        inject_countdown_(static_cast<uint32_t>(stamp_ & 0xf)) {}
  WwAcquireContext(const WwAcquireContext&) = delete;
  WwAcquireContext& operator=(const WwAcquireContext&) = delete;
  ~WwAcquireContext() {
    if (!finished_) Fini();
  }

  // Beyond the kernel (Wound-Wait only; off by default): while this context holds locks, a lock
  // that would sleep — after the bounded spin — behind a holder *older* than this context
  // returns a back-off instead of waiting (Wait-Die's answer in the same place), so the caller
  // releases its locks and waits for that mutex alone (LockSlow). The holder is checked when the
  // waiter queues and each time it is woken, not continuously: a waiter asleep behind a younger
  // holder that is replaced by an older one (e.g. a barger) keeps sleeping until woken (or
  // wounded by the older one, as plain Wound-Wait). Behind a younger holder, or a holder without
  // a context, it waits (and wounds) as usual, so the oldest transaction never backs off this
  // way. Owner thread only; takes effect at the next lock.
  void SetBackoffBeforeSleep(bool on) { backoff_before_sleep_ = on; }

  // ww_acquire_done: no further locks may be taken with this context (a contract check).
  void Done() { done_ = true; }
  // ww_acquire_fini: contract: no locks held, not finished before.
  void Fini() {
    if (ABSL_PREDICT_FALSE(finished_ || acquired() != 0)) FiniFailed();
    finished_ = true;
  }

  uint64_t stamp() const { return stamp_; }
  int acquired() const { return acquired_.load(std::memory_order_relaxed); }
  const WwClass* ww_class() const { return class_; }

  // True if `a` is younger (a later stamp) than `b`: the kernel's __ww_ctx_less.
  static bool IsYounger(const WwAcquireContext& a, const WwAcquireContext& b) {
    return static_cast<int64_t>(a.stamp_ - b.stamp_) > 0;
  }

 private:
  friend class WwMutex;

  [[noreturn]] void FiniFailed() const;

  WwClass* const class_;
  const uint64_t stamp_;
  // Locks held. Written by the owning thread only (plain load + store, no read-modify-write);
  // read by other threads under the internal lock
  // of a mutex this context waits on (a waiting context takes and releases nothing).
  std::atomic<int> acquired_{0};
  // Wound-Wait: set by an older waiter; read by this context when it next blocks.
  std::atomic<bool> wounded_{false};
  bool done_ = false;
  bool finished_ = false;
  bool backoff_before_sleep_ = false;  // owner thread only
  // Debug: the mutex whose back-off is pending (the kernel's contending_lock). Owner thread only.
  const WwMutex* contending_lock_ = nullptr;
  // Slow-path injection state (the kernel's deadlock_inject_*). Owner thread only.
  bool inject_;
  uint32_t inject_countdown_;
  uint32_t inject_interval_ = 1;
  internal::WaitNode node_;
};

class WwMutex {
 public:
  explicit WwMutex(WwClass* ww_class) : class_(ww_class) {}
  WwMutex(const WwMutex&) = delete;
  WwMutex& operator=(const WwMutex&) = delete;
  // Contract: not locked.
  ~WwMutex();

  // ww_mutex_lock. Blocks while the mutex is held by another (spinning briefly first, see above). Returns OK (acquired), a status
  // with IsBackoff() (-EDEADLK: release all and LockSlow() this mutex; never when `ctx` holds no
  // locks), or IsAlreadyHeld() (-EALREADY: `ctx` holds it already). `ctx` null: plain mutex,
  // always OK. Contract checks: the context is of this mutex's class and not Done(); in debug
  // builds, after a back-off the next lock must be the contended mutex, with nothing held.
  absl::Status Lock(WwAcquireContext* ctx) ABSL_LOCKS_EXCLUDED(mu_);
  // ww_mutex_lock_interruptible: as Lock(), or CancelledError once a stop is requested on
  // `cancel` (a user-space signal; the kernel's -ERESTARTSYS) and it would wait. A free mutex is
  // taken even if the stop was requested before the call (as in the kernel), and a waiter that
  // was granted the mutex takes it.
  absl::Status LockInterruptible(WwAcquireContext* ctx, std::stop_token cancel)
      ABSL_LOCKS_EXCLUDED(mu_);
  // ww_mutex_lock_slow: after a back-off, with no locks held, sleep until this mutex is ours.
  // Cannot fail. Contract: `ctx` holds no locks.
  void LockSlow(WwAcquireContext* ctx) ABSL_LOCKS_EXCLUDED(mu_);
  // ww_mutex_lock_slow_interruptible: OK, or CancelledError.
  absl::Status LockSlowInterruptible(WwAcquireContext* ctx, std::stop_token cancel)
      ABSL_LOCKS_EXCLUDED(mu_);
  // ww_mutex_trylock: never blocks. False if held (also when held by `ctx` itself). It may take a
  // free mutex past queued waiters; with a context, that is an acquire like Lock(): a context
  // holding no locks drops an old wound, and the queued waiters are checked against the new
  // holder (Wound-Wait: an older waiter holding locks wounds it, so its next blocking Lock() while
  // holding locks backs off; Wait-Die: a younger waiter holding locks is woken to die).
  bool TryLock(WwAcquireContext* ctx = nullptr) ABSL_LOCKS_EXCLUDED(mu_);
  // ww_mutex_unlock. Contract: locked.
  void Unlock() ABSL_LOCKS_EXCLUDED(mu_);
  // Lock()'s uncontended case, inline (beyond the kernel, for callers with their own slow path
  // such as exec::Exec): true exactly when the mutex was free with nobody queued and `ctx` (not
  // null) took it as Lock(ctx) would have — same checks passed, no back-off injection pending for
  // this context (under slow-path injection it always returns false). False: nothing changed;
  // call Lock() or LockInterruptible(), which decide and report everything.
  bool LockFast(WwAcquireContext* ctx) ABSL_LOCKS_EXCLUDED(mu_);

  // A snapshot, for assertions: lock-free.
  bool IsLocked() const { return (state_.load(std::memory_order_relaxed) & kLocked) != 0; }
  // True if `ctx` holds this mutex. Meaningful on the context's own thread. Lock-free.
  bool IsHeldBy(const WwAcquireContext* ctx) const;
  const WwClass* ww_class() const { return class_; }
  // Waiters queued now (for tests that need to know a thread is blocked).
  int WaiterCountForTesting() const ABSL_LOCKS_EXCLUDED(mu_);
  // True while a starved first waiter's hand-over request is pending (the next Unlock() passes
  // the mutex to it). Set only while the mutex is locked. Lock-free; for tests.
  bool HandoffPendingForTesting() const {
    return (state_.load(std::memory_order_relaxed) & kHandoff) != 0;
  }

 private:
  // state_: the holder's context (the kernel's ww->ctx; null: none or no context) in the bits
  // above kFlags, and flag bits. kWaiters and kHandoff change only under mu_; kHandoff is set
  // only while kLocked. The context is set by the same compare-exchange that takes the mutex
  // (or by an Unlock() that hands it over) and cleared by the one that releases it.
  static constexpr uintptr_t kLocked = 1;    // held
  static constexpr uintptr_t kWaiters = 2;   // the queue is not empty: Unlock() takes mu_
  static constexpr uintptr_t kHandoff = 4;   // Unlock() passes the mutex to the first waiter
  static constexpr uintptr_t kFlags = 7;
  static WwAcquireContext* OwnerOf(uintptr_t s) {
    return reinterpret_cast<WwAcquireContext*>(s & ~kFlags);
  }

  absl::Status LockCommon(WwAcquireContext* ctx, const std::stop_token& cancel, bool slow)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Sets kLocked and `ctx` as the holder if the mutex is free (a barging acquire); `*seen`: the
  // state it replaced. Any thread; no lock needed.
  bool TryTake(WwAcquireContext* ctx, uintptr_t* seen);
  // After this thread took the mutex: PublishOwner, then CountAcquire.
  void SetOwner(WwAcquireContext* ctx);
  // owner_stamp_ (by the taker, or by an Unlock() that hands over).
  void PublishOwner(WwAcquireContext* ctx);
  // The context's own bookkeeping of an acquire (its thread only).
  static void CountAcquire(WwAcquireContext* ctx);
  // An acquire made without mu_ checks the queue if there was one (set_context_fastpath).
  void AfterFastAcquire(WwAcquireContext* ctx, uintptr_t seen) ABSL_LOCKS_EXCLUDED(mu_);
  bool MaySpin(const WwAcquireContext* ctx) const;
  bool BehindYoungerHolder(const WwAcquireContext* ctx) const;
  bool SpinThenTake(WwAcquireContext* ctx, uintptr_t* seen);
  void UnlockSlow() ABSL_LOCKS_EXCLUDED(mu_);
  [[noreturn]] static void UnlockNotLocked();
  absl::Status WaitLocked(internal::Waiter* w, const std::stop_token& cancel)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AskHandoffLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AddWaiterLocked(internal::Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveWaiterLocked(internal::Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckKillLocked(internal::Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckSleepLocked(internal::Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WoundHolderLocked(WwAcquireContext* waiter_ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckWaitersLocked(WwAcquireContext* ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Kill(WwAcquireContext* ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MaybeInjectBackoff(WwAcquireContext* ctx) ABSL_LOCKS_EXCLUDED(mu_);
  void CheckCanLock(const WwAcquireContext* ctx, bool slow) const;

  // The fields an uncontended lock / unlock touches come first, in 24 bytes, so that an object
  // embedding a WwMutex (fence::Resv) can keep its own hot fields on the same cache line.
  // Another thread may dereference the holder's context only under mu_ with kWaiters set: the
  // holder's Unlock() then needs mu_ to finish, so the context is alive.
  std::atomic<uintptr_t> state_{0};
  // The holder's stamp (0: none or no context), read lock-free by spinners as a hint only.
  std::atomic<uint64_t> owner_stamp_{0};
  WwClass* const class_;
  std::atomic<bool> spinner_{false};  // one spinner at a time (the kernel's OSQ)
  mutable absl::Mutex mu_;  // the kernel's wait_lock; never held while blocking for the WwMutex
  internal::Waiter* head_ ABSL_GUARDED_BY(mu_) = nullptr;
  internal::Waiter* tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  int waiters_ ABSL_GUARDED_BY(mu_) = 0;
};

inline bool WwMutex::LockFast(WwAcquireContext* ctx) {
  if (ctx == nullptr || ctx->class_ != class_ || ctx->done_ || ctx->finished_ ||
      ctx->contending_lock_ != nullptr || ctx->inject_) {
    return false;
  }
  const int held = ctx->acquired_.load(std::memory_order_relaxed);
  // A context that holds nothing drops an old wound before it can be seen as a holder (a wound
  // made after the compare-exchange below is kept).
  if (held == 0) ctx->wounded_.store(false, std::memory_order_relaxed);
  // Free and nobody queued: nothing to check against waiters (set_context_fastpath), and the
  // context cannot be the holder already.
  uintptr_t expected = 0;
  if (!state_.compare_exchange_strong(expected, kLocked | reinterpret_cast<uintptr_t>(ctx),
                                      std::memory_order_seq_cst, std::memory_order_relaxed)) {
    return false;
  }
  owner_stamp_.store(ctx->stamp_, std::memory_order_relaxed);
  ctx->acquired_.store(held + 1, std::memory_order_relaxed);  // owner thread only
  return true;
}

// The holder's own thread: its context in the state word is exact (set by it, or by a hand-over
// it waited for under mu_). Waiters queued (or a hand-over asked): UnlockSlow.
inline void WwMutex::Unlock() {
  const uintptr_t s = state_.load(std::memory_order_relaxed);
  if ((s & kLocked) == 0) UnlockNotLocked();
  WwAcquireContext* ctx = OwnerOf(s);
  if (ctx != nullptr) {  // the context's own thread: the only writer of its count
    ctx->acquired_.store(ctx->acquired_.load(std::memory_order_relaxed) - 1,
                         std::memory_order_relaxed);
  }
  owner_stamp_.store(0, std::memory_order_relaxed);
  uintptr_t expected = kLocked | reinterpret_cast<uintptr_t>(ctx);
  if (state_.compare_exchange_strong(expected, 0, std::memory_order_seq_cst,
                                     std::memory_order_relaxed)) {
    return;
  }
  UnlockSlow();
}

inline absl::Status WwMutex::Lock(WwAcquireContext* ctx) {
  if (LockFast(ctx)) return absl::OkStatus();
  return LockCommon(ctx, {}, false);
}

}  // namespace ww

#endif  // UDRM_WW_WW_MUTEX_H_
