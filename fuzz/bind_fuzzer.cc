// Fuzz target: sequences of VM_BIND calls (vm::BindVm through a vm::BindQueue) of 1-4 ops —
// maps of two BOs, sparse maps, unmaps, 4K or 64K page-size hints — some of them invalid
// (misaligned, empty, past the BO, a BO or offset where none belongs). After every call: a valid
// bind is accepted and its out-fence signals without error; an invalid one is refused with
// InvalidArgument and changes nothing; the page table equals the VA tree page by page
// (tests/vm/bind_test_util.h) and both equal a plain per-page model.
#include <cstdint>
#include <vector>

#include "fuzz/input.h"
#include "tests/vm/bind_test_util.h"
#include "vm/bind_queue.h"
#include "vm/bind_vm.h"
#include "vm/rcu.h"

namespace {

constexpr char kTarget[] = "bind_fuzzer";
constexpr uint64_t kPage = 4096;
constexpr uint64_t kPages = 128;  // the window binds land in
constexpr uint64_t kBoPages = 48;

struct ModelPage {
  enum Kind { kNone, kSparse, kBo } kind = kNone;
  int bo = 0;
  uint64_t bo_page = 0;
};

// What the op does to the model if valid; false if ValidateOp must refuse it.
bool Valid(const vm::BindOp& op, uint64_t bo_bytes) {
  if (op.range == 0 || op.va % kPage != 0 || op.range % kPage != 0) return false;
  if (op.kind == vm::BindOpKind::kUnmap) return op.bo == nullptr && op.bo_offset == 0;
  const uint64_t page = vm::PageBytes(op.page_size);
  if (op.va % page != 0 || op.range % page != 0) return false;
  if (op.kind == vm::BindOpKind::kMapNull) return op.bo == nullptr && op.bo_offset == 0;
  return op.bo != nullptr && op.bo_offset % kPage == 0 && op.bo_offset <= bo_bytes &&
         op.range <= bo_bytes - op.bo_offset;
}

}  // namespace

// This thread reads the table, for the whole process: registered once, never unregistered. A
// global with external linkage, so the compiler keeps the pointer and LeakSanitizer sees it
// reachable (a function-local static whose value is never read was optimised away: a "leak").
vm::RcuReaderThread* bind_fuzzer_rcu_reader = nullptr;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (bind_fuzzer_rcu_reader == nullptr) bind_fuzzer_rcu_reader = new vm::RcuReaderThread;
  fuzz::Input in(data, size);
  std::unique_ptr<vm::BindVm> v = *vm::BindVm::Create("fuzz", {});
  std::unique_ptr<vm::BindQueue> q = *vm::BindQueue::Create(*v);
  vm::Ref<vm::Bo> bos[2] = {vm::Bo::Create(kBoPages * kPage), vm::Bo::Create(kBoPages * kPage)};
  std::vector<ModelPage> model(kPages);
  for (int n = 0; n < 48 && !in.empty(); ++n) {
    std::vector<vm::BindOp> ops;
    std::vector<ModelPage> next = model;
    bool valid = true;
    const int count = 1 + static_cast<int>(in.Below(4));
    for (int i = 0; i < count; ++i) {
      const uint8_t b = in.Byte();
      const bool big = b & 4;
      const uint64_t unit = big ? 16 : 1;
      uint64_t len = unit * in.Below(big ? 4 : 25);  // 0 included
      uint64_t first = unit * in.Below(kPages / unit);
      if (first + len > kPages) len = kPages - first;
      const int bo = (b >> 3) & 1;
      const uint64_t off = unit * in.Below(kBoPages / unit + 1);
      vm::BindOp op;
      switch (b & 3) {
        case 0: op = vm::BindOp::Unmap(first * kPage, len * kPage); break;
        case 1:
          op = vm::BindOp::MapNull(first * kPage, len * kPage,
                                   big ? vm::PageSize::k64K : vm::PageSize::k4K);
          break;
        default:
          op = vm::BindOp::Map(first * kPage, len * kPage, bos[bo].get(), off * kPage,
                               big ? vm::PageSize::k64K : vm::PageSize::k4K);
      }
      if (b & 0x80) op.va += kPage / 2;             // misaligned
      if ((b & 0x60) == 0x60 && (b & 3) < 2) op.bo = bos[bo].get();  // a BO where none belongs
      valid &= Valid(op, kBoPages * kPage);
      ops.push_back(op);
      if (!Valid(op, kBoPages * kPage)) continue;
      for (uint64_t p = first; p < first + len; ++p) {
        if (op.kind == vm::BindOpKind::kUnmap) {
          next[p] = {};
        } else if (op.kind == vm::BindOpKind::kMapNull) {
          next[p] = {ModelPage::kSparse};
        } else {
          next[p] = {ModelPage::kBo, bo, off + (p - first)};
        }
      }
    }
    const absl::Status s = q->Bind(ops);
    if (valid) {
      FUZZ_CHECK(kTarget, s.ok());
      model = next;
    } else {
      FUZZ_CHECK(kTarget, absl::IsInvalidArgument(s));
    }
    FUZZ_CHECK(kTarget, !v->unusable());
    for (uint64_t p = 0; p < kPages; ++p) {
      const vm::Translation t = vm::testing::TranslateOnce(v->page_table(), p * kPage);
      FUZZ_CHECK(kTarget, t.valid == (model[p].kind != ModelPage::kNone));
      if (model[p].kind == ModelPage::kSparse) FUZZ_CHECK(kTarget, t.flags & vm::kPteSparse);
      if (model[p].kind == ModelPage::kBo) {
        FUZZ_CHECK(kTarget, v->HostAddress(t) == bos[model[p].bo]->memory().data() +
                                                     model[p].bo_page * kPage);
      }
    }
    FUZZ_CHECK(kTarget, vm::testing::CheckConverged(*v, 0, kPages * kPage).empty());
  }
  q.reset();
  v.reset();
  for (auto& b : bos) FUZZ_CHECK(kTarget, b->refs_for_testing() == 1);
  return 0;
}
