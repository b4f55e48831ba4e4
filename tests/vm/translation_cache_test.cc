// vm::TranslationCache::Section: the software TLB checked for removals once per read-side
// section. Hits match the walk for every page size; a section that starts after a removal sees
// it; inside a section a hit may return the translation from before a removal that has not been
// released, and a miss drops every entry (the checked Translate() sees the removal at once).
#include "vm/translation_cache.h"

#include <memory>

#include "tests/vm/pt_test_util.h"

namespace vm {
namespace {

using namespace vm::testing;  // NOLINT

constexpr uint32_t kRW = kPteRead | kPteWrite;

class TranslationCacheSectionTest : public ::testing::Test {
 protected:
  void SetUp() override { pt_ = *PageTable::Create(48); }
  RcuReaderThread reader_;
  std::unique_ptr<PageTable> pt_;
};

void ExpectSame(const Translation& t, const Translation& walk, uint64_t va) {
  EXPECT_EQ(t.valid, walk.valid) << std::hex << va;
  EXPECT_EQ(t.address, walk.address) << std::hex << va;
  EXPECT_EQ(t.flags, walk.flags) << std::hex << va;
  EXPECT_EQ(t.size, walk.size) << std::hex << va;
}

// Offset, flags and size for every page size, address 0 for a sparse page, faults: the same as
// the walk, on the filling round and on the hitting rounds, and the same from the checked
// Translate() of the same cache.
TEST_F(TranslationCacheSectionTest, HitsMatchTheWalk) {
  ASSERT_TRUE(Map(*pt_, 0x7000, 4 * KiB, 0xa000, kPteRead, PageSize::k4K).ok());
  ASSERT_TRUE(Map(*pt_, 0x10000000, 64 * KiB, 0x20000000, kRW, PageSize::k64K).ok());
  ASSERT_TRUE(Map(*pt_, 0x40000000, 2 * MiB, 0x80000000, kRW, PageSize::k2M).ok());
  ASSERT_TRUE(Map(*pt_, 0x8000000000, GiB, 0x4000000000, kPteWrite, PageSize::k1G).ok());
  ASSERT_TRUE(Map(*pt_, 0x9000, 4 * KiB, 0, kPteRead | kPteSparse, PageSize::k4K).ok());
  // 0x7abc and 0x107abc share an entry (the cache is direct-mapped): they evict each other.
  const uint64_t vas[] = {0x7abc,  0x1000f123, 0x401ff008, 0x8012345678,
                          0x9010,  0x9ff8,     0x107abc,   0x7fff};
  TranslationCache tlb(pt_.get());
  for (int round = 0; round < 3; ++round) {
    TranslationCache::Section section(tlb);
    for (uint64_t va : vas) {
      const Translation walk = pt_->Translate(va);
      ExpectSame(section.Translate(va), walk, va);
      ExpectSame(tlb.Translate(va), walk, va);
    }
  }
}

// A section that starts after a removal was released translates the new state: a remap to
// another target, then an unmap.
TEST_F(TranslationCacheSectionTest, SectionStartSeesEarlierRemovals) {
  ASSERT_TRUE(Map(*pt_, 0x7000, 4 * KiB, 0xa000, kRW, PageSize::k4K).ok());
  TranslationCache tlb(pt_.get());
  {
    TranslationCache::Section section(tlb);
    EXPECT_EQ(section.Translate(0x7004).address, 0xa004u);
    EXPECT_EQ(section.Translate(0x7008).address, 0xa008u);  // a hit
  }
  ASSERT_TRUE(Map(*pt_, 0x7000, 4 * KiB, 0xb000, kRW, PageSize::k4K).ok());
  {
    TranslationCache::Section section(tlb);
    EXPECT_EQ(section.Translate(0x7004).address, 0xb004u);
  }
  ASSERT_TRUE(Unmap(*pt_, 0x7000, 4 * KiB).ok());
  {
    TranslationCache::Section section(tlb);
    EXPECT_FALSE(section.Translate(0x7004).valid);
  }
}

// Inside a section, a removal that is not yet released (its Release() would wait for this
// section): a hit may still return the old translation — its page cannot be reused before the
// section ends — the checked Translate() sees the removal at once, and after any miss the
// section sees it too. A fresh map into a hole needs no flag and is seen by the next miss.
TEST_F(TranslationCacheSectionTest, RemovalInsideASection) {
  ASSERT_TRUE(Map(*pt_, 0x7000, 4 * KiB, 0xa000, kRW, PageSize::k4K).ok());
  ASSERT_TRUE(Map(*pt_, 0x8000, 4 * KiB, 0xc000, kRW, PageSize::k4K).ok());
  TranslationCache tlb(pt_.get());
  TranslationCache other(pt_.get());
  Invalidation pending;
  {
    TranslationCache::Section section(tlb);
    EXPECT_EQ(section.Translate(0x7004).address, 0xa004u);
    EXPECT_EQ(section.Translate(0x8004).address, 0xc004u);
    ASSERT_TRUE(UnmapDeferred(*pt_, 0x7000, 4 * KiB, pending).ok());
    EXPECT_EQ(section.Translate(0x7004).address, 0xa004u) << "hits are not re-checked";
    {
      RcuReadSection nested;
      EXPECT_FALSE(other.Translate(0x7004).valid);  // never cached there: a walk
    }
    EXPECT_FALSE(section.Translate(0x9004).valid);  // a miss: drops every entry
    EXPECT_FALSE(section.Translate(0x7004).valid);
    EXPECT_EQ(section.Translate(0x8004).address, 0xc004u);  // refilled from the walk
    ASSERT_TRUE(MapDeferred(*pt_, 0x9000, 4 * KiB, 0xd000, kRW, PageSize::k4K, pending).ok());
    EXPECT_EQ(section.Translate(0x9004).address, 0xd004u);  // faults are never cached
  }
  {
    RcuReadSection s;
    ASSERT_TRUE(UnmapDeferred(*pt_, 0x8000, 4 * KiB, pending).ok());
    EXPECT_FALSE(tlb.Translate(0x8004).valid) << "the checked lookup sees the flag at once";
  }
  pt_->Release(std::move(pending));
  TranslationCache::Section section(tlb);
  EXPECT_FALSE(section.Translate(0x7004).valid);
  EXPECT_FALSE(section.Translate(0x8004).valid);
  EXPECT_EQ(section.Translate(0x9ff0).address, 0xdff0u);
}

// A removal in a region the cache holds nothing in (another 1 GiB region, hashed apart) leaves
// its entries: the next lookups hit. A removal in its region, or one spanning 64 regions or more,
// drops them.
TEST_F(TranslationCacheSectionTest, RemovalElsewhereKeepsEntries) {
  const uint64_t mine = 64 * GiB, elsewhere = 128 * GiB;
  ASSERT_NE(internal::RegionBit(mine), internal::RegionBit(elsewhere));
  ASSERT_NE(internal::RegionBit(mine), internal::RegionBit(256 * GiB));
  ASSERT_TRUE(Map(*pt_, mine, 8 * KiB, 0xa000, kRW, PageSize::k4K).ok());
  TranslationCache tlb(pt_.get());
  auto lookup = [&](uint64_t va) {
    RcuReadSection section;
    return tlb.Translate(va);
  };
  EXPECT_EQ(lookup(mine + 4).address, 0xa004u);
  EXPECT_EQ(tlb.misses(), 1u);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Map(*pt_, elsewhere, 2 * MiB, 0x200000, kRW, PageSize::k4K).ok());
    ASSERT_TRUE(Unmap(*pt_, elsewhere, 2 * MiB).ok());
    EXPECT_EQ(lookup(mine + 8).address, 0xa008u);
  }
  EXPECT_EQ(tlb.misses(), 1u) << "a removal elsewhere dropped the entries";
  ASSERT_TRUE(Unmap(*pt_, mine + 4 * KiB, 4 * KiB).ok());
  EXPECT_EQ(lookup(mine + 8).address, 0xa008u);
  EXPECT_EQ(tlb.misses(), 2u) << "a removal in the cache's region must drop its entries";
  EXPECT_FALSE(lookup(mine + 4 * KiB).valid);
  const uint64_t misses = tlb.misses();
  EXPECT_EQ(lookup(mine + 8).address, 0xa008u);
  EXPECT_EQ(tlb.misses(), misses);
  ASSERT_TRUE(Map(*pt_, 256 * GiB, 2 * MiB, 0x200000, kRW, PageSize::k2M).ok());
  ASSERT_TRUE(Unmap(*pt_, 256 * GiB, 2 * MiB).ok());  // one region, not the cache's
  EXPECT_EQ(lookup(mine + 8).address, 0xa008u);
  EXPECT_EQ(tlb.misses(), misses);
  ASSERT_TRUE(Map(*pt_, 256 * GiB, 2 * MiB, 0x200000, kRW, PageSize::k2M).ok());
  ASSERT_TRUE(Unmap(*pt_, 256 * GiB, 64 * GiB).ok());
  EXPECT_EQ(lookup(mine + 8).address, 0xa008u);
  EXPECT_EQ(tlb.misses(), misses + 1) << "64 regions or more: every cache drops";
}

}  // namespace
}  // namespace vm
