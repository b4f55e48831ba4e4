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
// Back-off policy (beyond the kernel): after the same object is contended `free_retries` times in
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
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "fence/resv.h"
#include "ww/ww_mutex.h"

namespace exec {

// The ww-mutex names an Exec's API uses (its ticket, its results), from the layer below.
using ww::IsAlreadyHeld;
using ww::IsBackoff;
using ww::WwAcquireContext;
using ww::WwClass;

// Anything lockable through an Exec: it carries a Resv (a GEM object, a VM, a test object).
class Object {
 public:
  virtual fence::Resv& resv() = 0;

 protected:
  ~Object() = default;
};

struct BackoffPolicy {
  bool enabled = true;
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
                BackoffPolicy policy = BackoffPolicy());
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
  absl::Status LockContended();
  absl::Status LockResv(fence::Resv& resv);
  void UnlockAll();
  static void Delay(absl::Duration delay);

  const uint32_t flags_;
  const std::stop_token cancel_;
  WwClass* const ww_class_;
  const BackoffPolicy policy_;
  std::optional<WwAcquireContext> ticket_;  // engaged by the first Cleanup() (DRM_EXEC_DUMMY)
  bool started_ = false;
  absl::InlinedVector<Object*, 8> objects_;  // no allocation for small transactions
  Object* contended_ = nullptr;              // locked by the next LockObj() with the slow path
  Object* prelocked_ = nullptr;              // taken with the slow path, already in objects_
  Object* last_contended_ = nullptr;
  int streak_ = 0;
  int retries_ = 0;
  absl::Duration total_backoff_;
  // Seeding a BitGen costs more than an uncontended transaction: made on the first delay.
  std::optional<absl::BitGen> rng_;
};

}  // namespace exec

#endif  // UDRM_EXEC_EXEC_H_
