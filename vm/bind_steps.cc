#include "vm/bind_steps.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <utility>

#include "absl/container/inlined_vector.h"

#include "base/check.h"
#include "vm/gpuvm_exec.h"
#include "vm/gpuvm_ops.h"
#include "vm/internal/failslab.h"
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
    vm_.RefDeviceAddress(va->target);
    va->pte_flags = PteFlags(op_);
    va->page_size = op_.page_size;
    if (m.bo == nullptr) va->flags |= Gpuva::kSparse;
    ApplyMap(vm_.gpuvm(), va, m);
    if (m.bo != nullptr) {
      // The prealloc step found the VmBo, or shares one Create'd VmBo among the ops mapping the
      // same BO: only the first of them obtains it.
      Ref<VmBo> pre = std::move(job_.vm_bos_[index_]);
      Ref<VmBo> vb = pre->in_bo_list() ? std::move(pre) : VmBo::ObtainPrealloc(std::move(pre));
      // A VmBo with VAs joined the extobj list at its first map (only Destroy leaves it): the
      // list's mutex once per BO, not once per op.
      if (!vb->has_vas()) vb->ExtobjAdd();
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
    return job_.free_vas_.Pop();
  }
  BindVa* Piece(const BindVa& old, const OpMap& m) {
    BindVa* va = TakeVa();
    va->flags = old.flags;
    va->pte_flags = old.pte_flags;
    va->target = old.target == 0 ? 0 : old.target + (m.addr - old.addr);
    vm_.RefDeviceAddress(va->target);
    va->page_size = FitPageSize(old.page_size, m.addr, m.range, va->target);
    return va;
  }
  void Append(BindEntry e) {
    UDRM_CHECK(job_.entries_.size() < job_.plan_.size(), "bind: op-list pre-allocation exhausted");
    const PlannedEntry& want = job_.plan_[job_.entries_.size()];
    UDRM_CHECK(want.kind == e.kind && want.va == e.va && want.range == e.range && want.op == e.op,
               "bind: an entry differs from the plan");
    job_.entries_.push_back(std::move(e));
  }
  void Retire(BindVa* va) {
    UDRM_CHECK(job_.removed_vas_.size() < job_.removed_planned_,
               "bind: more VAs removed than planned");
    job_.removed_vas_.Push(va);  // intrusive: cannot fail
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
      return absl::Status(s.code(),
                          "bind op " + std::to_string(i) + ": " + std::string(s.message()));
    }
  }
  for (const fence::FenceRef& f : in_fences) {
    if (f == nullptr) return absl::InvalidArgumentError("null in-fence");
  }
  return absl::OkStatus();
}

namespace {

// The exec's ticket holds `obj` (locked in this pass: a back-off unlocks everything, and the first
// lock of a pass takes the contended object). With kIgnoreDuplicates LockObj would return OK too,
// after building an AlreadyExists status (an allocation): the bind's BOs repeat across its ops.
bool HeldByExec(exec::Exec& exec, exec::Object* obj) {
  return obj->resv().lock().IsHeldBy(&exec.ticket());
}

// Locks the BO of every VA overlapping [lo, hi) (sparse VAs and the kernel node have none).
absl::Status LockOverlapping(Gpuvm& g, exec::Exec& exec, uint64_t lo, uint64_t hi) {
  for (Gpuva* va : g.Range(lo, hi)) {
    if (va->bo == nullptr || HeldByExec(exec, va->bo)) continue;
    if (absl::Status s = exec.LockObj(va->bo); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LockBind(BindVm& vm, exec::Exec& exec, std::span<const BindOp> ops) {
  return exec.UntilAllLocked([&](exec::Exec& e) -> absl::Status {
    if (absl::Status s = PrepareVm(vm.gpuvm(), e, 1); !s.ok()) return s;
    return LockBindBos(vm, e, ops);
  });
}

absl::Status LockBindBos(BindVm& vm, exec::Exec& e, std::span<const BindOp> ops) {
  Gpuvm& g = vm.gpuvm();
  {
    // Each mapped BO once, with one fence slot (Reserve keeps at least n: a BO that is held
    // already and has its slot needs nothing more; one held without a slot was the contended
    // object, which the pass's first lock took without reserving).
    for (const BindOp& op : ops) {
      if (op.bo == nullptr) continue;
      absl::Status s = !HeldByExec(e, op.bo)           ? e.PrepareObj(op.bo, 1)
                       : op.bo->resv().reserved() != 0 ? absl::OkStatus()
                                                       : op.bo->resv().Reserve(1);
      if (!s.ok()) return s;
    }
    // The BOs of the VAs the ops remap or unmap: every VA overlapping an op's range on the
    // unmodified tree (what SmMapExecLock / SmUnmapExecLock lock per op; vm/gpuvm_exec.h says
    // why the unmodified tree suffices), one walk per run of ops whose ranges join into one
    // interval (a list in address order of neighbouring ops is one walk).
    if (ops.empty()) return absl::OkStatus();
    uint64_t lo = ops.front().va;
    uint64_t hi = lo + ops.front().range;
    for (const BindOp& op : ops.subspan(1)) {
      if (op.va >= lo && op.va <= hi) {
        hi = std::max(hi, op.va + op.range);
        continue;
      }
      if (absl::Status s = LockOverlapping(g, e, lo, hi); !s.ok()) return s;
      lo = op.va;
      hi = op.va + op.range;
    }
    return LockOverlapping(g, e, lo, hi);
  }
}

absl::Status ReservePageTables(PageTable& pt, std::span<const BindOp> ops,
                               std::span<const PlannedEntry> plan,
                               std::span<const uint64_t> targets, Prealloc& list) {
  PageTable::ListBound bound(pt);
  for (size_t k = 0; k < plan.size();) {
    const PlannedEntry& e = plan[k];
    const size_t end = PageTableCallEnd(plan, k);
    const BindOp& op = ops[e.op];
    absl::Status s =
        e.kind == BindEntry::Kind::kUnmap
            ? bound.AddUnmap(e.va, plan[end - 1].va + plan[end - 1].range - e.va)
            : bound.AddMap(e.va, e.range, targets[e.op], PteFlags(op), op.page_size);
    if (!s.ok()) return s;
    k = end;
  }
  if (internal::ShouldFailAlloc("page tables")) {
    return absl::ResourceExhaustedError("bind: reserving page tables failed");
  }
  pt.Reserve(bound, list);
  return absl::OkStatus();
}

void UnreservePageTables(PageTable& pt, Prealloc& list) { pt.Unreserve(std::move(list)); }

namespace {

absl::Status Exhausted(const char* what) {
  return absl::ResourceExhaustedError(std::string("bind: allocating ") + what + " failed");
}

// The job's dependencies: the in-fences, then the pending page-table work of earlier binds on
// overlapping ranges (vm/bind_ranges.h), with the tracker's nodes for the push step.
absl::Status AddDependencies(BindVm& vm, BindJob& job, std::span<const BindOp> ops,
                             std::span<const fence::FenceRef> in_fences) {
  if (internal::ShouldFailAlloc("op ranges")) return Exhausted("the op ranges");
  job.ranges_.reserve(ops.size());
  for (const BindOp& op : ops) job.ranges_.push_back({op.va, op.range});
  // Merged: the same VA space in fewer ranges (a list of neighbouring ops is one range), so
  // fewer tracker lookups and nodes.
  auto by_addr = [](const AddrRange& a, const AddrRange& b) { return a.addr < b.addr; };
  if (!std::is_sorted(job.ranges_.begin(), job.ranges_.end(), by_addr)) {
    std::sort(job.ranges_.begin(), job.ranges_.end(), by_addr);
  }
  size_t n = 0;
  for (const AddrRange& r : job.ranges_) {
    if (n > 0 && r.addr <= job.ranges_[n - 1].addr + job.ranges_[n - 1].range) {
      AddrRange& last = job.ranges_[n - 1];
      last.range = std::max(last.addr + last.range, r.addr + r.range) - last.addr;
    } else {
      job.ranges_[n++] = r;
    }
  }
  job.ranges_.resize(n);
  if (internal::ShouldFailAlloc("range dependencies")) return Exhausted("the range dependencies");
  std::vector<fence::FenceRef> deps(in_fences.begin(), in_fences.end());
  bool saw_error = false;
  vm.ranges().Collect(job.ranges_, deps, &saw_error);
  if (saw_error) {  // an earlier bind on these ranges failed or was killed
    vm.MarkUnusable();
    return absl::FailedPreconditionError("VM unusable");
  }
  for (fence::FenceRef& f : deps) {
    if (internal::ShouldFailAlloc("job dependency")) return Exhausted("a job dependency");
    if (absl::Status s = job.AddDependency(std::move(f)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Gpuva nodes (the VM's cached ones first), op-list capacity, per-op arrays. The removed-VA
// list is intrusive (BindVaList): nothing to allocate.
absl::Status AllocateLists(BindVm& vm, BindJob& job, const BindPlan& plan, size_t ops) {
  vm.TakeVas(plan.vas, job.free_vas_);
  while (job.free_vas_.size() < plan.vas) {
    if (internal::ShouldFailAlloc("gpuva node")) return Exhausted("a Gpuva node");
    job.free_vas_.Push(new BindVa);
  }
  if (internal::ShouldFailAlloc("op list")) return Exhausted("the op list");
  job.entries_.reserve(plan.entries.size());
  if (internal::ShouldFailAlloc("per-op arrays")) return Exhausted("the per-op arrays");
  job.vm_bos_.resize(ops);
  job.targets_.assign(ops, 0);
  return absl::OkStatus();
}

constexpr size_t kExtobjScanMax = 16;

// Device addresses of the mapped ops, assigned under one lock per 64 mapped ops.
absl::Status AllocateTargets(BindVm& vm, BindJob& job, std::span<const BindOp> ops) {
  std::byte* hosts[64];
  size_t at[64];  // the ops of hosts[]
  size_t n = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind == BindOpKind::kMap) {
      if (internal::ShouldFailAlloc("device address")) return Exhausted("a device address");
      hosts[n] = ops[i].bo->memory().data() + ops[i].bo_offset;
      at[n++] = i;
    }
    if (n == std::size(hosts) || (i + 1 == ops.size() && n > 0)) {
      uint64_t targets[std::size(hosts)] = {};
      const absl::Status s = vm.AssignDeviceAddresses({hosts, n}, {targets, n});
      for (size_t k = 0; k < n; ++k) job.targets_[at[k]] = targets[k];  // 0: not assigned
      if (!s.ok()) return s;
      n = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace

// VmBos of the mapped BOs, and the mapped external BOs' resvs (each once).
absl::Status PreallocBindBos(BindVm& vm, std::span<const BindOp> ops, BindJob& job) {
  if (internal::ShouldFailAlloc("extobj resvs")) return Exhausted("the external BO resv list");
  job.extobj_resvs_.reserve(ops.size());
  // One VmBo per mapped BO, shared by the ops that map it: the existing one (Find: the BO is
  // locked, so it stays in the BO's list until the exec unlocks), else one from Create. Each
  // distinct external BO's resv is listed once (two BOs may share a resv).
  absl::InlinedVector<size_t, 8> first_op;  // per distinct mapped BO: its first op
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind != BindOpKind::kMap) continue;
    auto same = std::find_if(first_op.begin(), first_op.end(),
                             [&](size_t j) { return ops[j].bo == ops[i].bo; });
    if (same != first_op.end()) {
      job.vm_bos_[i] = job.vm_bos_[*same];
      continue;
    }
    if (vm.gpuvm().IsExtobj(*ops[i].bo)) {
      // Checked for duplicates as they come while the list is short; a long one is sorted and
      // made unique at the end instead (no quadratic work).
      fence::Resv* resv = &ops[i].bo->resv();
      if (job.extobj_resvs_.size() > kExtobjScanMax ||
          std::find(job.extobj_resvs_.begin(), job.extobj_resvs_.end(), resv) ==
              job.extobj_resvs_.end()) {
        job.extobj_resvs_.push_back(resv);
      }
    }
    if (internal::ShouldFailAlloc("vm_bo")) return Exhausted("a VmBo");
    first_op.push_back(i);
    job.vm_bos_[i] = VmBo::Find(vm.gpuvm(), *ops[i].bo);
    if (!job.vm_bos_[i]) job.vm_bos_[i] = VmBo::Create(vm.gpuvm(), *ops[i].bo);
  }
  if (job.extobj_resvs_.size() > kExtobjScanMax) {
    std::sort(job.extobj_resvs_.begin(), job.extobj_resvs_.end());
    job.extobj_resvs_.erase(std::unique(job.extobj_resvs_.begin(), job.extobj_resvs_.end()),
                            job.extobj_resvs_.end());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BindJob>> PreallocBindTree(
    BindVm& vm, sched::Entity& entity, std::span<const BindOp> ops,
    std::span<const fence::FenceRef> in_fences) {
  if (internal::ShouldFailAlloc("bind job")) return Exhausted("the bind job");
  auto job = std::make_unique<BindJob>(&vm);
  vm.TakeBuffers(*job);  // the lists' capacity of an earlier job, if any
  std::optional<BindPlan> plan(std::in_place);
  plan->entries.swap(job->plan_);
  if (absl::Status s = PlanBind(vm.gpuvm(), ops, *plan); !s.ok()) return s;
  if (absl::Status s = job->Init(&entity, 1); !s.ok()) return s;
  if (absl::Status s = AddDependencies(vm, *job, ops, in_fences); !s.ok()) return s;
  job->SetDontPipeline();
  if (absl::Status s = AllocateLists(vm, *job, *plan, ops.size()); !s.ok()) return s;
  if (internal::ShouldFailAlloc("tree nodes")) return Exhausted("the tree nodes");
  absl::StatusOr<Gpuvm::InsertReservation> inserts = vm.gpuvm().ReserveInserts(plan->vas);
  if (!inserts.ok()) return inserts.status();
  job->inserts_.emplace(*std::move(inserts));
  if (absl::Status s = AllocateTargets(vm, *job, ops); !s.ok()) return s;
  if (absl::Status s =
          ReservePageTables(vm.page_table(), ops, plan->entries, job->targets_, job->tables_);
      !s.ok()) {
    return s;
  }
  job->plan_ = std::move(plan->entries);
  job->removed_planned_ = plan->removed;
  return job;
}

absl::StatusOr<std::unique_ptr<BindJob>> PreallocBind(BindVm& vm, sched::Entity& entity,
                                                      std::span<const BindOp> ops,
                                                      std::span<const fence::FenceRef> in_fences) {
  absl::StatusOr<std::unique_ptr<BindJob>> job = PreallocBindTree(vm, entity, ops, in_fences);
  if (!job.ok()) return job;
  if (absl::Status s = PreallocBindBos(vm, ops, **job); !s.ok()) return s;
  if (absl::Status s = PreallocPush(vm, **job); !s.ok()) return s;
  return job;
}

absl::Status PreallocPush(BindVm& vm, BindJob& job) {
  return vm.ranges().Reserve(job.ranges_.size(), job.range_nodes_);
}

namespace {

// The steps SmMap / SmUnmap would hand over for `op`, from its planned entries when each names
// its VA (a plan without replay): the same steps, in the same order, with the same pieces
// (gpuvm_sm.cc's table: a VA sticking out of the op on either side is a remap whose pieces keep
// the old BO at the matching offsets; `keep` as the kernel computes it for a map), without the
// walk's search.
absl::Status StepPlanned(BindApplier& steps, const BindOp& op, std::span<const PlannedEntry> plan) {
  const uint64_t lo = op.va;
  const uint64_t hi = op.va + op.range;
  for (const PlannedEntry& e : plan) {
    if (e.kind != BindEntry::Kind::kUnmap) break;  // the op's MAP comes last
    Gpuva* va = e.node;
    std::optional<OpMap> prev, next;
    if (va->addr < lo) prev = OpMap{va->addr, lo - va->addr, va->bo, va->offset};
    if (va->end() > hi) next = OpMap{hi, va->end() - hi, va->bo, va->offset + (hi - va->addr)};
    const bool keep = op.kind != BindOpKind::kUnmap && va->bo != nullptr && va->bo == op.bo &&
                      (va->addr < lo ? va->offset + (lo - va->addr) == op.bo_offset
                                     : va->offset == op.bo_offset + (va->addr - lo));
    absl::Status s =
        prev || next ? steps.StepRemap({prev, next, {va, keep}}) : steps.StepUnmap({va, keep});
    if (!s.ok()) return s;
  }
  if (op.kind == BindOpKind::kUnmap) return absl::OkStatus();
  return steps.StepMap(OpMap{op.va, op.range, op.bo, op.bo_offset});
}

}  // namespace

void ApplyBind(BindVm& vm, std::span<const BindOp> ops, BindJob& job) {
  const std::span<const PlannedEntry> plan = job.plan_;
  size_t k = 0;  // the plan's first entry of op i
  for (size_t i = 0; i < ops.size(); ++i) {
    const BindOp& op = ops[i];
    size_t end = k;
    bool named = true;  // every unmap entry of the op names its VA
    for (; end < plan.size() && plan[end].op == i; ++end) {
      named &= plan[end].kind != BindEntry::Kind::kUnmap || plan[end].node != nullptr;
    }
    BindApplier steps(vm, op, i, job);
    // A plan without replay names the VAs: the steps follow from it (an op meeting no VA is
    // just its MAP, or nothing). A replayed plan: the split/merge walk.
    absl::Status s =
        named ? StepPlanned(steps, op, plan.subspan(k, end - k))
        : IsMap(op)
            ? SmMap(vm.gpuvm(), MapRequest{OpMap{op.va, op.range, op.bo, op.bo_offset}}, steps)
            : SmUnmap(vm.gpuvm(), op.va, op.range, steps);
    UDRM_CHECK(s.ok(), "bind: a validated op failed to apply");
    k = end;
  }
  job.inserts_.reset();  // every planned insert is done; unused tree nodes go back
  vm.NoteTreeChange();
}

}  // namespace vm
