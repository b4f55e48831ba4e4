// Fuzz target: sequences of drm_gpuvm split/merge requests (vm::SmMap / vm::SmUnmap, list form
// applied with ApplyOps and callback form applying at once) on a 64-page VM whose last 8 pages
// are the kernel node, checked after every request against a plain per-page model: which BO and
// offset each page maps, and which pages form one VA. A request is accepted exactly when its
// range is non-empty and lies below the kernel node; a refused one changes nothing.
#include <cstdint>
#include <string>

#include "fuzz/input.h"
#include "tests/vm/gpuvm_test_util.h"
#include "vm/gpuvm.h"
#include "vm/gpuvm_ops.h"

namespace {

constexpr char kTarget[] = "gpuvm_fuzzer";
constexpr uint64_t kPages = 64;
constexpr uint64_t kKernelStart = 56;
constexpr uint64_t kBoPages = 96;

// Per page: mapped or not, the BO (null: sparse) and offset, and the id of the VA holding it.
struct PageModel {
  struct Page {
    bool mapped = false;
    const vm::Bo* bo = nullptr;
    uint64_t offset = 0;
    int va = 0;
  };
  Page pages[kPages];
  int next_va = 0;

  // A VA that crosses the boundary before page `at` is split there (REMAP's prev/next pieces).
  void SplitAt(uint64_t at) {
    if (at == 0 || at >= kPages) return;
    const Page& left = pages[at - 1];
    if (!left.mapped || !pages[at].mapped || left.va != pages[at].va) return;
    const int old = pages[at].va, fresh = ++next_va;
    for (uint64_t p = at; p < kPages && pages[p].mapped && pages[p].va == old; ++p) {
      pages[p].va = fresh;
    }
  }
  void Set(uint64_t addr, uint64_t range, bool mapped, const vm::Bo* bo, uint64_t offset) {
    SplitAt(addr);
    SplitAt(addr + range);
    const int id = ++next_va;
    for (uint64_t i = 0; i < range; ++i) {
      pages[addr + i] = mapped ? Page{true, bo, offset + i, id} : Page{};
    }
  }
};

// The tree equals the model: every VA covers exactly the pages of one model VA, same BO/offsets.
void CompareTree(const vm::Gpuvm& g, const PageModel& m) {
  uint64_t covered = 0;
  for (vm::Gpuva* va : g.All()) {
    if (va == &g.kernel_node()) continue;
    FUZZ_CHECK(kTarget, va->end() <= kKernelStart);
    const int id = m.pages[va->addr].va;
    for (uint64_t p = va->addr; p < va->end(); ++p) {
      const PageModel::Page& pg = m.pages[p];
      FUZZ_CHECK(kTarget, pg.mapped && pg.va == id && pg.bo == va->bo);
      FUZZ_CHECK(kTarget, va->bo == nullptr || pg.offset == va->offset + (p - va->addr));
    }
    FUZZ_CHECK(kTarget, va->addr == 0 || !m.pages[va->addr - 1].mapped ||
                            m.pages[va->addr - 1].va != id);
    FUZZ_CHECK(kTarget, va->end() >= kPages || !m.pages[va->end()].mapped ||
                            m.pages[va->end()].va != id);
    covered += va->range;
  }
  uint64_t mapped = 0;
  for (const auto& pg : m.pages) mapped += pg.mapped;
  FUZZ_CHECK(kTarget, covered == mapped);
}

// Callback form applying every step at once.
class ApplyNow final : public vm::SmSteps {
 public:
  ApplyNow(vm::Gpuvm& g, vm::VaPool& pool) : g_(g), pool_(pool) {}
  absl::Status StepMap(const vm::OpMap& op) override {
    vm::ApplyMap(g_, pool_.New(), op);
    return absl::OkStatus();
  }
  absl::Status StepRemap(const vm::OpRemap& op) override {
    vm::ApplyRemap(g_, op.prev ? pool_.New() : nullptr, op.next ? pool_.New() : nullptr, op);
    return absl::OkStatus();
  }
  absl::Status StepUnmap(const vm::OpUnmap& op) override {
    vm::ApplyUnmap(g_, op);
    return absl::OkStatus();
  }

 private:
  vm::Gpuvm& g_;
  vm::VaPool& pool_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  auto g = *vm::Gpuvm::Create("fuzz", 0, kPages, kKernelStart, kPages - kKernelStart);
  vm::Ref<vm::Bo> bos[2] = {vm::Bo::Create(kBoPages), vm::Bo::Create(kBoPages)};
  vm::VaPool pool;
  PageModel model;
  for (int n = 0; n < 256 && !in.empty(); ++n) {
    const uint8_t op = in.Byte();
    const uint64_t addr = in.Below(kPages);
    const uint64_t range = in.Below(kPages + 1);  // 0 and past-the-end included
    const bool is_map = (op & 3) != 0;
    const vm::Bo* bo = (op & 3) == 3 ? nullptr : bos[(op >> 2) & 1].get();
    uint64_t offset = bo == nullptr ? 0 : ((op & 16) ? addr : in.Below(kBoPages));
    if (offset + range > kBoPages) offset = 0;
    if (bo != nullptr && range > kBoPages) continue;  // keep BO ranges valid
    const vm::OpMap req{addr, range, const_cast<vm::Bo*>(bo), offset};
    const bool valid = range > 0 && addr + range <= kKernelStart;
    absl::Status s;
    if (op & 32) {  // list form
      absl::StatusOr<vm::Ops> ops = is_map ? vm::SmMapOpsCreate(*g, vm::MapRequest{req})
                                           : vm::SmUnmapOpsCreate(*g, addr, range);
      s = ops.status();
      if (ops.ok()) vm::ApplyOps(*g, *ops, pool);
    } else {
      ApplyNow live(*g, pool);
      s = is_map ? vm::SmMap(*g, vm::MapRequest{req}, live) : vm::SmUnmap(*g, addr, range, live);
    }
    FUZZ_CHECK(kTarget, s.ok() == valid);
    if (valid) model.Set(addr, range, is_map, bo, offset);
    CompareTree(*g, model);
    if (n % 64 == 63) pool.FreeUnused();
  }
  vm::VaPool::Clear(*g);
  return 0;
}
