// Differential test: random bind lists checked against a plain page-granular model of the VA
// space; after each bind's out-fence signals, the page table equals the model and the VA tree,
// page by page.
#include <gtest/gtest.h>

#include <array>
#include <random>
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

// Random binds of 1-4 ops (maps, sparse maps, unmaps; 64 KiB hints when aligned) against the
// model.
TEST(BindDiffTest, RandomBindsMatchPageModel) {
  RcuReaderThread rcu;
  std::unique_ptr<BindVm> vm = *BindVm::Create("diff", {});
  std::unique_ptr<BindQueue> queue = *BindQueue::Create(*vm);
  std::array<Ref<Bo>, 3> bos;
  for (auto& b : bos) b = Bo::Create(kBoPages * kPage);
  std::array<ModelPage, kPages> model{};
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
    for (int p = 0; p < kPages; ++p) {
      const Translation t = testing::TranslateOnce(vm->page_table(), p * kPage);
      const ModelPage& m = model[p];
      ASSERT_EQ(t.valid, m.kind != ModelPage::kNone) << "bind " << n << " page " << p;
      if (m.kind == ModelPage::kSparse) {
        ASSERT_TRUE(t.flags & kPteSparse) << "bind " << n << " page " << p;
      } else if (m.kind == ModelPage::kBo) {
        ASSERT_EQ(vm->HostAddress(t), bos[m.bo]->memory().data() + m.bo_page * kPage)
            << "bind " << n << " page " << p;
      }
    }
    ASSERT_EQ(CheckConverged(*vm, 0, kPages * kPage), "") << "bind " << n;
  }
  queue.reset();
  vm.reset();
  for (auto& b : bos) EXPECT_EQ(b->refs_for_testing(), 1);
}

}  // namespace
}  // namespace vm
