// fence::FenceChain's seqno index: FindSeqno through the index returns exactly what the kernel's
// link-by-link walk returns — on random chains (branches, context breaks, plain-fence tails,
// signalled and freed links) checked against a plain model, and under concurrent appends,
// signals, garbage collection and lookups (run under TSan).
#include <atomic>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "fence/fence_chain.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"

namespace fence {
namespace {

// What the test knows of a node, by value: its identity is a weak_ptr so that GC can free it.
struct Rec {
  std::weak_ptr<Fence> node;
  bool is_chain = true;
  int prev = -1;       // index of the original prev in the records, or -1
  FenceRef contained;  // chain: its fence; plain: the fence itself
  uint64_t context = 0, seqno = 0, prev_seqno = 0;
};

// The kernel's find_seqno as a plain walk over the original links: visit the head, then each
// earlier node whose contained fence is unsignalled; stop outside the context, at a plain fence
// or at prev_seqno < seqno. Returns the record index, or -1 for null.
int ModelFind(const std::vector<Rec>& recs, int head, uint64_t seqno) {
  const uint64_t context = recs[head].context;
  int cur = head;
  for (;;) {
    const Rec& r = recs[cur];
    if (!r.is_chain || r.context != context || r.prev_seqno < seqno) return cur;
    int p = r.prev;
    while (p != -1 && recs[p].contained->IsSignaledFlag()) p = recs[p].prev;
    if (p == -1) return -1;
    cur = p;
  }
}

// Random forests of chains, lookups from every kept node for every point, against the model.
TEST(FenceChainIndex, RandomChainsMatchTheLinearWalk) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 60; ++round) {
    std::vector<Rec> recs;
    std::vector<FenceRef> kept;  // the only strong references to nodes the test holds
    const int n = 1 + static_cast<int>(rng() % 120);
    std::vector<FenceRef> all;  // dropped below, after choosing what to keep
    int newest = -1;
    for (int i = 0; i < n; ++i) {
      const unsigned kind = rng() % 100;
      if (kind < 5) {  // a plain fence to start a chain from
        Rec r;
        r.is_chain = false;
        r.contained = Fence::Create(FenceContext::Allocate(), 1);
        r.node = r.contained;
        r.context = r.contained->context();
        recs.push_back(r);
        all.push_back(r.contained);
        continue;
      }
      int prev = -1;
      if (kind < 75) prev = newest;                                        // extend the line
      else if (kind < 95 && !recs.empty()) prev = rng() % recs.size();    // a branch
      FenceRef prev_ref = prev >= 0 ? recs[prev].node.lock() : nullptr;
      const uint64_t prev_no = prev >= 0 ? recs[prev].seqno : 0;
      const uint64_t seqno = rng() % 10 == 0 ? 1 + rng() % 4 : prev_no + 1 + rng() % 3;
      Rec r;
      r.contained = Fence::Create(FenceContext::Allocate(), 1);
      FenceRef node = FenceChain::Create(prev_ref, r.contained, seqno);
      r.node = node;
      r.prev = prev;
      r.context = node->context();
      r.seqno = node->seqno();
      r.prev_seqno = FenceChain::Cast(node.get())->prev_seqno();
      recs.push_back(r);
      all.push_back(node);
      newest = static_cast<int>(recs.size()) - 1;
    }
    // Signal some fences, keep some nodes, drop the rest, let GC unhook (and so free) links.
    for (Rec& r : recs) {
      if (rng() % 100 < 45) r.contained->Signal();
    }
    for (size_t i = 0; i < all.size(); ++i) {
      if (rng() % 3 == 0 || static_cast<int>(i) == newest) kept.push_back(all[i]);
    }
    all.clear();
    for (const FenceRef& k : kept) {
      if (rng() % 2 == 0) (void)FenceChain::Walk(k);
    }
    for (size_t i = 0; i < recs.size(); ++i) {
      FenceRef head = recs[i].node.lock();
      if (head == nullptr || !recs[i].is_chain) continue;
      for (uint64_t x = 1; x <= recs[i].seqno; ++x) {
        const int want = ModelFind(recs, static_cast<int>(i), x);
        FenceRef f = head;
        ASSERT_TRUE(FenceChain::FindSeqno(&f, x).ok());
        FenceRef expected = want >= 0 ? recs[want].node.lock() : nullptr;
        if (want >= 0) {
          ASSERT_NE(expected, nullptr) << "the model's answer was freed";
        }
        ASSERT_EQ(f, expected) << "round " << round << " head " << i << " point " << x
                               << " model " << want;
      }
      FenceRef f = head;
      EXPECT_TRUE(absl::IsInvalidArgument(FenceChain::FindSeqno(&f, recs[i].seqno + 1)));
      EXPECT_EQ(f, head);
    }
    for (Rec& r : recs) r.contained->Signal();
  }
}

// A signalled stretch that GC unhooked and freed: the lookup of a point inside it lands on the
// first unsignalled point before it, and of a point after it on that point's node.
TEST(FenceChainIndex, FreedStretchIsSkipped) {
  constexpr int kLen = 100;
  std::vector<FenceRef> fences;
  FenceRef head;
  std::weak_ptr<Fence> node30;
  for (int i = 0; i < kLen; ++i) {
    fences.push_back(Fence::Create(FenceContext::Allocate(), 1));
    head = FenceChain::Create(head, fences.back(), i + 1);
    if (i + 1 == 30) node30 = head;
  }
  for (int i = 10; i < 50; ++i) fences[i]->Signal();  // points 11..50
  for (FenceRef it = head; it != nullptr; it = FenceChain::Walk(it)) {
  }  // a walk over the whole chain: GC unhooks them, and nothing else holds them
  EXPECT_TRUE(node30.expired());
  for (uint64_t x : {11, 30, 50}) {
    FenceRef f = head;
    ASSERT_TRUE(FenceChain::FindSeqno(&f, x).ok());
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(FenceChain::Contained(f), fences[9]) << "point " << x;  // point 10
  }
  FenceRef f = head;
  ASSERT_TRUE(FenceChain::FindSeqno(&f, 51).ok());
  EXPECT_EQ(FenceChain::Contained(f), fences[50]);
  for (auto& fence : fences) fence->Signal();
}

// A node created from an older point of a run starts its own index; lookups through it reach
// the older run's nodes, and the original line is unaffected.
TEST(FenceChainIndex, Branch) {
  std::vector<FenceRef> fences;
  for (int i = 0; i < 5; ++i) fences.push_back(Fence::Create(FenceContext::Allocate(), 1));
  FenceRef a = FenceChain::Create(nullptr, fences[0], 1);
  FenceRef b = FenceChain::Create(a, fences[1], 2);
  FenceRef c = FenceChain::Create(b, fences[2], 3);
  FenceRef d = FenceChain::Create(b, fences[3], 5);  // branch off b: same context
  FenceRef e = FenceChain::Create(d, fences[4], 7);
  EXPECT_EQ(d->context(), a->context());
  const std::vector<std::pair<uint64_t, FenceRef>> from_e = {
      {1, a}, {2, b}, {3, d}, {5, d}, {6, e}, {7, e}};
  for (const auto& [x, want] : from_e) {
    FenceRef f = e;
    ASSERT_TRUE(FenceChain::FindSeqno(&f, x).ok());
    EXPECT_EQ(f, want) << "point " << x;
  }
  FenceRef f = c;
  ASSERT_TRUE(FenceChain::FindSeqno(&f, 3).ok());
  EXPECT_EQ(f, c);
  fences[1]->Signal();  // b: point 2 from e is now a's node
  f = e;
  ASSERT_TRUE(FenceChain::FindSeqno(&f, 2).ok());
  EXPECT_EQ(f, a);
  for (auto& fence : fences) fence->Signal();
}

// One thread appends points and signals them in order a few points behind; others look points
// up from a snapshot of the head and walk it (GC, freeing links) meanwhile. With in-order
// signalling a lookup of point x returns x's node if x is still unsignalled afterwards, null if
// it had signalled before, and one of the two in between.
TEST(FenceChainIndex, ConcurrentAppendsAndLookups) {
  constexpr int kPoints = 3000;
  constexpr int kLag = 8;
  std::vector<FenceRef> fences;
  for (int i = 0; i < kPoints; ++i) fences.push_back(Fence::Create(FenceContext::Allocate(), 1));
  absl::Mutex mu;
  FenceRef head;  // guarded by mu
  // Points 1..signalled have signalled; the signal of points 1..started has begun (a point is
  // counted in `started` before its Signal() and in `signalled` after it returned).
  std::atomic<int> signalled{0}, started{0};
  std::atomic<bool> done{false};
  std::atomic<int> lookups{0}, failures{0};
  std::thread appender([&] {
    FenceRef h;
    for (int i = 0; i < kPoints; ++i) {
      h = FenceChain::Create(h, fences[i], i + 1);
      {
        absl::MutexLock l(&mu);
        head = h;
      }
      if (i >= kLag) {
        started.store(i - kLag + 1);
        fences[i - kLag]->Signal();
        signalled.store(i - kLag + 1);
      }
    }
    // The lookers must have looked while the chain was live: under TSan on a loaded machine the
    // appender could finish before either looker was scheduled (lookups == 0, seen once in a
    // helper's run). The assertions are unchanged; this only guarantees they are exercised.
    while (lookups.load() < 2) std::this_thread::yield();
    done = true;
  });
  auto looker = [&](int seed) {
    std::mt19937 rng(seed);
    while (!done) {
      FenceRef h;
      {
        absl::MutexLock l(&mu);
        h = head;
      }
      if (h == nullptr) continue;
      if (rng() % 8 == 0) (void)FenceChain::Walk(h);
      const uint64_t x = 1 + rng() % h->seqno();
      const int before = signalled.load();
      FenceRef f = h;
      if (!FenceChain::FindSeqno(&f, x).ok()) failures++;
      // Not `signalled`: a point whose Signal() had returned but whose count was not yet stored
      // was read as unsignalled, and finding it signalled failed the test (TSan, ~1 run in 8).
      const int after = started.load();
      const bool is_x = f != nullptr && FenceChain::Contained(f) == fences[x - 1];
      if (static_cast<int>(x) > after && !is_x) failures++;
      // The head itself is always a valid stop (the kernel's loop starts at it without a
      // signalled check): a looker descheduled between reading `h` and `before` could look up a
      // point of a head that had signalled meanwhile (TSan: x=1 on head 1 with before=178).
      if (static_cast<int>(x) <= before && f != nullptr && f != h) failures++;
      if (f != nullptr && !is_x) failures++;
      lookups++;
    }
  };
  std::thread l1(looker, 1), l2(looker, 2);
  appender.join();
  l1.join();
  l2.join();
  EXPECT_EQ(failures.load(), 0) << "of " << lookups.load() << " lookups";
  EXPECT_GT(lookups.load(), 0);
  for (auto& f : fences) f->Signal();
}

}  // namespace
}  // namespace fence
