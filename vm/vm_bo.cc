#include "vm/vm_bo.h"

#include <algorithm>

#include "base/check.h"

namespace vm {
namespace {
std::atomic<int64_t> g_live_vm_bos{0};
}  // namespace

int64_t VmBo::live_count() { return g_live_vm_bos.load(std::memory_order_relaxed); }

VmBo::VmBo(Gpuvm& vm, Bo& bo) : vm_(&vm), bo_(&bo) {
  vm.Get();
  bo.Get();
  g_live_vm_bos.fetch_add(1, std::memory_order_relaxed);
}

VmBo::~VmBo() { g_live_vm_bos.fetch_sub(1, std::memory_order_relaxed); }

void VmBo::CheckGpuvaLock() const {
  if (vm_->immediate_mode()) {
    bo_->gpuva_mu().AssertHeld();
  } else {
    UDRM_CHECK(bo_->resv().lock().IsLocked(),
               "vm::VmBo: the BO's gpuva lock (its resv) is not held");
  }
}

Ref<VmBo> VmBo::Create(Gpuvm& vm, Bo& bo) { return Ref<VmBo>::Adopt(new VmBo(vm, bo)); }

Ref<VmBo> VmBo::Find(Gpuvm& vm, Bo& bo) {
  if (vm.immediate_mode()) {
    bo.gpuva_mu().AssertHeld();
  } else {
    UDRM_CHECK(bo.resv().lock().IsLocked(), "vm::VmBo::Find without the BO's gpuva lock");
  }
  for (VmBo* vb = bo.vm_bos_.front(); vb != nullptr; vb = decltype(bo.vm_bos_)::Next(vb)) {
    if (vb->vm_ == &vm && vb->TryGet()) return Ref<VmBo>::Adopt(vb);
  }
  return Ref<VmBo>();
}

Ref<VmBo> VmBo::Obtain(Gpuvm& vm, Bo& bo) {
  if (Ref<VmBo> found = Find(vm, bo)) return found;
  Ref<VmBo> vb = Create(vm, bo);
  bo.vm_bos_.PushBack(vb.get());
  vb->in_bo_list_ = true;
  return vb;
}

Ref<VmBo> VmBo::ObtainPrealloc(Ref<VmBo> pre) {
  UDRM_CHECK(!pre->in_bo_list_ && !pre->in_extobj_list() && !pre->in_evict_list(),
             "vm::VmBo::ObtainPrealloc of a VmBo already in a list");
  Gpuvm& vm = *pre->vm_;
  Bo& bo = *pre->bo_;
  auto obtain = [&]() -> Ref<VmBo> {
    if (Ref<VmBo> found = Find(vm, bo)) return found;
    bo.vm_bos_.PushBack(pre.get());
    pre->in_bo_list_ = true;
    return std::move(pre);
  };
  if (!vm.immediate_mode()) return obtain();
  Ref<VmBo> result;
  {
    absl::MutexLock l(&bo.gpuva_mu());
    result = obtain();
  }
  // A `pre` not used is dropped here, after the mutex (its last put only frees: it is in no list).
  pre.reset();
  return result;
}

bool VmBo::TryGet() {
  int n = refs_.load(std::memory_order_relaxed);
  while (n != 0) {
    if (refs_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

void VmBo::UnlinkFromBo() {
  if (!in_bo_list_) return;
  bo_->vm_bos_.Erase(this);
  in_bo_list_ = false;
}

void VmBo::Destroy() {
  RemoveFromList(Gpuvm::List::kExtobj);
  RemoveFromList(Gpuvm::List::kEvict);
  Gpuvm* vm = vm_;
  Bo* bo = bo_;
  delete this;
  bo->Put();
  vm->Put();
}

void VmBo::Put() {
  const int before = refs_.fetch_sub(1, std::memory_order_acq_rel);
  UDRM_CHECK(before > 0, "vm::VmBo::Put without a reference");
  if (before != 1) return;
  UDRM_CHECK(va_head_ == nullptr, "vm::VmBo freed with VAs linked");
  if (in_bo_list_) CheckGpuvaLock();
  UnlinkFromBo();
  Destroy();
}

void VmBo::PutDeferred() {
  UDRM_CHECK(vm_->immediate_mode(), "vm::VmBo::PutDeferred outside kImmediateMode");
  int n = refs_.load(std::memory_order_relaxed);
  while (n > 1) {  // not the last: no lock
    if (refs_.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) return;
  }
  Gpuvm* vm = vm_;
  {
    absl::MutexLock l(&bo_->gpuva_mu());  // kref_put_mutex
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    UnlinkFromBo();
  }
  // Queued only after the mutex is released, so the BO cannot be freed while it is held.
  absl::MutexLock l(&vm->lists_mu_);
  vm->deferred_.PushBack(this);
}

void Gpuvm::DeferredCleanup() {
  internal::IntrusiveList<VmBo, internal::DeferredTag> batch;
  {
    absl::MutexLock l(&lists_mu_);
    batch = deferred_.TakeAll();
  }
  batch.ForEach([](VmBo* vb) { vb->Destroy(); });
}

void VmBo::Link(Gpuva* va) {
  CheckGpuvaLock();
  UDRM_CHECK(va->vm_bo == nullptr, "vm::VmBo::Link of a VA already linked");
  UDRM_CHECK(va->bo == bo_, "vm::VmBo::Link of a VA of another BO");
  Get();
  va->vm_bo = this;
  va->bo_prev = va_tail_;
  va->bo_next = nullptr;
  (va_tail_ != nullptr ? va_tail_->bo_next : va_head_) = va;
  va_tail_ = va;
}

namespace {
// Removes `va` from its VmBo's list; returns the VmBo (whose reference the caller drops).
VmBo* TakeFromList(Gpuva* va, Gpuva*& head, Gpuva*& tail) {
  VmBo* vb = va->vm_bo;
  (va->bo_prev != nullptr ? va->bo_prev->bo_next : head) = va->bo_next;
  (va->bo_next != nullptr ? va->bo_next->bo_prev : tail) = va->bo_prev;
  va->bo_prev = va->bo_next = nullptr;
  va->vm_bo = nullptr;
  return vb;
}
}  // namespace

void VmBo::Unlink(Gpuva* va) {
  VmBo* vb = va->vm_bo;
  if (vb == nullptr) return;  // a sparse VA, or never linked
  vb->CheckGpuvaLock();
  TakeFromList(va, vb->va_head_, vb->va_tail_)->Put();
}

void VmBo::UnlinkDefer(Gpuva* va) {
  VmBo* vb = va->vm_bo;
  if (vb == nullptr) return;
  UDRM_CHECK(vb->vm_->immediate_mode(), "vm::VmBo::UnlinkDefer outside kImmediateMode");
  {
    absl::MutexLock l(&vb->bo_->gpuva_mu());
    TakeFromList(va, vb->va_head_, vb->va_tail_);
  }
  vb->PutDeferred();
}

bool VmBo::in_extobj_list() const {
  absl::MutexLock l(&vm_->lists_mu_);
  return in_extobj_;
}

bool VmBo::in_evict_list() const {
  absl::MutexLock l(&vm_->lists_mu_);
  return in_evict_;
}

void VmBo::AddToList(Gpuvm::List which) {
  absl::MutexLock l(&vm_->lists_mu_);
  if (which == Gpuvm::List::kExtobj) {
    if (in_extobj_) return;
    vm_->extobjs_.PushBack(this);
    in_extobj_ = true;
  } else {
    if (in_evict_) return;
    vm_->evicted_.PushBack(this);
    in_evict_ = true;
  }
}

void VmBo::RemoveFromList(Gpuvm::List which) {
  absl::MutexLock l(&vm_->lists_mu_);
  if (which == Gpuvm::List::kExtobj) {
    if (!in_extobj_) return;
    vm_->extobjs_.Erase(this);
    in_extobj_ = false;
  } else {
    if (!in_evict_) return;
    vm_->evicted_.Erase(this);
    in_evict_ = false;
  }
}

void VmBo::ExtobjAdd() {
  if (vm_->IsExtobj(*bo_)) AddToList(Gpuvm::List::kExtobj);
}

void VmBo::Evict(bool evict) {
  UDRM_CHECK(bo_->resv().lock().IsLocked(), "vm::VmBo::Evict without the BO's resv");
  evicted_ = evict;
  // A shared BO's eviction does not hold the VM resv: only the flag (PrepareObjects fixes up).
  if (vm_->IsExtobj(*bo_) && vm_->resv_protected()) return;
  if (evict) {
    AddToList(Gpuvm::List::kEvict);
  } else {
    RemoveFromList(Gpuvm::List::kEvict);
  }
}

std::vector<Ref<VmBo>> Gpuvm::Snapshot(List which) const {
  std::vector<Ref<VmBo>> out;
  absl::MutexLock l(&lists_mu_);
  auto take = [&](VmBo* vb) {
    if (vb->TryGet()) out.push_back(Ref<VmBo>::Adopt(vb));
  };
  if (which == List::kExtobj) {
    extobjs_.ForEach(take);
  } else {
    evicted_.ForEach(take);
  }
  return out;
}

std::vector<Ref<VmBo>> Gpuvm::ExtobjsForTesting() const { return Snapshot(List::kExtobj); }
std::vector<Ref<VmBo>> Gpuvm::EvictedForTesting() const { return Snapshot(List::kEvict); }

}  // namespace vm
