// Split/merge walks (see gpuvm_ops.h); the table in the reference §1.3, row by row.
#include <utility>

#include "base/check.h"
#include "vm/gpuvm_ops.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

// The walk over the VAs overlapping [addr, end): the next VA is looked up after each step from
// where the current one ended, so a step may remove the current VA and insert its pieces
// outside the request window. The callback form (a non-const VM: steps may change the tree at
// once) walks with RangeForUpdate, so those changes start from the VM's finger.
Gpuvm::VaRange WalkRange(const Gpuvm& vm, uint64_t addr, uint64_t end) {
  return vm.Range(addr, end);
}
Gpuvm::VaRange WalkRange(Gpuvm& vm, uint64_t addr, uint64_t end) {
  return vm.RangeForUpdate(addr, end);
}

template <typename VM, typename F>
absl::Status ForEachOverlapping(VM& vm, uint64_t addr, uint64_t end, F&& f) {
  for (Gpuva* va : WalkRange(vm, addr, end)) {
    bool stop = false;
    if (absl::Status s = f(va, stop); !s.ok() || stop) return s;
  }
  return absl::OkStatus();
}

template <typename VM>
absl::Status WalkMap(VM& vm, const OpMap& req, SmSteps& steps) {
  const uint64_t req_end = req.addr + req.range;
  absl::Status s = ForEachOverlapping(vm, req.addr, req_end, [&](Gpuva* va, bool& stop) {
    Bo* const bo = va->bo;
    const uint64_t off = va->offset;
    const uint64_t addr = va->addr;
    const uint64_t end = va->end();
    bool merge = bo != nullptr;
    if (addr == req.addr) {
      merge &= bo == req.bo && off == req.offset;
      if (end <= req_end) {  // the VA lies inside the request
        stop = end == req_end;
        return steps.StepUnmap({va, merge});
      }
      stop = true;
      return steps.StepRemap(
          {std::nullopt, OpMap{req_end, end - req_end, bo, off + req.range}, {va, merge}});
    }
    if (addr < req.addr) {
      const uint64_t ls_range = req.addr - addr;
      const OpMap prev{addr, ls_range, bo, off};
      merge &= bo == req.bo && off + ls_range == req.offset;
      if (end <= req_end) {
        stop = end == req_end;
        return steps.StepRemap({prev, std::nullopt, {va, merge}});
      }
      stop = true;
      return steps.StepRemap(
          {prev, OpMap{req_end, end - req_end, bo, off + ls_range + req.range}, {va, merge}});
    }
    // addr > req.addr
    merge &= bo == req.bo && off == req.offset + (addr - req.addr);
    if (end <= req_end) {
      stop = end == req_end;
      return steps.StepUnmap({va, merge});
    }
    stop = true;
    return steps.StepRemap(
        {std::nullopt, OpMap{req_end, end - req_end, bo, off + (req_end - addr)}, {va, merge}});
  });
  if (!s.ok()) return s;
  return steps.StepMap(req);
}

template <typename VM>
absl::Status WalkUnmap(VM& vm, uint64_t req_addr, uint64_t req_range, SmSteps& steps) {
  const uint64_t req_end = req_addr + req_range;
  return ForEachOverlapping(vm, req_addr, req_end, [&](Gpuva* va, bool& stop) {
    std::optional<OpMap> prev, next;
    if (va->addr < req_addr) prev = OpMap{va->addr, req_addr - va->addr, va->bo, va->offset};
    if (va->end() > req_end) {
      next = OpMap{req_end, va->end() - req_end, va->bo, va->offset + (req_end - va->addr)};
    }
    if (prev || next) return steps.StepRemap({prev, next, {va, false}});
    return steps.StepUnmap({va, false});
  });
}

// madvise: only NULL-BO VAs crossing a boundary of the request are split (reference §1.6).
absl::Status WalkMadvise(const Gpuvm& vm, const OpMap& req, SmSteps& steps) {
  const uint64_t req_end = req.addr + req.range;
  return ForEachOverlapping(vm, req.addr, req_end, [&](Gpuva* va, bool& stop) -> absl::Status {
    if (va->bo != nullptr) return absl::OkStatus();
    const uint64_t addr = va->addr;
    const uint64_t end = va->end();
    const uint64_t off = va->offset;
    if (addr == req.addr) {
      if (end <= req_end) {
        stop = end == req_end;
        return absl::OkStatus();
      }
      stop = true;
      absl::Status s = steps.StepRemap(
          {std::nullopt, OpMap{req_end, end - req_end, nullptr, off + req.range}, {va, false}});
      return s.ok() ? steps.StepMap(req) : s;
    }
    if (addr < req.addr) {
      const uint64_t ls_range = req.addr - addr;
      std::optional<OpMap> next;
      if (end > req_end) {
        next = OpMap{req_end, end - req_end, nullptr, off + ls_range + req.range};
      }
      absl::Status s = steps.StepRemap({OpMap{addr, ls_range, nullptr, off}, next, {va, false}});
      if (!s.ok()) return s;
      if (end >= req_end) {
        stop = true;
        return steps.StepMap(req);
      }
      return steps.StepMap(OpMap{req.addr, end - req.addr, nullptr, 0});
    }
    if (end <= req_end) return absl::OkStatus();
    stop = true;
    absl::Status s =
        steps.StepRemap({std::nullopt,
                         OpMap{req_end, end - req_end, nullptr, off + (req_end - addr)},
                         {va, false}});
    return s.ok() ? steps.StepMap(OpMap{addr, req_end - addr, nullptr, 0}) : s;
  });
}

// The list form: every step appended.
class Collect final : public SmSteps {
 public:
  absl::Status StepMap(const OpMap& op) override { return Add(op); }
  absl::Status StepRemap(const OpRemap& op) override { return Add(op); }
  absl::Status StepUnmap(const OpUnmap& op) override { return Add(op); }
  Ops ops;

 private:
  absl::Status Add(Op op) {
    ops.push_back(std::move(op));
    return absl::OkStatus();
  }
};

}  // namespace

AddrRange RemapToUnmapRange(const OpRemap& op) {
  const uint64_t start = op.prev ? op.prev->addr + op.prev->range : op.unmap.va->addr;
  const uint64_t end = op.next ? op.next->addr : op.unmap.va->end();
  return {start, end - start};
}

absl::Status SmMap(Gpuvm& vm, const MapRequest& req, SmSteps& steps) {
  const OpMap& m = req.op_map;
  if (absl::Status s = vm.CheckMapping(m.addr, m.range, m.bo, m.offset); !s.ok()) return s;
  return WalkMap(vm, m, steps);
}

absl::Status SmUnmap(Gpuvm& vm, uint64_t addr, uint64_t range, SmSteps& steps) {
  if (absl::Status s = vm.CheckRange(addr, range); !s.ok()) return s;
  return WalkUnmap(vm, addr, range, steps);
}

absl::StatusOr<Ops> SmMapOpsCreate(const Gpuvm& vm, const MapRequest& req) {
  const OpMap& m = req.op_map;
  if (absl::Status s = vm.CheckMapping(m.addr, m.range, m.bo, m.offset); !s.ok()) return s;
  Collect c;
  (void)WalkMap(vm, m, c);  // Collect never fails
  return std::move(c.ops);
}

absl::StatusOr<Ops> SmUnmapOpsCreate(const Gpuvm& vm, uint64_t addr, uint64_t range) {
  if (absl::Status s = vm.CheckRange(addr, range); !s.ok()) return s;
  Collect c;
  (void)WalkUnmap(vm, addr, range, c);
  return std::move(c.ops);
}

absl::StatusOr<Ops> PrefetchOpsCreate(const Gpuvm& vm, uint64_t addr, uint64_t range) {
  if (absl::Status s = vm.CheckRange(addr, range); !s.ok()) return s;
  Ops ops;
  for (Gpuva* va : vm.Range(addr, addr + range)) ops.push_back(OpPrefetch{va});
  return ops;
}

Ops BoUnmapOpsCreate(const VmBo& vm_bo) {
  Ops ops;
  vm_bo.ForEachVa([&](Gpuva* va) { ops.push_back(OpUnmap{va, false}); });
  return ops;
}

absl::StatusOr<Ops> MadviseOpsCreate(const Gpuvm& vm, const MapRequest& req) {
  const OpMap& m = req.op_map;
  if (absl::Status s = vm.CheckRange(m.addr, m.range); !s.ok()) return s;
  Collect c;
  (void)WalkMadvise(vm, m, c);
  return std::move(c.ops);
}

namespace {
void InsertFromOp(Gpuvm& vm, Gpuva* va, const OpMap& op) {
  va->addr = op.addr;
  va->range = op.range;
  va->bo = op.bo;
  va->offset = op.offset;
  absl::Status s = vm.Insert(va);
  UDRM_CHECK(s.ok(), "vm: applying an op to a tree that does not reflect the earlier ops");
}
}  // namespace

void ApplyMap(Gpuvm& vm, Gpuva* va, const OpMap& op) { InsertFromOp(vm, va, op); }

void ApplyRemap(Gpuvm& vm, Gpuva* prev, Gpuva* next, const OpRemap& op) {
  UDRM_CHECK(op.prev.has_value() == (prev != nullptr) && op.next.has_value() == (next != nullptr),
             "vm::ApplyRemap: a VA for exactly each of prev/next");
  for (auto [va, m] : {std::pair{prev, &op.prev}, std::pair{next, &op.next}}) {
    if (va == nullptr) continue;
    va->addr = (*m)->addr;
    va->range = (*m)->range;
    va->bo = (*m)->bo;
    va->offset = (*m)->offset;
  }
  vm.Remap(op.unmap.va, prev, next);
}

void ApplyUnmap(Gpuvm& vm, const OpUnmap& op) { vm.Remove(op.va); }

}  // namespace vm
