#include "fence/fence.h"

#include <algorithm>
#include <limits>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/log.h"
#include "base/spin.h"
#include "base/status_tag.h"
#include "fence/internal/waiter.h"

namespace fence {
namespace {

constexpr std::string_view kLogger = "udrm.fence";  // base/log.h

// Identity of the calling thread, for "is this the thread running the callbacks?".
const void* ThisThread() {
  static thread_local char id;
  return &id;
}

absl::Status AlreadySignaledError() {
  return udrm::WithTag(absl::NotFoundError("fence already signaled"),
                       udrm::StatusTag::kAlreadySignaled);
}

}  // namespace

bool SeqnoIsLater(uint64_t a, uint64_t b, SeqnoWidth width) {
  if (width == SeqnoWidth::k64) return a > b;
  return static_cast<int32_t>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b)) > 0;
}

bool IsAlreadySignaled(const absl::Status& s) {
  return udrm::HasTag(s, udrm::StatusTag::kAlreadySignaled);
}

#ifndef NDEBUG
namespace {
std::atomic<int64_t> g_live_fences{0};
}  // namespace
#endif

int64_t Fence::LiveCount() {
#ifndef NDEBUG
  return g_live_fences.load(std::memory_order_relaxed);
#else
  return -1;
#endif
}

Fence::Fence(uint64_t context, uint64_t seqno, SeqnoWidth width)
    : context_(context), seqno_(seqno), width_(width) {
#ifndef NDEBUG
  g_live_fences.fetch_add(1, std::memory_order_relaxed);
#endif
}

Fence::~Fence() {
#ifndef NDEBUG
  g_live_fences.fetch_sub(1, std::memory_order_relaxed);
#endif
  // The last reference is gone, so no other thread can reach the fence: a signalled fence (the
  // common case) has nothing left to do and needs no lock.
  if (IsSignaledFlag()) return;
  FenceCallback* pending = nullptr;
  {
    absl::MutexLock l(&mu_);
    if (cb_head_ == nullptr || (flags_.load(std::memory_order_relaxed) & kSignaledBit)) return;
    // A callback is registered, so no lock-free Signal can claim the fence meanwhile.
    error_ = absl::AbortedError("fence released while unsignalled (EDEADLK)");
    bool signalled = false;
    pending = SignalLocked(absl::Now(), nullptr, &signalled);
  }
  // Logged without the fence lock (base/log.h: the sink runs with no udrm lock held).
  udrm::log::Write(udrm::log::Level::kWarn, kLogger,
                   absl::StrCat("fence ", context_, ":", seqno_,
                                " released unsignalled with callbacks pending; signalling -EDEADLK"));
  RunCallbacks(pending);
}

FenceRef Fence::Create(uint64_t context, uint64_t seqno, SeqnoWidth width) {
  return std::make_shared<Fence>(context, seqno, width);
}

FenceRef Fence::GetStub() {
  static const FenceRef* stub = [] {
    auto* f = new FenceRef(Fence::Create(0, 0));
    (*f)->Signal();
    return f;
  }();
  return *stub;
}

FenceRef Fence::AllocatePrivateStub(absl::Time timestamp) {
  FenceRef f = Create(0, 0);
  f->SignalWithTimestamp(timestamp);
  return f;
}

std::string_view Fence::driver_name() const {
  return IsSignaledFlag() ? "detached-driver" : DriverNameHook();
}

std::string_view Fence::timeline_name() const {
  return IsSignaledFlag() ? "signaled-timeline" : TimelineNameHook();
}

int64_t Fence::ToNanos(absl::Time t) {
  if (t == absl::InfiniteFuture()) return std::numeric_limits<int64_t>::max();
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  return absl::ToUnixNanos(t);  // saturates outside the int64 range
}

FenceCallback* Fence::SignalLocked(absl::Time timestamp, absl::Status* error, bool* signalled) {
  // Under mu_, so no callback can be added or removed meanwhile; a lock-free claim may still race
  // (when no callback is registered), hence the atomic claim.
  const uint32_t before = flags_.fetch_or(kClaimedBit, std::memory_order_acquire);
  if (before & kClaimedBit) {
    *signalled = false;
    return nullptr;
  }
  // error_ is written only by the claimer (and by SetError before any claim).
  if (error != nullptr && !error->ok() && error_.ok()) error_ = std::move(*error);
  timestamp_ns_ = ToNanos(timestamp);
  FenceCallback* list = cb_head_;
  cb_head_ = cb_tail_ = nullptr;
  if (list != nullptr) signalling_thread_.store(ThisThread(), std::memory_order_relaxed);
  flags_.fetch_and(~kCallbacksBit, std::memory_order_relaxed);
  flags_.fetch_or(kSignaledBit, std::memory_order_release);
  *signalled = true;
  return list;
}

bool Fence::TrySignalUnlocked(absl::Time timestamp, bool* already) {
  uint32_t f = flags_.load(std::memory_order_relaxed);
  for (;;) {
    if (f & kClaimedBit) {
      *already = true;
      return false;
    }
    if (f & (kCallbacksBit | kErrorSetBit)) return false;
    if (flags_.compare_exchange_weak(f, f | kClaimedBit, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      break;
    }
  }
  // Claimed with no callback registered: AddCallback now sees the claim and waits for
  // kSignaledBit, so nothing else touches the fence's signal state.
  timestamp_ns_ = ToNanos(timestamp);
  flags_.fetch_or(kSignaledBit, std::memory_order_release);
  return true;
}

void Fence::AwaitClaimedSignal() const {
  // The claimer is between its claim and its release store of kSignaledBit: a few instructions,
  // unless it was preempted there (2 cores and busy threads). So spin briefly, then yield the
  // CPU on every further poll so a preempted claimer can run.
  for (int i = 0; !IsSignaledFlag();) {
    if (i < kClaimSpins) {
      ++i;  // counts only the spins: a claimer stopped for long must not overflow it
      udrm::CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

void Fence::RunCallbacks(FenceCallback* list) {
  if (list == nullptr) return;
  while (list != nullptr) {
    FenceCallback* cb = list;
    list = cb->next_;  // read before running: the callback may re-register `cb` elsewhere
    cb->next_ = cb->prev_ = nullptr;
    cb->owner_ = nullptr;
    FenceCallback::Fn fn = std::move(cb->fn_);
    fn(*this);
  }
  absl::MutexLock l(&mu_);
  signalling_thread_.store(nullptr, std::memory_order_relaxed);
}

bool Fence::Signal() { return SignalWithTimestamp(absl::Now()); }

bool Fence::SignalWithTimestamp(absl::Time timestamp) {
  bool already = false;
  if (TrySignalUnlocked(timestamp, &already)) return true;
  if (already) {
    AwaitClaimedSignal();  // another thread claimed: return once its signal is visible
    return false;
  }
  bool signalled = false;
  FenceCallback* list;
  {
    absl::MutexLock l(&mu_);
    list = SignalLocked(timestamp, nullptr, &signalled);
  }
  if (!signalled) AwaitClaimedSignal();  // outside mu_: the claimer may be lock-free
  RunCallbacks(list);
  return signalled;
}

bool Fence::SignalWithError(absl::Status error, absl::Time timestamp) {
  bool signalled = false;
  FenceCallback* list;
  {
    absl::MutexLock l(&mu_);
    list = SignalLocked(timestamp, &error, &signalled);
  }
  if (!signalled) AwaitClaimedSignal();
  RunCallbacks(list);
  return signalled;
}

void Fence::SetError(absl::Status error) {
  UDRM_CHECK(!error.ok(), "Fence::SetError needs a non-OK status");
  absl::MutexLock l(&mu_);
  // kErrorSetBit in the same atomic step as the check: a lock-free claim either came first (the
  // contract break below) or will see the bit and take mu_, which orders this write before it.
  uint32_t f = flags_.load(std::memory_order_relaxed);
  while (!(f & (kSignaledBit | kClaimedBit)) &&
         !flags_.compare_exchange_weak(f, f | kErrorSetBit, std::memory_order_relaxed,
                                       std::memory_order_relaxed)) {
  }
  UDRM_CHECK(!(f & (kSignaledBit | kClaimedBit)), "Fence::SetError after the fence signalled");
  error_ = std::move(error);
}

// error_ and timestamp_ns_ are written only before kSignaledBit is set (by the claiming thread, then
// the release store) and never after, so once the acquire load sees the bit they are read without mu_.
absl::Status Fence::error() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (IsSignaledFlag()) return error_;
  absl::MutexLock l(&mu_);
  return error_;
}

FenceStatus Fence::GetStatus() {
  if (!IsSignaled()) return FenceStatus::kPending;
  return error().ok() ? FenceStatus::kSignaled : FenceStatus::kError;
}

bool Fence::PollAndSignal() {
  if (PollSignaled()) {
    Signal();
    return true;
  }
  return false;
}

absl::Time Fence::timestamp() const ABSL_NO_THREAD_SAFETY_ANALYSIS {  // see error()
  UDRM_CHECK(IsSignaledFlag(), "Fence::timestamp on an unsignalled fence");
  if (timestamp_ns_ == std::numeric_limits<int64_t>::max()) return absl::InfiniteFuture();
  if (timestamp_ns_ == std::numeric_limits<int64_t>::min()) return absl::InfinitePast();
  return absl::FromUnixNanos(timestamp_ns_);
}

void Fence::EnableSignaling() {
  if (flags_.fetch_or(kEnableSignalBit, std::memory_order_acq_rel) & kEnableSignalBit) return;
  if (IsSignaledFlag()) return;
  if (!EnableSignalingHook()) Signal();
}

absl::Status Fence::AddCallback(FenceCallback* cb, FenceCallback::Fn fn) {
  if (cb == nullptr || !fn) return absl::InvalidArgumentError("AddCallback needs a node and a fn");
  EnableSignaling();
  absl::ReleasableMutexLock l(&mu_);
  // Mark the list non-empty unless the signal is claimed (see kClaimedBit): after this, a Signal
  // takes mu_ and finds the callback.
  uint32_t f = flags_.load(std::memory_order_relaxed);
  while (!(f & kClaimedBit) && !(f & kCallbacksBit) &&
         !flags_.compare_exchange_weak(f, f | kCallbacksBit, std::memory_order_relaxed,
                                       std::memory_order_relaxed)) {
  }
  if (f & kClaimedBit) {
    // A Signal is between its claim and its release store: wait for it outside mu_.
    l.Release();
    AwaitClaimedSignal();
    return AlreadySignaledError();
  }
  UDRM_CHECK(cb->owner_ == nullptr, "FenceCallback registered twice");
  cb->fn_ = std::move(fn);
  cb->owner_ = this;
  cb->next_ = nullptr;
  cb->prev_ = cb_tail_;
  if (cb_tail_ != nullptr) {
    cb_tail_->next_ = cb;
  } else {
    cb_head_ = cb;
  }
  cb_tail_ = cb;
  return absl::OkStatus();
}

bool Fence::RemoveCallback(FenceCallback* cb) {
  absl::MutexLock l(&mu_);
  // Once signalled, the nodes belong to the signalling thread: do not read them.
  if (!(flags_.load(std::memory_order_relaxed) & kSignaledBit) && cb->owner_ == this) {
    if (cb->prev_ != nullptr) cb->prev_->next_ = cb->next_;
    if (cb->next_ != nullptr) cb->next_->prev_ = cb->prev_;
    if (cb_head_ == cb) cb_head_ = cb->next_;
    if (cb_tail_ == cb) cb_tail_ = cb->prev_;
    if (cb_head_ == nullptr) flags_.fetch_and(~kCallbacksBit, std::memory_order_relaxed);
    cb->next_ = cb->prev_ = nullptr;
    cb->owner_ = nullptr;
    cb->fn_ = nullptr;
    return true;
  }
  // Signalled: wait until the signalling thread has run every callback, unless we are it.
  if (signalling_thread_.load(std::memory_order_relaxed) != ThisThread()) {
    mu_.Await(absl::Condition(this, &Fence::CallbacksIdle));
  }
  return false;
}

absl::StatusOr<absl::Duration> Fence::Wait(absl::Duration timeout, std::stop_token cancel) {
  if (timeout < absl::ZeroDuration()) return absl::InvalidArgumentError("negative timeout");
  const absl::Duration kMinRemaining = absl::Nanoseconds(1);
  if (!IsSignaledFlag()) EnableSignaling();
  if (IsSignaled())
    return timeout == absl::InfiniteDuration() ? timeout : std::max(timeout, kMinRemaining);
  if (timeout == absl::ZeroDuration()) return absl::DeadlineExceededError("fence not signaled");
  const absl::Time deadline = absl::Now() + timeout;
  udrm::SpinUntil(std::min(timeout, kWaitSpin), [this] { return IsSignaledFlag(); });
  internal::Waiter waiter(std::move(cancel));
  FenceCallback cb;
  const bool added = AddCallback(&cb, [&waiter](Fence&) { waiter.Wake(); }).ok();
  absl::Status st =
      added ? waiter.Block(deadline, [this] { return IsSignaledFlag(); }) : absl::OkStatus();
  if (added) RemoveCallback(&cb);
  if (!st.ok()) {
    // A signal racing with the timeout or cancellation wins: report what the fence says.
    if (!IsSignaledFlag()) return st;
  }
  if (timeout == absl::InfiniteDuration()) return timeout;
  return std::max(deadline - absl::Now(), kMinRemaining);
}

absl::Status Fence::Wait(std::stop_token cancel) {
  return Wait(absl::InfiniteDuration(), std::move(cancel)).status();
}

void Fence::SetDeadline(absl::Time deadline) {
  if (!IsSignaledFlag()) SetDeadlineHook(deadline);
}

bool Fence::IsLater(const Fence& a, const Fence& b) {
  if (a.context_ != b.context_) {
    udrm::log::Write(udrm::log::Level::kWarn, kLogger,
                     absl::StrCat("Fence::IsLater on different contexts ", a.context_, " and ",
                                  b.context_));
    return false;
  }
  return SeqnoIsLater(a.seqno_, b.seqno_, a.width_);
}

bool Fence::IsLaterOrSame(const Fence& a, const Fence& b) {
  return a.seqno_ == b.seqno_ ? a.context_ == b.context_ : IsLater(a, b);
}

FenceRef Fence::Later(const FenceRef& a, const FenceRef& b) {
  const FenceRef& later = IsLater(*a, *b) ? a : b;
  return later->IsSignaled() ? nullptr : later;
}

}  // namespace fence
