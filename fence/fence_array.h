// fence::FenceArray — dma_fence_array: a fence that signals when all of its fences have.
//
// What it is: a container of leaf fences with its own context and seqno. It signals once every
// member has signalled; its error is the first member error it observes (members are visited from
// the last to the first, as the kernel's one-callback-at-a-time array does since 2026). The
// kernel's signal-on-any mode was removed upstream in 2026 and is not provided.
//
// Lifetime: the array holds references to its members. While signalling is enabled and members
// are pending, the array keeps itself alive.
//
// Thread-safety and memory ordering: as fence::Fence. The array signals on the thread that
// signalled its last pending member (or that polled it complete).
#ifndef UDRM_FENCE_FENCE_ARRAY_H_
#define UDRM_FENCE_FENCE_ARRAY_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "fence/fence.h"

namespace fence {

class FenceArray final : public Fence {
 public:
  // dma_fence_array_create. InvalidArgument (and nothing created) when `fences` is empty, holds a
  // null, or holds a container (chain or array): callers flatten first (see Merge()).
  static absl::StatusOr<std::shared_ptr<FenceArray>> Create(std::vector<FenceRef> fences,
                                                            uint64_t context, uint64_t seqno);

  static FenceArray* Cast(Fence* f);

  std::span<const FenceRef> fences() const { return fences_; }
  bool IsContainer() const override { return true; }

  // Use Create().
  FenceArray(std::vector<FenceRef> fences, uint64_t context, uint64_t seqno);

 protected:
  bool EnableSignalingHook() override;
  bool PollSignaled() override;
  std::string_view DriverNameHook() const override { return "dma_fence_array"; }
  std::string_view TimelineNameHook() const override { return "unbound"; }

 private:
  // Arms the callback on the next pending member, walking down from the end; false when every
  // member has signalled (then the array is signalled with the first error seen).
  bool ArmNext();
  void OnMemberSignaled(Fence& member);

  const std::vector<FenceRef> fences_;
  // The arming sequence's state. Only one step runs at a time; each hands over to the next
  // through the member fence it armed (whose lock orders them).
  size_t unvisited_;
  absl::Status first_error_;
  FenceCallback cb_;
  FenceRef self_while_armed_;
};

}  // namespace fence

#endif  // UDRM_FENCE_FENCE_ARRAY_H_
