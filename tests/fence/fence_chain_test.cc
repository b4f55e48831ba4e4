// fence::FenceChain and fence::FenceArray: timeline points, find_seqno, garbage collection,
// signalling; modelled on the kernel's st-dma-fence-chain.c and dma-fence-array behaviour.
#include "fence/fence_chain.h"

#include "fence/fence_array.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"

namespace fence {
namespace {

// A timeline of `n` points 1..n, each wrapping its own plain fence.
struct Timeline {
  explicit Timeline(int n) {
    FenceRef prev;
    for (int i = 0; i < n; ++i) {
      fences.push_back(Fence::Create(FenceContext::Allocate(), 1));
      prev = FenceChain::Create(prev, fences.back(), i + 1);
      chains.push_back(prev);
    }
  }
  FenceRef head() const { return chains.back(); }
  std::vector<FenceRef> fences;
  std::vector<FenceRef> chains;
};

// upstream (chain): sanitycheck — a chain node continues its predecessor's timeline.
TEST(DmaFenceChain, ContinuesTimeline) {
  Timeline tl(3);
  EXPECT_EQ(tl.chains[1]->context(), tl.chains[0]->context());
  EXPECT_EQ(tl.chains[2]->seqno(), 3u);
  EXPECT_EQ(FenceChain::Cast(tl.chains[2].get())->prev_seqno(), 2u);
  for (auto& f : tl.fences) f->Signal();
}

// kernel rule: a seqno not later than prev's starts a new context, seqno raised to prev's.
TEST(DmaFenceChain, NonMonotonicSeqnoStartsNewContext) {
  FenceRef a = FenceChain::Create(nullptr, Fence::Create(FenceContext::Allocate(), 1), 5);
  FenceRef b = FenceChain::Create(a, Fence::Create(FenceContext::Allocate(), 1), 3);
  EXPECT_NE(b->context(), a->context());
  EXPECT_EQ(b->seqno(), 5u);
  EXPECT_EQ(FenceChain::Cast(b.get())->prev_seqno(), 0u);
}

// upstream (chain): find_seqno — each point is found at its own node; seqno 0 is a no-op;
// a point beyond the head is InvalidArgument.
TEST(DmaFenceChain, FindSeqno) {
  Timeline tl(64);
  for (int i = 0; i < 64; ++i) {
    FenceRef f = tl.head();
    ASSERT_TRUE(FenceChain::FindSeqno(&f, i + 1).ok());
    EXPECT_EQ(f, tl.chains[i]) << "point " << i + 1;
  }
  FenceRef f = tl.head();
  EXPECT_TRUE(FenceChain::FindSeqno(&f, 0).ok());
  EXPECT_EQ(f, tl.head());
  EXPECT_TRUE(absl::IsInvalidArgument(FenceChain::FindSeqno(&f, 65)));
  FenceRef plain = tl.fences[0];
  EXPECT_TRUE(absl::IsInvalidArgument(FenceChain::FindSeqno(&plain, 1)));
  for (auto& fence : tl.fences) fence->Signal();
}

// upstream (chain): find_signaled — once a point's fence signalled, finding it may return an
// earlier unsignalled node, or null if everything up to it has signalled.
TEST(DmaFenceChain, FindSignaled) {
  Timeline tl(2);
  tl.fences[0]->Signal();
  FenceRef f = tl.head();
  ASSERT_TRUE(FenceChain::FindSeqno(&f, 1).ok());
  EXPECT_EQ(f, nullptr);
  tl.fences[1]->Signal();
}

// upstream (chain): find_out_of_order — point 2 signalled before point 1: finding point 2
// yields point 1's node (still unsignalled), via garbage collection.
TEST(DmaFenceChain, FindOutOfOrder) {
  Timeline tl(3);
  tl.fences[1]->Signal();
  FenceRef f = tl.head();
  ASSERT_TRUE(FenceChain::FindSeqno(&f, 2).ok());
  EXPECT_EQ(f, tl.chains[0]);
  tl.fences[0]->Signal();
  tl.fences[2]->Signal();
}

// upstream (chain): find_gap — points 2, 4, 6...: an odd point is found at the next even node.
TEST(DmaFenceChain, FindGap) {
  std::vector<FenceRef> fences, chains;
  FenceRef prev;
  for (int i = 0; i < 8; ++i) {
    fences.push_back(Fence::Create(FenceContext::Allocate(), 1));
    prev = FenceChain::Create(prev, fences.back(), 2 * (i + 1));
    chains.push_back(prev);
  }
  for (int i = 0; i < 8; ++i) {
    FenceRef f = prev;
    ASSERT_TRUE(FenceChain::FindSeqno(&f, 2 * i + 1).ok());
    EXPECT_EQ(f, chains[i]);
  }
  for (auto& f : fences) f->Signal();
}

// upstream (chain): signal_forward / signal_backward — a node signals only when it and every
// earlier point have, whatever the order the fences signal in.
TEST(DmaFenceChain, SignalsOnlyWhenAllEarlierPointsHave) {
  for (bool backward : {false, true}) {
    Timeline tl(16);
    for (auto& c : tl.chains) c->EnableSignaling();
    for (int k = 0; k < 16; ++k) {
      int i = backward ? 15 - k : k;
      tl.fences[i]->Signal();
      for (int j = 0; j < 16; ++j) {
        bool all_before = backward ? (k == 15) : (j <= i);
        EXPECT_EQ(tl.chains[j]->IsSignaledFlag(), all_before) << "node " << j << " step " << k;
      }
    }
  }
}

// upstream (chain): wait_forward — waiting on the head returns once every point signalled.
TEST(DmaFenceChain, WaitOnHead) {
  Timeline tl(32);
  std::thread signaller([&] {
    for (auto& f : tl.fences) f->Signal();
  });
  EXPECT_TRUE(tl.head()->Wait(absl::Seconds(30)).ok());
  signaller.join();
}

// udrm: a long chain releases without recursion (no stack overflow under sanitizers).
TEST(DmaFenceChain, LongChainReleasesIteratively) {
  FenceRef prev;
  for (int i = 0; i < 200000; ++i) {
    FenceRef f = Fence::Create(1, 1);
    prev = FenceChain::Create(prev, f, i + 1);
  }
  prev.reset();
  SUCCEED();
}

// udrm: the first member error becomes the array's error; an array rejects containers,
// nulls and emptiness with InvalidArgument.
TEST(DmaFenceArray, FirstErrorAndBadInput) {
  FenceRef a = Fence::Create(FenceContext::Allocate(), 1);
  FenceRef b = Fence::Create(FenceContext::Allocate(), 1);
  auto array = FenceArray::Create({a, b}, FenceContext::Allocate(), 1);
  ASSERT_TRUE(array.ok());
  FenceRef arr = *array;
  arr->EnableSignaling();
  b->SetError(absl::DataLossError("EIO"));
  b->Signal();
  EXPECT_FALSE(arr->IsSignaledFlag());
  a->SetError(absl::ResourceExhaustedError("ENOMEM"));
  a->Signal();
  EXPECT_TRUE(arr->IsSignaledFlag());
  EXPECT_EQ(arr->error(), absl::DataLossError("EIO"));
  EXPECT_TRUE(absl::IsInvalidArgument(FenceArray::Create({}, 1, 1).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(FenceArray::Create({nullptr}, 1, 1).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(FenceArray::Create({arr}, 1, 1).status()));
}

// udrm: an array of already-signalled fences completes as soon as signalling is enabled, and
// polling completes one whose members signalled without it.
TEST(DmaFenceArray, SignalledMembers) {
  FenceRef a = Fence::Create(FenceContext::Allocate(), 1);
  a->Signal();
  FenceRef arr = *FenceArray::Create({a}, FenceContext::Allocate(), 1);
  EXPECT_TRUE(arr->Wait(absl::ZeroDuration()).ok());
  FenceRef b = Fence::Create(FenceContext::Allocate(), 1);
  FenceRef arr2 = *FenceArray::Create({b}, FenceContext::Allocate(), 1);
  b->Signal();
  EXPECT_TRUE(arr2->IsSignaled());
}

}  // namespace
}  // namespace fence
