#include "vm/gpuvm_exec.h"

#include "vm/vm_bo.h"

namespace vm {
namespace {

// drm_exec_prepare_obj with the gpuvm helpers' "0 fences = just lock" rule.
absl::Status PrepareObj(exec::Exec& exec, exec::Object* obj, size_t num_fences) {
  return num_fences == 0 ? exec.LockObj(obj) : exec.PrepareObj(obj, num_fences);
}

// The exec-lock walkers' contract is an Exec with kIgnoreDuplicates, for which LockObj of an
// object this exec already holds returns OK — after a ww-mutex call that builds an
// AlreadyExists status with a payload (an allocation). A bind list of 64 ops on 8 BOs met 56 such
// duplicates per walk; they are recognised here by the lock's owner (our ticket) instead. A
// back-off unlocks everything, and the first lock of a pass (the VM resv) takes the contended
// object, so what our ticket holds is exactly what this pass locked.
bool HeldByExec(exec::Exec& exec, exec::Object* obj) {
  return obj->resv().lock().IsHeldBy(&exec.ticket());
}

// The split/merge steps of the exec-lock walkers: lock the BO of every remapped/unmapped VA.
class LockSteps final : public SmSteps {
 public:
  explicit LockSteps(exec::Exec& exec) : exec_(exec) {}
  absl::Status StepMap(const OpMap&) override { return absl::OkStatus(); }
  absl::Status StepRemap(const OpRemap& op) override { return Lock(op.unmap.va); }
  absl::Status StepUnmap(const OpUnmap& op) override { return Lock(op.va); }

 private:
  absl::Status Lock(const Gpuva* va) {
    if (va->bo == nullptr || HeldByExec(exec_, va->bo)) return absl::OkStatus();
    return exec_.LockObj(va->bo);
  }
  exec::Exec& exec_;
};

}  // namespace

absl::Status PrepareVm(Gpuvm& vm, exec::Exec& exec, size_t num_fences) {
  return PrepareObj(exec, &vm.r_obj(), num_fences);
}

absl::Status PrepareObjects(Gpuvm& vm, exec::Exec& exec, size_t num_fences) {
  for (const Ref<VmBo>& vb : vm.Snapshot(Gpuvm::List::kExtobj)) {
    if (absl::Status s = PrepareObj(exec, &vb->bo(), num_fences); !s.ok()) return s;
    if (vm.resv_protected() && vb->evicted()) vb->AddToList(Gpuvm::List::kEvict);
  }
  return absl::OkStatus();
}

absl::Status PrepareRange(Gpuvm& vm, exec::Exec& exec, uint64_t addr, uint64_t range,
                          size_t num_fences) {
  if (absl::Status s = vm.CheckRange(addr, range); !s.ok()) return s;
  for (Gpuva* va : vm.Range(addr, addr + range)) {
    if (va->bo == nullptr) continue;  // sparse / NULL mapping, or the kernel node
    if (absl::Status s = PrepareObj(exec, va->bo, num_fences); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status GpuvmExec::ExecLock(absl::FunctionRef<absl::Status(GpuvmExec&)> extra) {
  return exec_.UntilAllLocked([&](exec::Exec& e) -> absl::Status {
    if (absl::Status s = PrepareVm(vm_, e, num_fences_); !s.ok()) return s;
    if (absl::Status s = PrepareObjects(vm_, e, num_fences_); !s.ok()) return s;
    return extra(*this);
  });
}

absl::Status GpuvmExec::ExecLock() {
  return ExecLock([](GpuvmExec&) { return absl::OkStatus(); });
}

absl::Status GpuvmExec::ExecLockArray(std::span<exec::Object* const> objs) {
  return ExecLock([&](GpuvmExec& ve) -> absl::Status {
    for (exec::Object* o : objs) {
      if (absl::Status s = PrepareObj(ve.exec(), o, num_fences_); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
}

absl::Status GpuvmExec::ExecLockRange(uint64_t addr, uint64_t range) {
  if (absl::Status s = vm_.CheckRange(addr, range); !s.ok()) return s;
  return ExecLock([&](GpuvmExec& ve) {
    return PrepareRange(vm_, ve.exec(), addr, range, num_fences_);
  });
}

absl::Status Validate(Gpuvm& vm, exec::Exec& exec) {
  if (!vm.vm_bo_validate_) return absl::UnimplementedError("vm: no vm_bo_validate hook");
  for (const Ref<VmBo>& vb : vm.Snapshot(Gpuvm::List::kEvict)) {
    if (absl::Status s = vm.vm_bo_validate_(*vb, exec); !s.ok()) return s;
    if (vm.resv_protected() && !vb->evicted()) vb->RemoveFromList(Gpuvm::List::kEvict);
  }
  return absl::OkStatus();
}

void ResvAddFence(Gpuvm& vm, exec::Exec& exec, const fence::FenceRef& fence,
                  fence::ResvUsage private_usage, fence::ResvUsage extobj_usage) {
  for (exec::Object* obj : exec.objects()) {
    const bool is_private = &obj->resv() == &vm.resv();
    obj->resv().AddFence(fence, is_private ? private_usage : extobj_usage);
  }
}

absl::Status SmMapExecLock(Gpuvm& vm, exec::Exec& exec, size_t num_fences,
                           const MapRequest& req) {
  const OpMap& m = req.op_map;
  if (absl::Status s = vm.CheckMapping(m.addr, m.range, m.bo, m.offset); !s.ok()) return s;
  if (m.bo != nullptr) {
    // A duplicate: what Exec::PrepareObj would do after its LockObj returned OK.
    absl::Status s = !HeldByExec(exec, m.bo) ? PrepareObj(exec, m.bo, num_fences)
                     : num_fences == 0       ? absl::OkStatus()
                                             : m.bo->resv().Reserve(num_fences);
    if (!s.ok()) return s;
  }
  LockSteps steps(exec);
  return SmMap(vm, req, steps);
}

absl::Status SmUnmapExecLock(Gpuvm& vm, exec::Exec& exec, uint64_t addr, uint64_t range) {
  LockSteps steps(exec);
  return SmUnmap(vm, addr, range, steps);
}

}  // namespace vm
