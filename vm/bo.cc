#include "vm/bo.h"

#include "base/check.h"

namespace vm {
namespace {
std::atomic<int64_t> g_live_bos{0};
}  // namespace

Bo::Bo(uint64_t size) : size_(size) { g_live_bos.fetch_add(1, std::memory_order_relaxed); }

Bo::~Bo() {
  UDRM_CHECK(vm_bos_.empty(), "vm::Bo freed while a VmBo still points at it");
  g_live_bos.fetch_sub(1, std::memory_order_relaxed);
}

int64_t Bo::live_count() { return g_live_bos.load(std::memory_order_relaxed); }

Ref<Bo> Bo::Create(uint64_t size) {
  Bo* bo = new Bo(size);
  bo->own_resv_ = std::make_unique<fence::Resv>();
  bo->resv_ = bo->own_resv_.get();
  return Ref<Bo>::Adopt(bo);
}

Ref<Bo> Bo::CreateSharingResv(uint64_t size, Bo& resv_owner) {
  UDRM_CHECK(resv_owner.own_resv_ != nullptr,
             "Bo::CreateSharingResv: the resv owner must own its resv");
  Bo* bo = new Bo(size);
  bo->resv_owner_ = Ref<Bo>::Share(&resv_owner);
  bo->resv_ = resv_owner.own_resv_.get();
  return Ref<Bo>::Adopt(bo);
}

std::span<std::byte> Bo::memory() {
  absl::call_once(memory_once_, [this] { memory_.reset(new std::byte[size_]()); });
  return {memory_.get(), size_};
}

void Bo::Put() {
  const int before = refs_.fetch_sub(1, std::memory_order_acq_rel);
  UDRM_CHECK(before > 0, "vm::Bo::Put without a reference");
  if (before == 1) delete this;
}

}  // namespace vm
