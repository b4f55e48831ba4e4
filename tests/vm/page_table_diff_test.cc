// Differential test: vm::PageTable against a simple reference model (one entry per 4 KiB page)
// over 10^6 random map/unmap operations of 4 KiB, 64 KiB and 2 MiB pages in a window that spans
// a 1 GiB boundary, checking sampled translations after every operation and every page at the end.
#include <algorithm>
#include <vector>
#include <random>
#include <utility>

#include "tests/vm/pt_test_util.h"

namespace vm {
namespace {

using namespace vm::testing;  // NOLINT

struct ModelPage {
  uint64_t address = 0;  // of the page's first byte (0 for sparse)
  uint32_t flags = 0;
  PageSize size = PageSize::k4K;
  bool mapped = false;
};

// Reference model over a window: one slot per 4 KiB page. A large page that an operation cuts
// through keeps its other pages, reported as 4 KiB pages (they were split); 1 GiB pages are not
// used here.
class Model {
 public:
  Model(uint64_t base, uint64_t size) : base_(base), pages_(size >> 12) {}
  void Map(uint64_t va, uint64_t size, uint64_t target, uint32_t flags, PageSize ps) {
    Cut(va, size);
    for (uint64_t off = 0; off < size; off += 4096) {
      const uint64_t addr = (flags & kPteSparse) ? 0 : target + off;
      At(va + off) = ModelPage{addr, flags, ps, true};
    }
  }
  void Unmap(uint64_t va, uint64_t size) {
    Cut(va, size);
    for (uint64_t off = 0; off < size; off += 4096) At(va + off).mapped = false;
  }
  Translation Lookup(uint64_t va) const {
    Translation t;
    const ModelPage& p = pages_[(va - base_) >> 12];
    if (!p.mapped) return t;
    t.valid = true;
    t.flags = p.flags;
    t.size = p.size;
    t.address = (p.flags & kPteSparse) ? 0 : p.address + (va & 0xfff);
    return t;
  }

 private:
  ModelPage& At(uint64_t va) { return pages_[(va - base_) >> 12]; }
  // Pages of large blocks that [va, va+size) cuts through become 4 KiB pages.
  void Cut(uint64_t va, uint64_t size) {
    for (uint64_t edge : {va, va + size}) {
      for (PageSize ps : {PageSize::k64K, PageSize::k2M}) {
        const uint64_t bytes = PageBytes(ps);
        if (edge % bytes == 0) continue;
        const uint64_t block = edge & ~(bytes - 1);
        for (uint64_t at = std::max(block, base_); at < block + bytes && at < base_ + Span();
             at += 4096) {
          ModelPage& p = At(at);
          if (p.mapped && p.size == ps) p.size = PageSize::k4K;
        }
      }
    }
  }
  uint64_t Span() const { return pages_.size() << 12; }

  const uint64_t base_;
  std::vector<ModelPage> pages_;
};

void ExpectSame(const PageTable& pt, const Model& model, uint64_t va, int op) {
  Translation got = Lookup(pt, va);
  Translation want = model.Lookup(va);
  ASSERT_EQ(got.valid, want.valid) << "op " << op << " va " << std::hex << va;
  if (!want.valid) return;
  ASSERT_EQ(got.address, want.address) << "op " << op << " va " << std::hex << va;
  ASSERT_EQ(got.flags, want.flags) << "op " << op << " va " << std::hex << va;
  ASSERT_EQ(got.size, want.size) << "op " << op << " va " << std::hex << va;
}

TEST(PageTableDiff, MillionRandomOperations) {
  RcuReaderThread reader;
  auto pt = *PageTable::Create(48);
  std::mt19937_64 rng(42);
  const uint64_t kBase = GiB - 16 * MiB;  // the window straddles the 1 GiB boundary
  const uint64_t kWindow = 32 * MiB;
  Model model(kBase, kWindow);
  constexpr int kOps = 1000000;
  Invalidation pending;  // one grace period per 1024 operations, as a bind job batches its ops
  for (int op = 0; op < kOps; ++op) {
    if (op % 1024 == 0) pt->Release(std::exchange(pending, Invalidation()));
    const int kind = rng() % 100;
    PageSize ps = kind < 60 ? PageSize::k4K : kind < 90 ? PageSize::k64K : PageSize::k2M;
    const uint64_t bytes = PageBytes(ps);
    const uint64_t pages = 1 + rng() % (ps == PageSize::k2M ? 2 : 8);
    const uint64_t va = kBase + (rng() % ((kWindow - pages * bytes) / bytes + 1)) * bytes;
    if (rng() % 3 == 0) {
      const uint64_t len = (1 + rng() % 64) * 4096;
      const uint64_t uva = kBase + (rng() % ((kWindow - len) / 4096 + 1)) * 4096;
      ASSERT_TRUE(UnmapDeferred(*pt, uva, len, pending).ok());
      model.Unmap(uva, len);
    } else {
      const uint32_t flags = rng() % 10 == 0 ? (kPteSparse | kPteRead) : (1 + rng() % 3);
      const uint64_t target = (flags & kPteSparse) ? 0 : (1 + rng() % 4096) * bytes;
      ASSERT_TRUE(MapDeferred(*pt, va, pages * bytes, target, flags, ps, pending).ok());
      model.Map(va, pages * bytes, target, flags, ps);
    }
    for (int i = 0; i < 4; ++i) {
      ExpectSame(*pt, model, kBase + (rng() % (kWindow / 8)) * 8, op);
      if (HasFatalFailure()) {
        pt->Release(std::move(pending));
        return;
      }
    }
  }
  pt->Release(std::move(pending));
  for (uint64_t va = kBase; va < kBase + kWindow; va += 4096) {
    ExpectSame(*pt, model, va + 8, kOps);
    if (HasFatalFailure()) return;
  }
  ASSERT_TRUE(Unmap(*pt, kBase, kWindow).ok());
  EXPECT_EQ(pt->stats().live_tables, 1);
  EXPECT_EQ(pt->stats().retired_tables, 0);
}

}  // namespace
}  // namespace vm
