#include "vm/bind_steps.h"

#include <utility>

#include "base/check.h"
#include "vm/gpuvm_exec.h"
#include "vm/gpuvm_ops.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

bool IsMap(const BindOp& op) { return op.kind != BindOpKind::kUnmap; }

uint32_t PteFlags(const BindOp& op) {
  uint32_t f = 0;
  if (op.flags & kBindRead) f |= kPteRead;
  if (op.flags & kBindWrite) f |= kPteWrite;
  if (op.kind == BindOpKind::kMapNull) f |= kPteSparse;
  return f;
}

absl::Status ValidateOp(const BindVm& vm, const BindOp& op) {
  const Gpuvm& g = vm.gpuvm();
  if (op.kind != BindOpKind::kMap && op.kind != BindOpKind::kMapNull &&
      op.kind != BindOpKind::kUnmap) {
    return absl::InvalidArgumentError("unknown bind op kind");
  }
  if (op.flags & ~kBindFlagsMask) return absl::InvalidArgumentError("unknown bind op flags");
  if (absl::Status s = g.CheckRange(op.va, op.range); !s.ok()) return s;
  if (op.kind != BindOpKind::kMap) {
    if (op.bo != nullptr || op.bo_offset != 0) {
      return absl::InvalidArgumentError("MAP_NULL and UNMAP take no BO and no BO offset");
    }
  }
  if (!IsMap(op)) return absl::OkStatus();
  if ((op.flags & kBindFlagsMask) == 0) {
    return absl::InvalidArgumentError("a mapping needs read or write access");
  }
  const uint64_t page = PageBytes(op.page_size);
  if (page == 0 || op.va % page != 0 || op.range % page != 0) {
    return absl::InvalidArgumentError("va or range not aligned to the page-size hint");
  }
  if (op.kind == BindOpKind::kMap) {
    if (op.bo == nullptr) return absl::InvalidArgumentError("MAP needs a BO");
    if (absl::Status s = g.CheckMapping(op.va, op.range, op.bo, op.bo_offset); !s.ok()) return s;
    if (op.range > (uint64_t{1} << BindVm::kSlotShift)) {
      return absl::InvalidArgumentError("a BO mapping is limited to 4 GiB");
    }
  }
  return absl::OkStatus();
}

// The largest page size <= hint that addr, range and target (if any) are aligned to.
PageSize FitPageSize(PageSize hint, uint64_t addr, uint64_t range, uint64_t target) {
  for (int s = static_cast<int>(hint); s > 0; --s) {
    const uint64_t b = PageBytes(static_cast<PageSize>(s));
    if (addr % b == 0 && range % b == 0 && target % b == 0) return static_cast<PageSize>(s);
  }
  return PageSize::k4K;
}

// The split/merge callbacks of ApplyBind (msm's vm_bind_job step_map/remap/unmap).
class BindApplier final : public SmSteps {
 public:
  BindApplier(BindVm& vm, const BindOp& op, size_t index, BindJob& job)
      : vm_(vm), op_(op), index_(index), job_(job) {}

  absl::Status StepMap(const OpMap& m) override {
    BindVa* va = TakeVa();
    va->target = job_.targets_[index_];
    va->pte_flags = PteFlags(op_);
    va->page_size = op_.page_size;
    if (m.bo == nullptr) va->flags |= Gpuva::kSparse;
    ApplyMap(vm_.gpuvm(), va, m);
    if (m.bo != nullptr) {
      Ref<VmBo> vb = VmBo::ObtainPrealloc(std::move(job_.vm_bos_[index_]));
      vb->ExtobjAdd();
      vb->Link(va);
    }
    Append({BindEntry::Kind::kMap, m.addr, m.range, va->target, va->pte_flags, va->page_size,
            Ref<Bo>::Share(m.bo), index_});
    return absl::OkStatus();
  }

  absl::Status StepRemap(const OpRemap& r) override {
    auto* old = static_cast<BindVa*>(r.unmap.va);
    const AddrRange hole = RemapToUnmapRange(r);
    Append({BindEntry::Kind::kUnmap, hole.addr, hole.range, 0, 0, PageSize::k4K,
            Ref<Bo>::Share(old->bo), index_});
    BindVa* prev = r.prev.has_value() ? Piece(*old, *r.prev) : nullptr;
    BindVa* next = r.next.has_value() ? Piece(*old, *r.next) : nullptr;
    VmBo* vb = old->vm_bo;
    ApplyRemap(vm_.gpuvm(), prev, next, r);
    if (vb != nullptr) {
      if (prev != nullptr) vb->Link(prev);
      if (next != nullptr) vb->Link(next);
      VmBo::Unlink(old);  // after the links: the VmBo stays alive
    }
    Retire(old);
    return absl::OkStatus();
  }

  absl::Status StepUnmap(const OpUnmap& u) override {
    auto* va = static_cast<BindVa*>(u.va);
    Append({BindEntry::Kind::kUnmap, va->addr, va->range, 0, 0, PageSize::k4K,
            Ref<Bo>::Share(va->bo), index_});
    if (va->vm_bo != nullptr) VmBo::Unlink(va);
    ApplyUnmap(vm_.gpuvm(), u);
    Retire(va);
    return absl::OkStatus();
  }

 private:
  BindVa* TakeVa() {
    UDRM_CHECK(!job_.free_vas_.empty(), "bind: Gpuva pre-allocation exhausted");
    BindVa* va = job_.free_vas_.back().release();
    job_.free_vas_.pop_back();
    return va;
  }
  BindVa* Piece(const BindVa& old, const OpMap& m) {
    BindVa* va = TakeVa();
    va->flags = old.flags;
    va->pte_flags = old.pte_flags;
    va->target = old.target == 0 ? 0 : old.target + (m.addr - old.addr);
    va->page_size = FitPageSize(old.page_size, m.addr, m.range, va->target);
    return va;
  }
  void Append(BindEntry e) {
    UDRM_CHECK(job_.entries_.size() < job_.entries_.capacity(),
               "bind: op-list pre-allocation exhausted");
    job_.entries_.push_back(std::move(e));
  }
  void Retire(BindVa* va) {
    UDRM_CHECK(job_.removed_vas_.size() < job_.removed_vas_.capacity(),
               "bind: removed-VA pre-allocation exhausted");
    job_.removed_vas_.push_back(va);
  }

  BindVm& vm_;
  const BindOp& op_;
  const size_t index_;
  BindJob& job_;
};

}  // namespace

absl::Status ValidateBind(const BindVm& vm, std::span<const BindOp> ops,
                          std::span<const fence::FenceRef> in_fences) {
  if (vm.closed()) return absl::FailedPreconditionError("VM closed");
  if (vm.unusable()) return absl::FailedPreconditionError("VM unusable");
  if (ops.empty()) return absl::InvalidArgumentError("a bind needs at least one op");
  for (size_t i = 0; i < ops.size(); ++i) {
    if (absl::Status s = ValidateOp(vm, ops[i]); !s.ok()) {
      return absl::Status(s.code(), "bind op " + std::to_string(i) + ": " + std::string(s.message()));
    }
  }
  for (const fence::FenceRef& f : in_fences) {
    if (f == nullptr) return absl::InvalidArgumentError("null in-fence");
  }
  return absl::OkStatus();
}

absl::Status LockBind(BindVm& vm, exec::Exec& exec, std::span<const BindOp> ops) {
  Gpuvm& g = vm.gpuvm();
  return exec.UntilAllLocked([&](exec::Exec& e) -> absl::Status {
    if (absl::Status s = PrepareVm(g, e, 1); !s.ok()) return s;
    for (const BindOp& op : ops) {
      absl::Status s = IsMap(op) ? SmMapExecLock(g, e, 1, MapRequest{OpMap{op.va, op.range,
                                                                          op.bo, op.bo_offset}})
                                 : SmUnmapExecLock(g, e, op.va, op.range);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  });
}

BindBounds BindWorstCase(const Gpuvm& vm, std::span<const BindOp> ops) {
  BindBounds b;
  for (const BindOp& op : ops) {
    size_t overlapping = 0;
    for (Gpuva* va : vm.Range(op.va, op.va + op.range)) {
      if (va != &vm.kernel_node()) ++overlapping;
    }
    // Every node created by an earlier op of this bind may overlap this one too.
    b.entries += overlapping + b.vas + (IsMap(op) ? 1 : 0);
    b.vas += 2 + (IsMap(op) ? 1 : 0);
  }
  return b;
}

absl::StatusOr<std::vector<OpTables>> ReservePageTables(PageTable& pt, std::span<const BindOp> ops,
                                                       std::span<const uint64_t> targets) {
  std::vector<OpTables> tables(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const BindOp& op = ops[i];
    absl::StatusOr<Prealloc> u = pt.ReserveForUnmap(op.va, op.range);
    absl::StatusOr<Prealloc> m = Prealloc();
    if (u.ok() && IsMap(op)) {
      m = pt.ReserveForMap(op.va, op.range, targets[i], PteFlags(op), op.page_size);
      if (!m.ok()) pt.Unreserve(*std::move(u));
    }
    absl::Status st = !u.ok() ? u.status() : m.status();
    if (!st.ok()) {  // `u` was handed back above if `m` failed
      UnreservePageTables(pt, tables);
      return st;
    }
    tables[i].unmap = *std::move(u);
    if (IsMap(op)) tables[i].map = *std::move(m);
  }
  return tables;
}

void UnreservePageTables(PageTable& pt, std::vector<OpTables>& tables) {
  for (OpTables& t : tables) {
    pt.Unreserve(std::move(t.unmap));
    pt.Unreserve(std::move(t.map));
  }
  tables.clear();
}

absl::StatusOr<std::unique_ptr<BindJob>> PreallocBind(BindVm& vm, sched::Entity& entity,
                                                      std::span<const BindOp> ops,
                                                      std::span<const fence::FenceRef> in_fences) {
  auto job = std::make_unique<BindJob>(&vm);
  if (absl::Status s = job->Init(&entity, 1); !s.ok()) return s;
  for (const fence::FenceRef& f : in_fences) {
    if (absl::Status s = job->AddDependency(f); !s.ok()) return s;
  }
  if (absl::Status s = job->AddDependency(vm.last_fence()); !s.ok()) return s;
  job->SetDontPipeline();

  const BindBounds b = BindWorstCase(vm.gpuvm(), ops);
  job->free_vas_.reserve(b.vas);
  for (size_t i = 0; i < b.vas; ++i) job->free_vas_.push_back(std::make_unique<BindVa>());
  job->entries_.reserve(b.entries);
  job->removed_vas_.reserve(b.entries);
  job->vm_bos_.resize(ops.size());
  job->targets_.assign(ops.size(), 0);
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind != BindOpKind::kMap) continue;
    absl::StatusOr<uint64_t> t =
        vm.AssignDeviceAddress(ops[i].bo->memory().data() + ops[i].bo_offset);
    if (!t.ok()) return t.status();
    job->targets_[i] = *t;
    job->vm_bos_[i] = VmBo::Create(vm.gpuvm(), *ops[i].bo);
  }
  absl::StatusOr<std::vector<OpTables>> tables =
      ReservePageTables(vm.page_table(), ops, job->targets_);
  if (!tables.ok()) return tables.status();
  job->tables_ = *std::move(tables);
  return job;
}

void ApplyBind(BindVm& vm, std::span<const BindOp> ops, BindJob& job) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const BindOp& op = ops[i];
    BindApplier steps(vm, op, i, job);
    absl::Status s =
        IsMap(op) ? SmMap(vm.gpuvm(), MapRequest{OpMap{op.va, op.range, op.bo, op.bo_offset}}, steps)
                  : SmUnmap(vm.gpuvm(), op.va, op.range, steps);
    UDRM_CHECK(s.ok(), "bind: a validated op failed to apply");
  }
}

}  // namespace vm
