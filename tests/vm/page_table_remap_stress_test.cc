// Concurrency stress for vm::PageTable + vm::TranslationCache where a remap changes the target:
// every slot (a 2 MiB range; slots spread over four 1 GiB regions) is mapped to va plus a
// generation tag that grows with each remap, so a stale software-TLB entry or a translation from
// before a released change is told apart from a current one (page_table_stress_test's mappings
// always follow va -> va + OffsetFor(flags), so a stale entry there looks valid). Readers
// translate through TranslationCache Sections (and plain Translate); after the writer's
// Release() or FlushDeferred() returned it publishes the slot's generation, and a section that
// started after a reader saw that generation must never return an older one. The deferred
// variant frees tables while readers run (ASan reports a premature free).
#include <array>
#include <atomic>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "tests/vm/pt_test_util.h"
#include "vm/translation_cache.h"

namespace vm {
namespace {

using namespace vm::testing;  // NOLINT

constexpr int kSlots = 8;
constexpr uint64_t kSlotBytes = 2 * MiB;
constexpr int kGenShift = 36;  // above every slot's va (< 5 GiB)
constexpr uint64_t kMaxGen = uint64_t{1} << 20;

uint64_t SlotVa(int slot) { return (1 + slot / 2) * GiB + (slot % 2) * kSlotBytes; }
uint64_t Target(int slot, uint64_t gen) { return SlotVa(slot) + (gen << kGenShift); }

enum class Writer { kRelease, kDeferred };

void RunRemapStress(Writer mode) {
  auto pt = *PageTable::Create(48);
  std::array<std::atomic<uint64_t>, kSlots> published{};  // generation whose release returned
  std::atomic<bool> stop{false};
  std::atomic<int64_t> translations{0}, valid{0}, stale{0}, wrong{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      RcuReaderThread registered;
      TranslationCache tlb(pt.get());
      std::mt19937_64 rng(r + 1);
      // Reader 1 reads only the first two regions: the writer's changes elsewhere must not
      // matter to it, and those here must.
      const int slots = r == 0 ? kSlots : kSlots / 2;
      while (!stop.load(std::memory_order_relaxed)) {
        std::array<uint64_t, kSlots> floor;
        for (int s = 0; s < kSlots; ++s) floor[s] = published[s].load(std::memory_order_acquire);
        TranslationCache::Section section(tlb);  // starts after the loads above
        for (int i = 0; i < 128; ++i) {
          const int s = static_cast<int>(rng() % slots);
          const uint64_t va = SlotVa(s) + (rng() % (kSlotBytes / 4096)) * 4096;
          const Translation t = (i % 4 == 3) ? pt->Translate(va) : section.Translate(va);
          translations.fetch_add(1, std::memory_order_relaxed);
          if (!t.valid) continue;  // between a remap's Unmap and Map
          valid.fetch_add(1, std::memory_order_relaxed);
          const uint64_t tag = t.address - va;
          const uint64_t gen = tag >> kGenShift;
          if ((tag & ((uint64_t{1} << kGenShift) - 1)) != 0 || gen > kMaxGen) {
            wrong.fetch_add(1);
          } else if (gen < floor[s]) {
            stale.fetch_add(1);
          }
        }
      }
    });
  }
  RcuReaderThread writer_registered;
  std::mt19937_64 rng(7);
  uint64_t gen = 0;
  std::vector<std::pair<int, uint64_t>> unflushed;  // deferred: published after FlushDeferred
  int64_t until_flush = 1 + static_cast<int64_t>(rng() % 100);
  // Each Release waits for the readers' sections (a few ms on a loaded machine).
  const int64_t ops_wanted = mode == Writer::kRelease ? 200 : 2000;
  for (int64_t ops = 0; ops < ops_wanted || translations.load(std::memory_order_relaxed) < 64 * 1024 ||
                        valid.load(std::memory_order_relaxed) == 0;
       ++ops) {
    const int s = static_cast<int>(rng() % kSlots);
    const PageSize ps = std::array{PageSize::k4K, PageSize::k64K, PageSize::k2M}[rng() % 3];
    ++gen;
    ASSERT_LE(gen, kMaxGen);
    Invalidation inv;
    ASSERT_TRUE(UnmapDeferred(*pt, SlotVa(s), kSlotBytes, inv).ok());
    ASSERT_TRUE(MapDeferred(*pt, SlotVa(s), kSlotBytes, Target(s, gen), kPteRead, ps, inv).ok());
    if (mode == Writer::kRelease) {
      pt->Release(std::move(inv));
      published[s].store(gen, std::memory_order_release);
    } else {
      pt->ReleaseDeferred(std::move(inv));
      unflushed.emplace_back(s, gen);
      if (--until_flush == 0) {
        pt->FlushDeferred();
        for (const auto& [slot, g] : unflushed) published[slot].store(g, std::memory_order_release);
        unflushed.clear();
        until_flush = 1 + static_cast<int64_t>(rng() % 100);
      }
    }
    const Translation t = Lookup(*pt, SlotVa(s) + 4096);
    ASSERT_TRUE(t.valid);
    ASSERT_EQ(t.address, Target(s, gen) + 4096);
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(stale.load(), 0);
  EXPECT_GT(valid.load(), 0);
  pt->FlushDeferred();
  for (int s = 0; s < kSlots; ++s) ASSERT_TRUE(Unmap(*pt, SlotVa(s), kSlotBytes).ok());
  EXPECT_EQ(pt->stats().retired_tables, 0);
}

TEST(PageTableRemapStress, ReleasedRemapsAreNeverSeenStale) { RunRemapStress(Writer::kRelease); }

TEST(PageTableRemapStress, DeferredRemapsAreNeverSeenStaleAfterFlush) {
  RunRemapStress(Writer::kDeferred);
}

}  // namespace
}  // namespace vm
