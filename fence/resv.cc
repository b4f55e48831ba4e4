#include "fence/resv.h"

#include <algorithm>
#include <new>
#include <utility>

#include "absl/base/attributes.h"
#include "base/check.h"
#include "base/spin.h"
#include "fence/fence_array.h"
#include "fence/fence_context.h"

namespace fence {

ww::WwClass& ReservationWwClass() {
  static ww::WwClass* cls = new ww::WwClass(ww::WwAlgorithm::kWaitDie, "reservation_ww_class");
  return *cls;
}

namespace {
// A list for `needed` entries: at least 4, so that a first Reserve(1) covers a few AddFences.
uint32_t ListCapacity(size_t needed) { return static_cast<uint32_t>(std::max<size_t>(needed, 4)); }
}  // namespace

Resv::Resv(ww::WwClass* ww_class) : lock_(ww_class) {}

Resv::~Resv() {
  if (list_ != nullptr) Release(list_);
  while (spares_ != nullptr) DestroyList(std::exchange(spares_, spares_->next_spare));
  if (recycled_ != nullptr) DestroyList(recycled_);
}

Resv::List* Resv::NewList(uint32_t capacity) {
  void* mem = ::operator new(sizeof(List) + capacity * sizeof(Entry));
  List* l = new (mem) List;
  l->refs.store(1, std::memory_order_relaxed);
  l->size = 0;
  l->capacity = capacity;
  l->next_spare = nullptr;
  return l;
}

void Resv::ClearList(List* l) {
  Entry* e = l->entries();
  for (uint32_t i = 0; i < l->size; ++i) e[i].~Entry();
  l->size = 0;
}

void Resv::DestroyList(List* l) {
  ClearList(l);
  l->~List();
  ::operator delete(l);
}

void Resv::Release(List* l) {
  if (l->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) DestroyList(l);
}

void Resv::LatchLock() const {
  while (latch_.exchange(true, std::memory_order_acquire)) {
    while (latch_.load(std::memory_order_relaxed)) udrm::CpuRelax();
  }
}

Resv::List* Resv::Acquire() const {
  LatchLock();
  List* l = list_;
  if (l != nullptr) l->refs.fetch_add(1, std::memory_order_relaxed);
  LatchUnlock();
  return l;
}

void Resv::CheckLocked() const {
  UDRM_CHECK(lock_.IsLocked(), "fence::Resv written or iterated while not locked");
}

// The latch orders the swap against readers: one that read the old pointer counted its
// reference before we take the latch, so Recycle() sees it.
void Resv::Publish(List* next) {
  LatchLock();
  List* old = list_;
  list_ = next;
  LatchUnlock();
  if (old != nullptr) Recycle(old);
}

// Keeps `old`, a list just unpublished, for the next reservation if no reader holds it (none can
// obtain it any more); otherwise drops the slot's reference, and the last reader frees it. Its
// entries are released here, as they were when such a list was freed.
void Resv::Recycle(List* old) {
  // Acquire: reading 1 written by the last reader's release (acq_rel) orders its reads of the
  // list before our writes to it.
  const bool ours = old->refs.load(std::memory_order_acquire) == 1 ||
                    old->refs.fetch_sub(1, std::memory_order_acq_rel) == 1;
  if (!ours) return;
  if (recycled_ != nullptr || old->capacity > kRecycleMaxEntries) {
    DestroyList(old);  // a large one is freed, not hoarded
    return;
  }
  ClearList(old);
  old->refs.store(1, std::memory_order_relaxed);
  SetRecycled(old);
}

void Resv::SetRecycled(List* l) {
  recycled_ = l;
  recycled_capacity_ = l != nullptr ? l->capacity : 0;
}

void Resv::UnlockSlow() {
  CheckLocked();
  if (recycled_ == nullptr && spares_ != nullptr) {
    SetRecycled(std::exchange(spares_, spares_->next_spare));
    recycled_->next_spare = nullptr;
  }
  while (spares_ != nullptr) DestroyList(std::exchange(spares_, spares_->next_spare));
  spare_count_ = 0;
  spare_lists_ = 0;
  lock_.Unlock();
}

absl::Status Resv::ReserveSlow(size_t n) {
  CheckLocked();
  if (n == 0) return absl::InvalidArgumentError("Resv::Reserve of 0 fences");
  const size_t target = std::max<size_t>(spare_count_, n);
  // Each AddFence adds at most one entry.
  const size_t needed = (list_ != nullptr ? list_->size : 0) + target;
  if (needed >= (size_t{1} << 30)) {
    return absl::ResourceExhaustedError("Resv::Reserve: more than 2^30 fences");
  }
  spare_count_ = static_cast<uint32_t>(target);
  EnsureSpares(needed);
  return absl::OkStatus();
}

// Every list that backs a reservation holds `needed` entries, and there is one per reservation
// left: spares_, plus recycled_ where it is (a copy takes spares_ first, so recycled_ is taken
// only when it is the last backing list, and Recycle() refills only an empty recycled_). Lists
// too small are replaced (they hold no entries).
void Resv::EnsureSpares(size_t needed) {
  List** link = &spares_;
  while (*link != nullptr) {
    List* spare = *link;
    if (spare->capacity < needed) {
      List* bigger = NewList(ListCapacity(needed));
      bigger->next_spare = spare->next_spare;
      DestroyList(spare);
      *link = bigger;
    }
    link = &(*link)->next_spare;
  }
  if (recycled_ != nullptr && recycled_capacity_ < needed) {
    DestroyList(recycled_);
    SetRecycled(nullptr);
  }
  while (spare_lists_ + (recycled_ != nullptr ? 1u : 0u) < spare_count_) {
    List* spare = NewList(ListCapacity(needed));
    spare->next_spare = spares_;
    spares_ = spare;
    ++spare_lists_;
  }
}

// A reservation's list for a copy (see EnsureSpares).
Resv::List* Resv::TakeSpareList() {
  if (spares_ == nullptr) {
    UDRM_CHECK(recycled_ != nullptr, "Resv::AddFence: no spare list (internal error)");
    List* l = recycled_;
    SetRecycled(nullptr);
    return l;
  }
  List* next = std::exchange(spares_, spares_->next_spare);
  next->next_spare = nullptr;
  --spare_lists_;
  return next;
}

void Resv::AddFence(FenceRef fence, ResvUsage usage) {
  CheckLocked();
  UDRM_CHECK(fence != nullptr, "Resv::AddFence of a null fence");
  UDRM_CHECK(!fence->IsContainer(), "Resv::AddFence of a container fence (chain or array)");
  UDRM_CHECK(spare_count_ > 0, "Resv::AddFence without a reservation (call Reserve first)");
  --spare_count_;
  if (list_ != nullptr) {
    if (list_->size == 1 && ReplaceSingle(fence, usage)) return;
    if (list_->size <= kInPlaceMaxEntries && AddInPlace(fence, usage)) return;
  }
  AddByCopy(fence, usage);
}

// Out of line, like AddInPlace, so that AddFence's common case (ReplaceSingle, inlined) saves
// no registers for them.
ABSL_ATTRIBUTE_NOINLINE void Resv::AddByCopy(FenceRef& fence, ResvUsage usage) {
  List* next = TakeSpareList();
  UDRM_CHECK((list_ != nullptr ? list_->size : 0) < next->capacity,
             "Resv::AddFence: the reservation is smaller than the list (internal error)");
  // Copy within the reserved capacity (no allocation). Signalled entries are dropped on the way:
  // the kernel reuses their slots for new fences and drops them when it grows the list, and
  // unlocked readers never see them, so the result is the same set.
  Entry* out = next->entries();
  uint32_t n = 0;
  bool replaced = false;
  if (list_ != nullptr) {
    for (const Entry& e : *list_) {
      if (e.fence->IsSignaled()) continue;
      if (!replaced && Replaces(*fence, usage, e)) {
        new (&out[n++]) Entry{fence, usage};
        replaced = true;
        continue;
      }
      new (&out[n++]) Entry(e);
    }
  }
  if (!replaced) new (&out[n++]) Entry{std::move(fence), usage};
  next->size = n;
  Publish(next);
}

bool Resv::Replaces(const Fence& fence, ResvUsage usage, const Entry& e) {
  return e.fence->context() == fence.context() && e.usage >= usage &&
         Fence::IsLaterOrSame(fence, *e.fence);
}

// AddInPlace's common case, with less to set up: the list's one entry goes (signalled) or is
// replaced (the last submitter's fence), so the result is the one entry {fence, usage} either
// way and the slot is overwritten. False (nothing changed) otherwise, or if a reader holds it.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool Resv::ReplaceSingle(FenceRef& fence, ResvUsage usage) {
  List* cur = list_;
  Entry& e = cur->entries()[0];
  if (!e.fence->IsSignaled() && !Replaces(*fence, usage, e)) return false;
  LatchLock();
  // Acquire: as in AddInPlace.
  if (cur->refs.load(std::memory_order_acquire) != 1) {
    LatchUnlock();
    return false;
  }
  std::swap(e.fence, fence);  // the replaced fence is released by the caller, after the latch
  e.usage = usage;
  LatchUnlock();
  return true;
}

// The published list changed where it is, when no reader holds it: the same result as the copy
// (signalled entries dropped, the first replaceable entry replaced, else an append), with no
// fence reference counted up or down for the entries that stay. The plan is made outside the
// latch (only this writer changes the list); the latch is held for the check that no reader
// holds a reference (readers count theirs under it) and for moving pointers, so a reader that
// takes the list afterwards sees the result whole, and one that holds it makes us copy.
ABSL_ATTRIBUTE_NOINLINE bool Resv::AddInPlace(FenceRef& fence, ResvUsage usage) {
  List* cur = list_;
  const uint32_t size = cur->size;
  Entry* e = cur->entries();
  uint64_t keep = 0;
  uint32_t kept = 0;
  int replace = -1;  // index in the compacted list
  for (uint32_t i = 0; i < size; ++i) {
    if (e[i].fence->IsSignaled()) continue;
    if (replace < 0 && Replaces(*fence, usage, e[i])) replace = static_cast<int>(kept);
    keep |= uint64_t{1} << i;
    ++kept;
  }
  const uint32_t n = kept + (replace < 0 ? 1 : 0);
  if (n > cur->capacity) return false;
  LatchLock();
  // Acquire: a reader's release of its reference (acq_rel) ordered its reads before our writes.
  if (cur->refs.load(std::memory_order_acquire) != 1) {
    LatchUnlock();
    return false;
  }
  // Kept entries to the front, in order; dropped ones behind them, released after the latch.
  uint32_t k = 0;
  for (uint32_t i = 0; i < size; ++i) {
    if ((keep >> i) & 1) {
      if (i != k) std::swap(e[k], e[i]);
      ++k;
    }
  }
  // `fence` takes whatever the slot held (the replaced fence, a dropped one, or nothing).
  const uint32_t slot = replace >= 0 ? static_cast<uint32_t>(replace) : k;
  if (slot < size) {
    std::swap(e[slot].fence, fence);
    e[slot].usage = usage;
  } else {
    new (&e[slot]) Entry{std::move(fence), usage};
  }
  cur->size = n;
  LatchUnlock();
  for (uint32_t i = n; i < size; ++i) e[i].~Entry();
  return true;
}

void Resv::Replace(uint64_t context, const FenceRef& replacement, ResvUsage usage) {
  CheckLocked();
  if (list_ == nullptr) return;
  List* next = NewList(list_->size);
  for (const Entry& e : *list_) {
    new (&next->entries()[next->size++])
        Entry(e.fence->context() == context ? Entry{replacement, usage} : e);
  }
  Publish(next);
}

void Resv::Copy(const Resv& src) {
  CheckLocked();
  std::vector<Entry> copied = src.GetFences(ResvUsage::kBookkeep);
  List* next = nullptr;
  if (!copied.empty()) {
    next = NewList(static_cast<uint32_t>(copied.size()));
    for (Entry& e : copied) new (&next->entries()[next->size++]) Entry(std::move(e));
  }
  Publish(next);
  // The reservations made before stay valid (until Unlock): each spare must hold the copied
  // list plus one entry per reserved AddFence.
  if (next != nullptr) EnsureSpares(next->size + spare_count_);
}

std::vector<Resv::Entry> Resv::GetFences(ResvUsage usage) const {
  std::vector<Entry> out;
  ForEachUnlocked(usage, [&](const FenceRef& f, ResvUsage u) { out.push_back(Entry{f, u}); });
  return out;
}

FenceRef Resv::GetSingleton(ResvUsage usage) const {
  std::vector<FenceRef> fences;
  ForEachUnlocked(usage, [&](const FenceRef& f, ResvUsage) { fences.push_back(f); });
  if (fences.empty()) return nullptr;
  if (fences.size() == 1) return fences.front();
  auto array = FenceArray::Create(std::move(fences), FenceContext::Allocate(), 1);
  UDRM_CHECK(array.ok(), "Resv holds a container fence");
  return *std::move(array);
}

bool Resv::TestSignaled(ResvUsage usage) const {
  bool all = true;
  ForEachUnlocked(usage, [&](const FenceRef&, ResvUsage) { all = false; });
  return all;
}

absl::StatusOr<absl::Duration> Resv::Wait(ResvUsage usage, absl::Duration timeout,
                                          std::stop_token cancel) const {
  if (timeout < absl::ZeroDuration()) return absl::InvalidArgumentError("negative timeout");
  const bool infinite = timeout == absl::InfiniteDuration();
  const absl::Time deadline = infinite ? absl::InfiniteFuture() : absl::Now() + timeout;
  for (const Entry& e : GetFences(usage)) {
    absl::Duration left = infinite ? timeout : std::max(deadline - absl::Now(), absl::ZeroDuration());
    absl::StatusOr<absl::Duration> r = e.fence->Wait(left, cancel);
    if (!r.ok()) return r.status();
  }
  if (infinite) return timeout;
  return std::max(deadline - absl::Now(), absl::Nanoseconds(1));
}

void Resv::SetDeadline(ResvUsage usage, absl::Time deadline) const {
  ForEachUnlocked(usage, [&](const FenceRef& f, ResvUsage) { f->SetDeadline(deadline); });
}

}  // namespace fence
