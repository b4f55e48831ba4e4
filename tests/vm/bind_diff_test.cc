// Differential test: random bind lists checked against a plain page-granular model of the VA
// space; after each bind's out-fence signals, the page table equals the model and the VA tree,
// page by page. A second test binds lists of consecutive ops, mostly unmaps (ApplyBind's
// removal of a run of VAs at once).
#include <gtest/gtest.h>

#include <array>
#include <random>
#include <string>
#include <vector>

#include "base/sanitizers.h"
#include "tests/vm/bind_test_util.h"

namespace vm {
namespace {

using testing::CheckConverged;
using testing::kPage;

constexpr int kPages = 256;
constexpr int kBoPages = 64;

struct ModelPage {
  enum Kind { kNone, kSparse, kBo } kind = kNone;
  int bo = 0;
  uint64_t bo_page = 0;
};

// A VM with a queue, three BOs and the model of its pages.
struct DiffSetup {
  RcuReaderThread rcu;
  std::unique_ptr<BindVm> vm = *BindVm::Create("diff", {});
  std::unique_ptr<BindQueue> queue = *BindQueue::Create(*vm);
  std::array<Ref<Bo>, 3> bos = {Bo::Create(kBoPages * kPage), Bo::Create(kBoPages * kPage),
                                Bo::Create(kBoPages * kPage)};
  std::array<ModelPage, kPages> model{};
  // Tears the VM down: every BO reference it held is dropped.
  void Finish() {
    queue.reset();
    vm.reset();
    for (auto& b : bos) EXPECT_EQ(b->refs_for_testing(), 1);
  }
};

// The page table against the model, page by page, then the VA tree against the page table.
std::string CompareWithModel(const BindVm& vm, const std::array<Ref<Bo>, 3>& bos,
                             const std::array<ModelPage, kPages>& model) {
  for (int p = 0; p < kPages; ++p) {
    const Translation t = testing::TranslateOnce(vm.page_table(), p * kPage);
    const ModelPage& m = model[p];
    const std::string at = "page " + std::to_string(p);
    if (t.valid != (m.kind != ModelPage::kNone)) return at + ": valid differs";
    if (m.kind == ModelPage::kSparse && !(t.flags & kPteSparse)) return at + ": not sparse";
    if (m.kind == ModelPage::kBo &&
        vm.HostAddress(t) != bos[m.bo]->memory().data() + m.bo_page * kPage) {
      return at + ": host address differs";
    }
  }
  return CheckConverged(vm, 0, kPages * kPage);
}

// Random binds of 1-4 ops (maps, sparse maps, unmaps; 64 KiB hints when aligned) against the
// model.
TEST(BindDiffTest, RandomBindsMatchPageModel) {
  DiffSetup d;
  auto& [rcu, vm, queue, bos, model] = d;
  std::mt19937 rng(12345);
  const int binds = UDRM_SANITIZER ? 150 : 400;
  for (int n = 0; n < binds; ++n) {
    std::vector<BindOp> ops;
    const int count = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < count; ++i) {
      const bool big = rng() % 4 == 0;
      const uint64_t unit = big ? 16 : 1;
      const uint64_t len = unit * (1 + rng() % (big ? 3 : 24));
      const uint64_t first = unit * (rng() % ((kPages - len) / unit + 1));
      const int kind = static_cast<int>(rng() % 3);
      if (kind == 0) {
        ops.push_back(BindOp::Unmap(first * kPage, len * kPage));
        for (uint64_t p = first; p < first + len; ++p) model[p] = {};
      } else if (kind == 1) {
        ops.push_back(
            BindOp::MapNull(first * kPage, len * kPage, big ? PageSize::k64K : PageSize::k4K));
        for (uint64_t p = first; p < first + len; ++p) model[p] = {ModelPage::kSparse};
      } else {
        const int bo = static_cast<int>(rng() % bos.size());
        const uint64_t off = unit * (rng() % ((kBoPages - len) / unit + 1));
        ops.push_back(BindOp::Map(first * kPage, len * kPage, bos[bo].get(), off * kPage,
                                  big ? PageSize::k64K : PageSize::k4K));
        for (uint64_t p = first; p < first + len; ++p) {
          model[p] = {ModelPage::kBo, bo, off + (p - first)};
        }
      }
    }
    ASSERT_TRUE(queue->Bind(ops).ok()) << "bind " << n;
    ASSERT_EQ(CompareWithModel(*vm, bos, model), "") << "bind " << n;
  }
  d.Finish();
}

// Lists of 2-12 ops on consecutive ranges (each starting where the one before ends), mostly
// unmaps, after random maps: runs of unmap ops whose VAs lie wholly inside them are removed
// from the VA tree in one Gpuvm::RemoveRun (ApplyBind); ops cutting through a VA (remaps), maps
// and sparse maps break the runs.
TEST(BindDiffTest, ConsecutiveUnmapListsMatchPageModel) {
  DiffSetup d;
  auto& [rcu, vm, queue, bos, model] = d;
  std::mt19937 rng(54321);
  const int binds = UDRM_SANITIZER ? 150 : 400;
  int64_t unmaps = 0;
  for (int n = 0; n < binds; ++n) {
    std::vector<BindOp> ops;
    const bool unmap_list = n % 2 == 1;
    const int count =
        unmap_list ? 2 + static_cast<int>(rng() % 11) : 1 + static_cast<int>(rng() % 8);
    uint64_t first = rng() % (kPages / 2);
    for (int i = 0; i < count; ++i) {
      const uint64_t len = 1 + rng() % 6;
      if (first + len > kPages) break;
      const int kind = unmap_list ? (rng() % 5 == 0 ? 2 : 0) : (rng() % 5 == 0 ? 1 : 2);
      if (kind == 0) {
        ++unmaps;
        ops.push_back(BindOp::Unmap(first * kPage, len * kPage));
        for (uint64_t p = first; p < first + len; ++p) model[p] = {};
      } else if (kind == 1) {
        ops.push_back(BindOp::MapNull(first * kPage, len * kPage));
        for (uint64_t p = first; p < first + len; ++p) model[p] = {ModelPage::kSparse};
      } else {
        const int bo = static_cast<int>(rng() % bos.size());
        const uint64_t off = rng() % (kBoPages - len + 1);
        ops.push_back(BindOp::Map(first * kPage, len * kPage, bos[bo].get(), off * kPage));
        for (uint64_t p = first; p < first + len; ++p) {
          model[p] = {ModelPage::kBo, bo, off + (p - first)};
        }
      }
      // Maps mostly leave a gap (so later unmaps meet several VAs); unmap lists stay joined.
      first += len + (unmap_list || rng() % 2 == 0 ? 0 : 1);
    }
    if (ops.empty()) continue;
    ASSERT_TRUE(queue->Bind(ops).ok()) << "bind " << n;
    ASSERT_EQ(CompareWithModel(*vm, bos, model), "") << "bind " << n;
  }
  EXPECT_GT(unmaps, binds);
  d.Finish();
}

}  // namespace
}  // namespace vm
