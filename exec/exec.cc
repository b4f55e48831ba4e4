#include "exec/exec.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/base/attributes.h"
#include "absl/time/clock.h"
#include "base/check.h"

namespace exec {

Exec::~Exec() {
  UnlockAll();
  contended_ = nullptr;
  ticket_.reset();  // ww_acquire_fini (checks that nothing is held)
}

void Exec::Start() {
  started_ = true;
  ticket_.emplace(ww_class_);
  if (policy_.enabled) ticket_->SetBackoffBeforeSleep(policy_.backoff_before_sleep);
}

ABSL_ATTRIBUTE_NOINLINE bool Exec::Retry() {
  UnlockAll();
  ++retries_;
  if (contended_ == last_contended_) {
    ++streak_;
  } else {
    last_contended_ = contended_;
    streak_ = 1;
  }
  const bool delays =
      policy_.enabled && (policy_.wait_die_delays || !ww_class_->is_wait_die());
  if (delays && streak_ > policy_.free_retries) {
    const int k = std::min(streak_ - policy_.free_retries - 1, 20);
    const absl::Duration cap = std::min(policy_.max_delay, policy_.base * (int64_t{1} << k));
    if (!rng_.has_value()) rng_.emplace();
    const absl::Duration delay =
        absl::Nanoseconds(absl::Uniform<int64_t>(*rng_, 0, absl::ToInt64Nanoseconds(cap) + 1));
    Delay(delay);
    total_backoff_ += delay;
  }
  return true;
}

// A timed sleep rounds short delays up to the timer slack (about 50 us on Linux), tens of times
// the delay asked for; below kSleepAbove the delay is spent yielding the CPU instead, which lets
// a preempted lock holder run when threads outnumber cores.
void Exec::Delay(absl::Duration delay) {
  constexpr absl::Duration kSleepAbove = absl::Microseconds(100);
  if (delay >= kSleepAbove) {
    absl::SleepFor(delay);
    return;
  }
  const absl::Time until = absl::Now() + delay;
  do {
    std::this_thread::yield();
  } while (absl::Now() < until);
}

void Exec::UnlockAll() {
  // In locals: the unlocks' stores would otherwise make the vector's size and buffer be re-read
  // for every object.
  Object* const* const objs = objects_.data();
  for (size_t i = objects_.size(); i > 0; --i) objs[i - 1]->ResvForExec().Unlock();
  objects_.clear();
  prelocked_ = nullptr;
}

absl::Status Exec::LockResv(fence::Resv& resv) {
  if (flags_ & kInterruptibleWait) return resv.LockInterruptible(&*ticket_, cancel_);
  return resv.Lock(&*ticket_);
}

// drm_exec_lock_contended: take the object that made us back off, with the slow path, first.
absl::Status Exec::LockContended() {
  Object* obj = contended_;
  if (obj == nullptr) return absl::OkStatus();
  contended_ = nullptr;  // always clear it, so that error handling can take over
  if (flags_ & kInterruptibleWait) {
    absl::Status st = obj->ResvForExec().LockSlowInterruptible(&*ticket_, cancel_);
    if (!st.ok()) return st;
  } else {
    obj->ResvForExec().LockSlow(&*ticket_);
  }
  objects_.push_back(obj);
  prelocked_ = obj;
  return absl::OkStatus();
}

absl::Status Exec::LockObj(Object* obj) { return LockObjIn(obj, obj->ResvForExec()); }

// `resv` is obj->ResvForExec() (asked once: a virtual call).
absl::Status Exec::LockObjIn(Object* obj, fence::Resv& resv) {
  UDRM_CHECK(ticket_.has_value(), "Exec::LockObj outside the retry loop (call Cleanup first)");
  // The common case: no back-off pending and the object free and uncontended — one CAS, exactly
  // what the full path below would do for it (ww::WwMutex::LockFast).
  if (contended_ == nullptr && obj != prelocked_ && resv.lock().LockFast(&*ticket_)) {
    objects_.push_back(obj);
    return absl::OkStatus();
  }
  return LockObjSlow(obj, resv);
}

ABSL_ATTRIBUTE_NOINLINE absl::Status Exec::LockObjSlow(Object* obj, fence::Resv& resv) {
  if (contended_ != nullptr) {  // only after a back-off
    absl::Status st = LockContended();
    if (!st.ok()) return st;
  }
  if (obj == prelocked_) {
    prelocked_ = nullptr;
    return absl::OkStatus();
  }
  absl::Status st = LockResv(resv);
  if (st.ok()) {
    objects_.push_back(obj);
    return st;
  }
  if (IsBackoff(st)) {
    contended_ = obj;
    return st;
  }
  if (IsAlreadyHeld(st) && (flags_ & kIgnoreDuplicates)) return absl::OkStatus();
  if (!st.ok()) return st;
  objects_.push_back(obj);
  return absl::OkStatus();
}

void Exec::UnlockObj(Object* obj) {
  for (auto it = objects_.rbegin(); it != objects_.rend(); ++it) {
    if (*it == obj) {
      obj->ResvForExec().Unlock();
      objects_.erase(std::next(it).base());
      return;
    }
  }
  UDRM_CHECK(false, "Exec::UnlockObj of an object this Exec has not locked");
}

// PrepareObj() when its inline case does not apply: LockObj() then Reserve().
ABSL_ATTRIBUTE_NOINLINE absl::Status Exec::PrepareObjSlow(Object* obj, fence::Resv& resv,
                                                          size_t num_fences) {
  UDRM_CHECK(ticket_.has_value(), "Exec::PrepareObj outside the retry loop (call Cleanup first)");
  absl::Status st = LockObjSlow(obj, resv);
  if (!st.ok()) return st;
  st = resv.Reserve(num_fences);
  if (!st.ok()) UnlockObj(obj);
  return st;
}

absl::Status Exec::PrepareArray(std::span<Object* const> objs, size_t num_fences) {
  for (Object* obj : objs) {
    absl::Status st = PrepareObj(obj, num_fences);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace exec
