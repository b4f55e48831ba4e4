// vm::TranslationCache::Section: the software TLB checked for removals once per read-side
// section. Hits match the walk for every page size; a section that starts after a removal sees
// it; inside a section a hit may return the translation from before a removal that has not been
// released, and a miss drops every entry (the checked Translate() sees the removal at once);
// pages that share an entry are told apart by the whole page number; sections nest.
#include "vm/translation_cache.h"

#include <memory>
#include <vector>

#include "base/check.h"
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

// The tag is the whole page number: pages whose numbers share the low 8 bits (one entry of the
// direct-mapped cache) but differ in any higher bit, up to the top of a 48-bit space, evict each
// other and never answer for each other, a sparse page and a mapped page in the same entry
// included; a repeated lookup of the page an entry holds is a hit (no walk), in a Section and
// through the checked Translate().
TEST_F(TranslationCacheSectionTest, PagesSharingAnEntryAreTold) {
  const uint64_t base = 0x5000;  // page number 5: entry 5
  std::vector<uint64_t> vas = {base};
  for (int bit = 20; bit < 48; bit += 3) vas.push_back(base | (uint64_t{1} << bit));
  vas.push_back(base | (uint64_t{1} << 47) | (uint64_t{1} << 20));
  for (size_t k = 0; k < vas.size(); ++k) {
    const uint64_t va = vas[k];
    const uint32_t flags = k % 3 == 2 ? kPteRead | kPteSparse : kRW;
    ASSERT_TRUE(Map(*pt_, va, 4 * KiB, (k % 3 == 2) ? 0 : 0x100000 * (k + 1), flags,
                    PageSize::k4K)
                    .ok())
        << std::hex << va;
  }
  TranslationCache tlb(pt_.get());
  for (int round = 0; round < 2; ++round) {
    for (uint64_t va : vas) {
      const uint64_t before = tlb.misses();
      TranslationCache::Section section(tlb);
      const Translation walk = pt_->Translate(va + 0x123);
      ASSERT_TRUE(walk.valid);
      ExpectSame(section.Translate(va + 0x123), walk, va);
      // The entry held another page (or nothing): the first lookup walked, the next ones hit
      // (a sparse page is served from its entry by the out-of-line path, without a walk).
      EXPECT_EQ(tlb.misses(), before + 1) << std::hex << va;
      ExpectSame(section.Translate(va + 0xff8), pt_->Translate(va + 0xff8), va);
      ExpectSame(tlb.Translate(va + 0x8), pt_->Translate(va + 0x8), va);
      EXPECT_EQ(tlb.misses(), before + 1) << "a lookup of the cached page walked " << std::hex
                                          << va;
      EXPECT_FALSE(section.Translate(va + 0x1000).valid);  // the next page: a fault, a walk
    }
  }
}

// Sections of one cache nest: the inner one revalidates when it starts (it sees a removal made
// before it), and after it ends the outer one is still a read-side section (the thread may not
// wait for a grace period in it); after the outermost one ends none is left open on the thread
// (the removal's Release() waits for a grace period and returns).
TEST_F(TranslationCacheSectionTest, NestedSections) {
  ASSERT_TRUE(Map(*pt_, 0x7000, 4 * KiB, 0xa000, kRW, PageSize::k4K).ok());
  ASSERT_TRUE(Map(*pt_, 0x8000, 4 * KiB, 0xc000, kRW, PageSize::k4K).ok());
  TranslationCache tlb(pt_.get());
  Invalidation pending;
  {
    TranslationCache::Section outer(tlb);
    EXPECT_EQ(outer.Translate(0x7004).address, 0xa004u);
    ASSERT_TRUE(UnmapDeferred(*pt_, 0x7000, 4 * KiB, pending).ok());
    {
      TranslationCache::Section inner(tlb);
      EXPECT_FALSE(inner.Translate(0x7004).valid) << "the inner section did not revalidate";
      EXPECT_EQ(inner.Translate(0x8004).address, 0xc004u);
    }
    EXPECT_EQ(outer.Translate(0x8008).address, 0xc008u);
#if UDRM_DEBUG_CHECKS
    EXPECT_DEATH(RcuSynchronize(), "inside an RcuReadSection");
#endif
  }
  pt_->Release(std::move(pending));
  TranslationCache::Section after(tlb);
  EXPECT_FALSE(after.Translate(0x7004).valid);
  EXPECT_EQ(after.Translate(0x8004).address, 0xc004u);
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
