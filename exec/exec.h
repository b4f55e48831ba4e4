// exec::Exec — drm_exec: lock many objects in any order, back off on contention, retry.
//
// What it is: a locking transaction over objects that carry a fence::Resv (exec::Object). It owns
// a Wait-Die or Wound-Wait acquire context (the "ticket", from the objects' WwClass) and keeps it —
// and so its stamp — across retries, so a transaction that keeps losing grows older and finally
// wins. The body that locks the objects runs in a retry loop:
//
//   exec::Exec exec(exec::Exec::kInterruptibleWait);
//   absl::Status st = exec.UntilAllLocked([&](exec::Exec& e) -> absl::Status {
//     for (Object* o : objs) {
//       absl::Status s = e.PrepareObj(o, 1);
//       if (!s.ok()) return s;   // a back-off is retried by UntilAllLocked itself
//     }
//     return absl::OkStatus();
//   });
//
// or, explicitly, `while (exec.Cleanup()) { ...; if (exec.IsContended()) continue; ... }`.
// At the start of every run of the body no object is locked. When a lock reports contention the
// body should return (or `continue`); Cleanup() then unlocks everything (in reverse order), sleeps
// per the BackoffPolicy, and the next LockObj() first takes the contended object with the slow
// path before anything else.
//
// Results the caller must handle from LockObj/PrepareObj/PrepareArray: OK; IsBackoff() (contended:
// leave the body, it will run again); IsAlreadyHeld() (the object is locked by this Exec already,
// unless kIgnoreDuplicates, which turns it into OK); CancelledError (kInterruptibleWait and a stop
// requested on the token); InvalidArgument from a failed reservation (the object is then unlocked — even
// one an earlier call had locked, as in the kernel).
//
// Back-off policy (beyond the kernel; by default only under Wound-Wait — see
// BackoffPolicy::wait_die_delays): after the same object is contended `free_retries` times in
// a row, each further retry first waits a random time in [0, min(max_delay, base << k)) (jitter
// from absl::BitGen), with no locks held: delays under 100 us yield the CPU until they pass (a
// timed sleep would last the timer slack, ~50 us, whatever was asked), longer ones sleep. Guarantee: Wait-Die and Wound-Wait with a stamp kept
// across retries already rule out deadlock and livelock — the oldest transaction never backs off
// for a younger one, so it completes, and every transaction becomes the oldest eventually; the
// delay is bounded, so it only trims wasted retries under heavy contention and cannot starve.
// Under Wound-Wait the policy also makes a transaction that holds locks back off instead of
// sleeping behind an OLDER holder (BackoffPolicy::backoff_before_sleep,
// ww::WwAcquireContext::SetBackoffBeforeSleep), where the kernel's drm_exec would wait: so an
// IsBackoff() result can come from such a lock too. Every new transaction is the youngest, and
// each one that slept holding its locks kept them from all younger ones — with more threads than
// cores nearly every transaction slept (exec_bench, 16 threads, 64 objects: ~20x slower). Behind
// a younger holder it waits and wounds as before, so the oldest still never backs off.
//
// Lifetime: objects must outlive the Exec (or be unlocked from it first); the destructor
// (drm_exec_fini) unlocks everything still locked. Thread-safety: an Exec belongs to one thread.
#ifndef UDRM_EXEC_EXEC_H_
#define UDRM_EXEC_EXEC_H_

#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <utility>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "base/check.h"
#include "fence/resv.h"
#include "ww/ww_mutex.h"

namespace exec {

// The ww-mutex names an Exec's API uses (its ticket, its results), from the layer below.
using ww::IsAlreadyHeld;
using ww::IsBackoff;
using ww::WwAcquireContext;
using ww::WwClass;

// Anything lockable through an Exec: it carries a Resv (a GEM object, a VM, a test object).
// An object whose resv() is the same Resv for its whole life may name it to the constructor:
// an Exec then reaches it through that pointer, without the virtual call (two per object and
// transaction: lock and unlock). Contract: resv() then returns exactly that Resv (checked in
// debug builds; an optimised build locks the named one) — such a class should make resv()
// final, so that no subclass can return another. A copy names nothing (its Resv is its own,
// not the source's), and an assignment keeps the name the object had.
class Object {
 public:
  virtual fence::Resv& resv() = 0;

 protected:
  Object() = default;
  explicit Object(fence::Resv* resv) : resv_(resv) {}
  Object(const Object&) {}
  Object& operator=(const Object&) { return *this; }
  ~Object() = default;

 private:
  friend class Exec;
  fence::Resv& ResvForExec();

  fence::Resv* resv_ = nullptr;  // null: ask resv(); set only by the constructor
};

struct BackoffPolicy {
  bool enabled = true;
  // Wait-Die: the delays apply only if this is set (off by default). A transaction that dies
  // already waits for the contended object alone (LockSlow) before it retries, so a delay only
  // adds to that wait. Measured (exec_bench, no delays vs delays, three sets of alternated
  // processes, cells M8 T2/T4/T16, M64 T2/T4/T16): 1.06/1.32/0.89/0.91/0.81/1.00,
  // 1.20/1.26/0.85/0.98/0.95/1.02, 1.05/1.25/0.94/1.04/0.83/1.11 — neither wins every cell, and
  // a policy that loses to none in a cell is not a default. Under Wound-Wait the delays apply
  // whenever `enabled`.
  bool wait_die_delays = false;
  int free_retries = 2;  // consecutive contentions on one object before any delay
  absl::Duration base = absl::Microseconds(2);
  absl::Duration max_delay = absl::Microseconds(500);
  // Wound-Wait: while holding locks, back off rather than sleep behind an older holder
  // (ww::WwAcquireContext::SetBackoffBeforeSleep). No effect on Wait-Die.
  bool backoff_before_sleep = true;
};

class Exec {
 public:
  enum Flags : uint32_t {
    kInterruptibleWait = 1u << 0,  // DRM_EXEC_INTERRUPTIBLE_WAIT: waits honour `cancel`
    kIgnoreDuplicates = 1u << 1,   // DRM_EXEC_IGNORE_DUPLICATES: already-held is OK
  };

  // drm_exec_init. `ww_class` is the class of the objects' Resvs (default: the reservation
  // class). `cancel` is used with kInterruptibleWait: a stop requested on it interrupts the lock
  // waits (the kernel's -ERESTARTSYS).
  explicit Exec(uint32_t flags = 0, std::stop_token cancel = {},
                ww::WwClass* ww_class = &fence::ReservationWwClass(),
                BackoffPolicy policy = BackoffPolicy())
      : flags_(flags), cancel_(std::move(cancel)), ww_class_(ww_class), policy_(policy) {}
  Exec(const Exec&) = delete;
  Exec& operator=(const Exec&) = delete;
  // drm_exec_fini: unlocks everything and finishes the ticket.
  ~Exec();

  // drm_exec_until_all_locked: runs `body` until it completes without contention. Returns the
  // body's status (OK: everything it locked stays locked until the Exec is destroyed).
  absl::Status UntilAllLocked(absl::FunctionRef<absl::Status(Exec&)> body);

  // drm_exec_cleanup, for an explicit loop: true means "run the body (again)"; false means the
  // last run completed without contention (the ticket is then Done()).
  bool Cleanup();
  // drm_exec_retry_on_contention's test: the last lock reported contention.
  bool IsContended() const { return contended_ != nullptr; }

  // drm_exec_lock_obj / prepare_obj / prepare_array: see the header comment for results.
  absl::Status LockObj(Object* obj);
  absl::Status PrepareObj(Object* obj, size_t num_fences);
  absl::Status PrepareArray(std::span<Object* const> objs, size_t num_fences);
  // drm_exec_unlock_obj: meant for the most recently locked objects. Contract: locked here.
  void UnlockObj(Object* obj);

  // drm_exec_for_each_locked_object: in locking order.
  std::span<Object* const> objects() const { return objects_; }
  WwAcquireContext& ticket() { return *ticket_; }
  // Retries so far (runs of the body after the first), and delays slept by the policy.
  int retries() const { return retries_; }
  absl::Duration total_backoff() const { return total_backoff_; }

 private:
  absl::Status LockObjIn(Object* obj, fence::Resv& resv);
  absl::Status LockObjSlow(Object* obj, fence::Resv& resv);
  absl::Status PrepareObjSlow(Object* obj, fence::Resv& resv, size_t num_fences);
  absl::Status LockContended();
  absl::Status LockResv(fence::Resv& resv);
  void UnlockAll();
  // Cleanup()'s first call (the ticket is made) and its retry (unlock, count, back-off delay).
  void Start();
  bool Retry();
  static void Delay(absl::Duration delay);

  const uint32_t flags_;
  const std::stop_token cancel_;
  WwClass* const ww_class_;
  const BackoffPolicy policy_;
  std::optional<WwAcquireContext> ticket_;  // engaged by the first Cleanup() (DRM_EXEC_DUMMY)
  bool started_ = false;
  absl::InlinedVector<Object*, 16> objects_;  // no allocation for up to 16 objects
  Object* contended_ = nullptr;              // locked by the next LockObj() with the slow path
  Object* prelocked_ = nullptr;              // taken with the slow path, already in objects_
  Object* last_contended_ = nullptr;
  int streak_ = 0;
  int retries_ = 0;
  absl::Duration total_backoff_;
  // Seeding a BitGen costs more than an uncontended transaction: made on the first delay.
  std::optional<absl::BitGen> rng_;
};

inline fence::Resv& Object::ResvForExec() {
  if (resv_ == nullptr) return resv();
  UDRM_DCHECK(&resv() == resv_, "exec::Object::resv() is not the Resv given to its constructor");
  return *resv_;
}

// The common case inline: no back-off pending, the object free with nobody queued
// (ww::WwMutex::LockFast, one compare-exchange) and the reservation met by Reserve()'s inline
// path — what the full path would do, with no call and no Status plumbing.
inline absl::Status Exec::PrepareObj(Object* obj, size_t num_fences) {
  fence::Resv& resv = obj->ResvForExec();
  if (ticket_.has_value() && contended_ == nullptr && obj != prelocked_ &&
      resv.lock().LockFast(&*ticket_)) {
    objects_.push_back(obj);
    absl::Status st = resv.Reserve(num_fences);
    if (ABSL_PREDICT_TRUE(st.ok())) return st;
    UnlockObj(obj);
    return st;
  }
  return PrepareObjSlow(obj, resv, num_fences);
}

inline absl::Status Exec::UntilAllLocked(absl::FunctionRef<absl::Status(Exec&)> body) {
  while (Cleanup()) {
    absl::Status st = body(*this);
    if (IsContended()) continue;  // drm_exec_retry_on_contention
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

// The first call and the call after a run without contention, inline; the retry is not.
inline bool Exec::Cleanup() {
  if (!started_) {
    Start();
    return true;
  }
  if (ABSL_PREDICT_TRUE(contended_ == nullptr)) {
    ticket_->Done();
    return false;
  }
  return Retry();
}

}  // namespace exec

#endif  // UDRM_EXEC_EXEC_H_
