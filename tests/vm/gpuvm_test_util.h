// Test helpers for vm::Gpuvm: an owner for driver-allocated Gpuvas and printable ops.
#ifndef UDRM_TESTS_VM_GPUVM_TEST_UTIL_H_
#define UDRM_TESTS_VM_GPUVM_TEST_UTIL_H_

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "vm/gpuvm.h"
#include "vm/gpuvm_ops.h"

namespace vm {

inline std::string ToString(const OpMap& m) {
  return absl::StrCat("[", m.addr, ",", m.addr + m.range, ")->", reinterpret_cast<uintptr_t>(m.bo),
                      "+", m.offset);
}
inline std::string ToString(const Op& op) {
  if (auto* m = std::get_if<OpMap>(&op)) return "MAP" + ToString(*m);
  if (auto* u = std::get_if<OpUnmap>(&op)) {
    return absl::StrCat("UNMAP(", u->va->addr, ",keep=", u->keep, ")");
  }
  if (auto* r = std::get_if<OpRemap>(&op)) {
    return absl::StrCat("REMAP(prev=", r->prev ? ToString(*r->prev) : "-",
                        " next=", r->next ? ToString(*r->next) : "-", " unmap=", r->unmap.va->addr,
                        ",keep=", r->unmap.keep, ")");
  }
  return absl::StrCat("PREFETCH(", std::get<OpPrefetch>(op).va->addr, ")");
}
inline void PrintTo(const Op& op, std::ostream* os) { *os << ToString(op); }
inline void PrintTo(const OpMap& op, std::ostream* os) { *os << ToString(Op(op)); }
inline void PrintTo(const OpRemap& op, std::ostream* os) { *os << ToString(Op(op)); }
inline void PrintTo(const OpUnmap& op, std::ostream* os) { *os << ToString(Op(op)); }
inline void PrintTo(const OpPrefetch& op, std::ostream* os) { *os << ToString(Op(op)); }

// Owns the Gpuvas a test inserts; removes what is still in a tree at destruction.
class VaPool {
 public:
  Gpuva* New(uint64_t addr = 0, uint64_t range = 0, Bo* bo = nullptr, uint64_t offset = 0) {
    vas_.push_back(std::make_unique<Gpuva>());
    Gpuva* va = vas_.back().get();
    va->addr = addr;
    va->range = range;
    va->bo = bo;
    va->offset = offset;
    return va;
  }
  // Frees the VAs in no tree (call when no op list points at them).
  void FreeUnused() {
    std::erase_if(vas_, [](const std::unique_ptr<Gpuva>& va) { return va->vm == nullptr; });
  }
  // Removes every VA still in `vm` (not the kernel node).
  static void Clear(Gpuvm& vm) {
    std::vector<Gpuva*> all;
    for (Gpuva* va : vm.All()) {
      if (va != &vm.kernel_node()) all.push_back(va);
    }
    for (Gpuva* va : all) vm.Remove(va);
  }

 private:
  std::vector<std::unique_ptr<Gpuva>> vas_;
};

// Applies an op list to the tree with VAs from `pool`.
inline void ApplyOps(Gpuvm& vm, const Ops& ops, VaPool& pool) {
  for (const Op& op : ops) {
    if (auto* m = std::get_if<OpMap>(&op)) {
      ApplyMap(vm, pool.New(), *m);
    } else if (auto* r = std::get_if<OpRemap>(&op)) {
      ApplyRemap(vm, r->prev ? pool.New() : nullptr, r->next ? pool.New() : nullptr, *r);
    } else if (auto* u = std::get_if<OpUnmap>(&op)) {
      ApplyUnmap(vm, *u);
    }
  }
}

}  // namespace vm

#endif  // UDRM_TESTS_VM_GPUVM_TEST_UTIL_H_
