// Differential test: vm::PageTable against a simple reference model (one entry per 4 KiB page)
// over 10^6 random map/unmap operations of 4 KiB, 64 KiB and 2 MiB pages in a window that spans
// a 1 GiB boundary, checking sampled translations after every operation and every page at the end;
// and lists of maps through PageTable::MapAll against the same model. Both check every table's
// valid-entry count (the writer's, kept in entries 0 and 1 of the table) against a scan every
// 1024 operations (256 lists) and at the end.
#include <algorithm>
#include <vector>
#include <random>
#include <utility>

#include "base/sanitizers.h"
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
    if (op % 1024 == 0) {
      pt->Release(std::exchange(pending, Invalidation()));
      // Every table's valid-entry count (what Unmap unhooks empty tables by) against a scan.
      ASSERT_TRUE(pt->CheckValidCountsForTesting().ok())
          << "op " << op << ": " << pt->CheckValidCountsForTesting();
    }
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
  ASSERT_TRUE(pt->CheckValidCountsForTesting().ok()) << pt->CheckValidCountsForTesting();
  for (uint64_t va = kBase; va < kBase + kWindow; va += 4096) {
    ExpectSame(*pt, model, va + 8, kOps);
    if (HasFatalFailure()) return;
  }
  ASSERT_TRUE(Unmap(*pt, kBase, kWindow).ok());
  EXPECT_EQ(pt->stats().live_tables, 1);
  EXPECT_EQ(pt->stats().retired_tables, 0);
}

// MapAll (one writer section for a list of maps, the last-level table reused while the maps stay
// in it) against the model: random lists of 1-16 maps, mostly neighbours in one 2 MiB region,
// some jumping elsewhere, some 2 MiB pages (which may replace a last-level table the list wrote),
// between random unmaps; each list reserved as one ListBound. A list that replaced mappings bumps
// the generation once and says so; one that did not leaves it.
TEST(PageTableDiff, MapAllListsMatchModel) {
  RcuReaderThread reader;
  auto pt = *PageTable::Create(48);
  std::mt19937_64 rng(4242);
  const uint64_t kBase = GiB - 8 * MiB;  // straddles the 1 GiB boundary
  const uint64_t kWindow = 16 * MiB;
  Model model(kBase, kWindow);
  const int kLists = UDRM_SANITIZER ? 5000 : 20000;
  Invalidation pending;
  int replaced = 0, reused = 0;
  for (int op = 0; op < kLists; ++op) {
    if (op % 256 == 0) {
      pt->Release(std::exchange(pending, Invalidation()));
      ASSERT_TRUE(pt->CheckValidCountsForTesting().ok())
          << "list " << op << ": " << pt->CheckValidCountsForTesting();
    }
    if (rng() % 3 == 0) {
      const uint64_t len = (1 + rng() % 256) * 4096;
      const uint64_t uva = kBase + (rng() % ((kWindow - len) / 4096 + 1)) * 4096;
      ASSERT_TRUE(UnmapDeferred(*pt, uva, len, pending).ok());
      model.Unmap(uva, len);
      continue;
    }
    std::vector<PageTable::MapArgs> maps(1 + rng() % 16);
    uint64_t next = kBase + (rng() % (kWindow / (64 * KiB))) * 64 * KiB;
    for (PageTable::MapArgs& m : maps) {
      const int kind = rng() % 100;
      m.page_size = kind < 70 ? PageSize::k4K : kind < 93 ? PageSize::k64K : PageSize::k2M;
      const uint64_t bytes = PageBytes(m.page_size);
      m.size = (1 + rng() % 4) * bytes;
      if (rng() % 8 == 0) next = kBase + (rng() % (kWindow / bytes)) * bytes;  // jump
      next = (next + bytes - 1) / bytes * bytes;
      if (next + m.size > kBase + kWindow) next = kBase + (rng() % 4) * bytes;
      m.va = next;
      m.flags = rng() % 10 == 0 ? (kPteSparse | kPteRead) : (1 + rng() % 3);
      m.target = (m.flags & kPteSparse) ? 0 : (1 + rng() % 4096) * bytes;
      next = m.va + m.size + (rng() % 4 == 0 ? 4096 * (rng() % 3) : 0);
    }
    PageTable::ListBound bound(*pt);
    for (const PageTable::MapArgs& m : maps) {
      ASSERT_TRUE(bound.AddMap(m.va, m.size, m.target, m.flags, m.page_size).ok());
    }
    Prealloc pre;
    pt->Reserve(bound, pre);
    const uint64_t generation = pt->generation();
    Invalidation inv = pt->MapAll(maps, pre);
    pt->Unreserve(std::move(pre));
    bool any_mapped = false;
    for (size_t i = 0; i < maps.size(); ++i) {
      const PageTable::MapArgs& m = maps[i];
      for (uint64_t at = m.va; at < m.va + m.size && !any_mapped; at += 4096) {
        any_mapped = model.Lookup(at).valid;
      }
      reused += i > 0 && m.page_size != PageSize::k2M && maps[i - 1].page_size != PageSize::k2M &&
                (m.va >> 21) == (maps[i - 1].va >> 21);
      model.Map(m.va, m.size, m.target, m.flags, m.page_size);
    }
    ASSERT_EQ(inv.removed_mappings(), any_mapped) << "list " << op;
    ASSERT_EQ(pt->generation(), generation + (any_mapped ? 1 : 0)) << "list " << op;
    replaced += any_mapped;
    pending.Absorb(std::move(inv));
    for (const PageTable::MapArgs& m : maps) {
      for (int i = 0; i < 4; ++i) ExpectSame(*pt, model, m.va + (rng() % m.size), op);
      ExpectSame(*pt, model, m.va + m.size - 8, op);
    }
    if (HasFatalFailure()) {
      pt->Release(std::move(pending));
      return;
    }
  }
  pt->Release(std::move(pending));
  ASSERT_TRUE(pt->CheckValidCountsForTesting().ok()) << pt->CheckValidCountsForTesting();
  for (uint64_t va = kBase; va < kBase + kWindow; va += 4096) {
    ExpectSame(*pt, model, va + 8, kLists);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(replaced, kLists / 10);
  EXPECT_GT(reused, kLists);
  ASSERT_TRUE(Unmap(*pt, kBase, kWindow).ok());
  EXPECT_EQ(pt->stats().live_tables, 1);
  EXPECT_EQ(pt->stats().retired_tables, 0);
  EXPECT_EQ(pt->stats().reserved_tables, 0);
}

}  // namespace
}  // namespace vm
