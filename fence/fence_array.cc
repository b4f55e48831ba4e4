#include "fence/fence_array.h"

#include <utility>

namespace fence {

absl::StatusOr<std::shared_ptr<FenceArray>> FenceArray::Create(std::vector<FenceRef> fences,
                                                               uint64_t context, uint64_t seqno) {
  if (fences.empty()) return absl::InvalidArgumentError("FenceArray needs at least one fence");
  for (const FenceRef& f : fences) {
    if (f == nullptr) return absl::InvalidArgumentError("FenceArray member is null");
    if (f->IsContainer()) {
      return absl::InvalidArgumentError("FenceArray member is a container; flatten it first");
    }
  }
  return std::make_shared<FenceArray>(std::move(fences), context, seqno);
}

FenceArray::FenceArray(std::vector<FenceRef> fences, uint64_t context, uint64_t seqno)
    : Fence(context, seqno, SeqnoWidth::k32), fences_(std::move(fences)), unvisited_(fences_.size()) {}

FenceArray* FenceArray::Cast(Fence* f) { return dynamic_cast<FenceArray*>(f); }

bool FenceArray::PollSignaled() {
  absl::Status first_error;
  for (size_t i = fences_.size(); i-- > 0;) {
    if (!fences_[i]->IsSignaled()) return false;
    if (first_error.ok()) first_error = fences_[i]->error();
  }
  if (!first_error.ok()) SignalWithError(std::move(first_error), absl::Now());
  return true;
}

bool FenceArray::ArmNext() {
  while (unvisited_ > 0) {
    const FenceRef& member = fences_[--unvisited_];
    self_while_armed_ = shared_from_this();
    if (member->AddCallback(&cb_, [this](Fence& f) { OnMemberSignaled(f); }).ok()) return true;
    if (first_error_.ok()) first_error_ = member->error();
  }
  self_while_armed_ = nullptr;
  return false;
}

bool FenceArray::EnableSignalingHook() {
  if (ArmNext()) return true;
  // Every member had signalled: complete now, with the first error seen.
  if (!first_error_.ok()) SignalWithError(first_error_, absl::Now());
  return false;
}

void FenceArray::OnMemberSignaled(Fence& member) {
  FenceRef keep_alive = std::move(self_while_armed_);
  if (first_error_.ok()) first_error_ = member.error();
  if (!ArmNext()) SignalWithError(first_error_, absl::Now());
}

}  // namespace fence
