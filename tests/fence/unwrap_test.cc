// Ports of the dma-fence-unwrap KUnit tests (drivers/dma-buf/st-dma-fence-unwrap.c). Each mock
// fence has its own context and seqno 1 unless the test says otherwise.
#include "fence/unwrap.h"

#include "fence/fence_array.h"
#include "fence/fence_chain.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"

namespace fence {
namespace {

FenceRef MockFence(uint64_t ctx = 0, uint64_t seqno = 1) {
  return Fence::Create(ctx != 0 ? ctx : FenceContext::Allocate(), seqno);
}

FenceRef MockArray(std::vector<FenceRef> fences) {
  return *FenceArray::Create(std::move(fences), FenceContext::Allocate(), 1);
}

FenceRef MockChain(FenceRef prev, FenceRef fence) {
  return FenceChain::Create(std::move(prev), std::move(fence), 1);
}

// Leaves of `f`, which must be exactly `want` in any order, each once.
void ExpectLeaves(const FenceRef& f, std::vector<FenceRef> want) {
  std::vector<FenceRef> got = UnwrapLeaves(f);
  ASSERT_EQ(got.size(), want.size());
  for (const FenceRef& w : want) EXPECT_EQ(std::count(got.begin(), got.end(), w), 1);
}

// upstream: test_sanitycheck — an array of one wrapped in a chain builds and releases cleanly.
TEST(DmaFenceUnwrap, Sanitycheck) {
  FenceRef f = MockFence();
  FenceRef chain = MockChain(nullptr, MockArray({f}));
  ExpectLeaves(chain, {f});
  f->Signal();
}

// upstream: test_unwrap_array — iterating array(f1,f2) yields exactly {f1,f2}.
TEST(DmaFenceUnwrap, UnwrapArray) {
  FenceRef f1 = MockFence(), f2 = MockFence();
  ExpectLeaves(MockArray({f1, f2}), {f1, f2});
}

// upstream: test_unwrap_chain — iterating chain(prev=f1, fence=f2) yields exactly {f1,f2}.
TEST(DmaFenceUnwrap, UnwrapChain) {
  FenceRef f1 = MockFence(), f2 = MockFence();
  ExpectLeaves(MockChain(f1, f2), {f1, f2});
}

// upstream: test_unwrap_chain_array — chain(NULL, array(f1,f2)) yields {f1,f2}.
TEST(DmaFenceUnwrap, UnwrapChainArray) {
  FenceRef f1 = MockFence(), f2 = MockFence();
  ExpectLeaves(MockChain(nullptr, MockArray({f1, f2})), {f1, f2});
}

// upstream: test_unwrap_merge — merge(f1,f2) unwraps to exactly {f1,f2}.
TEST(DmaFenceUnwrap, UnwrapMerge) {
  FenceRef f1 = MockFence(), f2 = MockFence();
  ExpectLeaves(Merge({f1, f2}), {f1, f2});
}

// upstream: test_unwrap_merge_duplicate — merge(f1,f1) yields f1 once (and is f1 itself).
TEST(DmaFenceUnwrap, UnwrapMergeDuplicate) {
  FenceRef f1 = MockFence();
  FenceRef m = Merge({f1, f1});
  EXPECT_EQ(m, f1);
  ExpectLeaves(m, {f1});
}

// upstream: test_unwrap_merge_seqno — f1=(c1,1), f2=(c1,2), f3=(c0,1): merge yields f3 then
// f2 (sorted by context, the latest per context; f1 dropped).
TEST(DmaFenceUnwrap, UnwrapMergeSeqno) {
  uint64_t c0 = FenceContext::Allocate(), c1 = FenceContext::Allocate();
  FenceRef f1 = MockFence(c1, 1), f2 = MockFence(c1, 2), f3 = MockFence(c0, 1);
  std::vector<FenceRef> got = UnwrapLeaves(Merge({f1, f2, f3}));
  EXPECT_EQ(got, (std::vector<FenceRef>{f3, f2}));
}

// upstream: test_unwrap_merge_order — a1=array(f1,f2), c2=chain(chain(f1),f2): merge(a1,c2)
// yields f1 before f2.
TEST(DmaFenceUnwrap, UnwrapMergeOrder) {
  FenceRef f1 = MockFence(), f2 = MockFence();
  FenceRef a1 = MockArray({f1, f2});
  FenceRef c2 = MockChain(MockChain(nullptr, f1), f2);
  std::vector<FenceRef> got = UnwrapLeaves(Merge({a1, c2}));
  EXPECT_EQ(got, (std::vector<FenceRef>{f1, f2}));
}

// upstream: test_unwrap_merge_complex — f3=merge(f1,f2), f4=array(f2,f1); merge(f3,f4,stub)
// yields exactly {f1,f2}: the signalled stub filtered, duplicates removed.
TEST(DmaFenceUnwrap, UnwrapMergeComplex) {
  FenceRef f1 = MockFence(), f2 = MockFence();
  FenceRef f3 = Merge({f1, f2});
  FenceRef f4 = MockArray({f2, f1});
  ExpectLeaves(Merge({f3, f4, Fence::GetStub()}), {f1, f2});
}

// upstream: test_unwrap_merge_complex_seqno — f1=(c0,2), f2=(c1,1), f3=(c0,1), f4=(c1,2);
// merge(array(f1,f2), array(f3,f4)) yields f1 then f4.
TEST(DmaFenceUnwrap, UnwrapMergeComplexSeqno) {
  uint64_t c0 = FenceContext::Allocate(), c1 = FenceContext::Allocate();
  FenceRef f1 = MockFence(c0, 2), f2 = MockFence(c1, 1), f3 = MockFence(c0, 1),
           f4 = MockFence(c1, 2);
  std::vector<FenceRef> got =
      UnwrapLeaves(Merge({MockArray({f1, f2}), MockArray({f3, f4})}));
  EXPECT_EQ(got, (std::vector<FenceRef>{f1, f4}));
}

// udrm: merging only signalled fences gives a new signalled stub with the latest timestamp.
TEST(DmaFenceUnwrap, MergeOfSignalledIsStubWithLatestTimestamp) {
  FenceRef f1 = MockFence(), f2 = MockFence();
  f1->SignalWithTimestamp(absl::FromUnixSeconds(10));
  f2->SignalWithTimestamp(absl::FromUnixSeconds(20));
  FenceRef m = Merge({f1, f2});
  EXPECT_NE(m, f1);
  EXPECT_NE(m, f2);
  EXPECT_TRUE(m->IsSignaledFlag());
  EXPECT_EQ(m->timestamp(), absl::FromUnixSeconds(20));
}

// udrm: the merged array signals only when every kept fence has, carrying the first error.
TEST(DmaFenceUnwrap, MergedArraySignalsWhenAllDo) {
  FenceRef f1 = MockFence(), f2 = MockFence();
  FenceRef m = Merge({f1, f2});
  m->EnableSignaling();
  f1->SetError(absl::DataLossError("EIO"));
  f1->Signal();
  EXPECT_FALSE(m->IsSignaled());
  f2->Signal();
  EXPECT_TRUE(m->IsSignaledFlag());
  EXPECT_EQ(m->error(), absl::DataLossError("EIO"));
}

}  // namespace
}  // namespace fence
