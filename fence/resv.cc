#include "fence/resv.h"

#include <algorithm>
#include <utility>

#include "base/check.h"
#include "fence/fence_array.h"
#include "fence/fence_context.h"

namespace fence {

ww::WwClass& ReservationWwClass() {
  static ww::WwClass* cls = new ww::WwClass(ww::WwAlgorithm::kWaitDie, "reservation_ww_class");
  return *cls;
}

Resv::Resv(ww::WwClass* ww_class)
    : lock_(ww_class),
      list_(std::shared_ptr<const List>(std::make_shared<List>())),
      current_(list_.Load()) {}

Resv::~Resv() = default;

void Resv::CheckLocked() const {
  UDRM_CHECK(lock_.IsLocked(), "fence::Resv written or iterated while not locked");
}

void Resv::Publish(std::shared_ptr<const List> next) {
  current_ = next;
  list_.Store(std::move(next));
}

// Keeps `old`, a list just replaced by Publish(), for the next reservation if no reader holds it
// any more (none can obtain it: list_ no longer points to it). Its entries are released here, as
// they were when such a list was freed.
void Resv::Recycle(std::shared_ptr<const List> old) {
  if (recycled_ != nullptr || old.use_count() != 1) return;
  // The count was read relaxed: one more reference taken and dropped (acq_rel read-modify-writes
  // of the count) orders the last reader's release of the list before our writes to it.
  { std::shared_ptr<const List> sync = old; }
  // Every list is created mutable (make_shared<List>) and only published as const.
  std::shared_ptr<List> list = std::const_pointer_cast<List>(std::move(old));
  if (list->capacity() > kRecycleMaxEntries) return;  // a large one is freed, not hoarded
  list->clear();
  recycled_ = std::move(list);
}

void Resv::Unlock() {
  CheckLocked();
  if (recycled_ == nullptr && !spares_.empty()) recycled_ = std::move(spares_.back());
  spares_.clear();
  lock_.Unlock();
}

absl::Status Resv::Reserve(size_t n) {
  CheckLocked();
  if (n == 0) return absl::InvalidArgumentError("Resv::Reserve of 0 fences");
  const size_t target = std::max(spares_.size(), n);
  const size_t capacity = current_->size() + target;  // each AddFence adds at most one entry
  for (auto& spare : spares_) spare->reserve(capacity);
  while (spares_.size() < target) {
    std::shared_ptr<List> spare =
        recycled_ != nullptr ? std::move(recycled_) : std::make_shared<List>();
    spare->reserve(capacity);
    spares_.push_back(std::move(spare));
  }
  return absl::OkStatus();
}

void Resv::AddFence(FenceRef fence, ResvUsage usage) {
  CheckLocked();
  UDRM_CHECK(fence != nullptr, "Resv::AddFence of a null fence");
  UDRM_CHECK(!fence->IsContainer(), "Resv::AddFence of a container fence (chain or array)");
  UDRM_CHECK(!spares_.empty(), "Resv::AddFence without a reservation (call Reserve first)");
  std::shared_ptr<List> next = std::move(spares_.back());
  spares_.pop_back();
  const List& cur = *current_;
  next->clear();
  // Copy within the reserved capacity (no allocation). Signalled entries are dropped on the way:
  // the kernel reuses their slots for new fences and drops them when it grows the list, and
  // unlocked readers never see them, so the result is the same set.
  bool replaced = false;
  for (const Entry& e : cur) {
    if (e.fence->IsSignaled()) continue;
    if (!replaced && e.fence->context() == fence->context() && e.usage >= usage &&
        Fence::IsLaterOrSame(*fence, *e.fence)) {
      next->push_back(Entry{fence, usage});
      replaced = true;
      continue;
    }
    next->push_back(e);
  }
  if (!replaced) next->push_back(Entry{std::move(fence), usage});
  std::shared_ptr<const List> old = std::move(current_);
  Publish(std::move(next));
  Recycle(std::move(old));
}

void Resv::Replace(uint64_t context, const FenceRef& replacement, ResvUsage usage) {
  CheckLocked();
  auto next = std::make_shared<List>(*current_);
  for (Entry& e : *next) {
    if (e.fence->context() == context) e = Entry{replacement, usage};
  }
  Publish(std::move(next));
}

void Resv::Copy(const Resv& src) {
  CheckLocked();
  auto next = std::make_shared<List>();
  src.ForEachUnlocked(ResvUsage::kBookkeep, [&](const FenceRef& f, ResvUsage usage) {
    next->push_back(Entry{f, usage});
  });
  Publish(std::move(next));
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
