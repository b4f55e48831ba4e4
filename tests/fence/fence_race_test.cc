// Concurrency tests for fence/, meant to run under ThreadSanitizer (CI runs every test under
// --config=tsan as well). Each asserts a behaviour, not just "no crash".
#include <algorithm>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "fence/fence.h"
#include "fence/fence_chain.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"

namespace fence {
namespace {

// A slot two threads publish fences through (the upstream test's RCU-protected pointer).
class Slot {
 public:
  void Set(FenceRef f) {
    absl::MutexLock l(&mu_);
    f_ = std::move(f);
  }
  FenceRef Get() {
    absl::MutexLock l(&mu_);
    return f_;
  }

 private:
  absl::Mutex mu_;
  FenceRef f_ ABSL_GUARDED_BY(mu_);
};

// upstream: race_signal_callback — two threads each publish a fence and add a callback to the
// other's (current or previous) fence, signalling their own before or after; a callback that was
// added has always run once the waiter returns (no lost wake-up).
TEST(DmaFenceRace, RaceSignalCallback) {
  for (bool signal_before_add : {true, false}) {
    Slot slots[2];
    std::atomic<bool> stop{false};
    std::atomic<int> lost{0}, passes{0}, added_count{0};
    auto worker = [&](int me) {
      while (!stop) {
        FenceRef f1 = Fence::Create(FenceContext::Allocate(), 1);
        f1->EnableSignaling();
        slots[me].Set(f1);
        FenceRef f2;
        while ((f2 = slots[1 - me].Get()) == nullptr && !stop) std::this_thread::yield();
        if (signal_before_add) f1->Signal();
        FenceCallback cb;
        std::atomic<bool> seen{false};
        const bool added =
            f2 != nullptr && f2->AddCallback(&cb, [&seen](Fence&) { seen = true; }).ok();
        if (!signal_before_add) f1->Signal();
        if (added) {
          added_count++;
          ASSERT_TRUE(f2->Wait(absl::Seconds(30)).ok());
          // Once not pending, the callback has finished running (or RemoveCallback removed it).
          if (!f2->RemoveCallback(&cb) && !seen) lost++;
        }
        slots[me].Set(nullptr);
        passes++;
      }
    };
    std::thread a(worker, 0), b(worker, 1);
    absl::SleepFor(absl::Milliseconds(50));
    stop = true;
    a.join();
    b.join();
    EXPECT_EQ(lost.load(), 0);
    EXPECT_GT(passes.load(), 0);
  }
}

// udrm: two threads signalling one fence while two add callbacks: every callback either runs
// exactly once or AddCallback reported "already signalled"; exactly one Signal() wins.
TEST(DmaFenceRace, ConcurrentSignalAndAddCallback) {
  constexpr int kRounds = 2000;
  constexpr int kPerAdder = 8;
  for (int round = 0; round < kRounds; ++round) {
    FenceRef f = Fence::Create(FenceContext::Allocate(), 1);
    std::atomic<int> wins{0};
    std::atomic<int> runs[2 * kPerAdder] = {};
    bool added[2 * kPerAdder] = {};
    FenceCallback cbs[2 * kPerAdder];
    std::atomic<bool> go{false};
    auto signaller = [&] {
      while (!go) std::this_thread::yield();
      if (f->Signal()) wins++;
    };
    auto adder = [&](int base) {
      while (!go) std::this_thread::yield();
      for (int i = base; i < base + kPerAdder; ++i) {
        absl::Status st = f->AddCallback(&cbs[i], [&runs, i](Fence&) { runs[i]++; });
        ASSERT_TRUE(st.ok() || IsAlreadySignaled(st)) << st;
        added[i] = st.ok();
      }
    };
    std::thread t1(signaller), t2(signaller), t3(adder, 0), t4(adder, kPerAdder);
    go = true;
    t1.join();
    t2.join();
    t3.join();
    t4.join();
    ASSERT_EQ(wins.load(), 1);
    for (int i = 0; i < 2 * kPerAdder; ++i) ASSERT_EQ(runs[i].load(), added[i] ? 1 : 0) << i;
  }
}

// udrm: many threads waiting on one fence all wake up once it signals and see the producer's
// write.
TEST(DmaFenceRace, ManyWaiters) {
  constexpr int kWaiters = 32;
  FenceRef f = Fence::Create(FenceContext::Allocate(), 1);
  int payload = 0;
  std::atomic<int> woke{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&] {
      ASSERT_TRUE(f->Wait(absl::Seconds(30)).ok());
      EXPECT_EQ(payload, 42);
      woke++;
    });
  }
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(woke.load(), 0);
  payload = 42;
  f->Signal();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(woke.load(), kWaiters);
}

// udrm: a waiter that times out or is cancelled while the fence signals returns a consistent
// result and leaves no callback behind.
TEST(DmaFenceRace, WaitTimeoutRacesSignal) {
  for (int i = 0; i < 500; ++i) {
    FenceRef f = Fence::Create(FenceContext::Allocate(), 1);
    std::thread s([&] { f->Signal(); });
    auto r = f->Wait(absl::Microseconds(i % 50));
    s.join();
    if (!r.ok()) {
      EXPECT_TRUE(absl::IsDeadlineExceeded(r.status()));
    }
    EXPECT_TRUE(f->Wait(absl::ZeroDuration()).ok());
  }
}

// udrm: a 4096-point chain signalled out of order by two threads while a third calls FindSeqno:
// every lookup succeeds and returns null (all signalled up to the point) or a node of the timeline
// at or before the point; at the end the head has signalled and all earlier links are gone.
TEST(DmaFenceRace, ChainFindSeqnoWhileSignallingOutOfOrder) {
  constexpr int kPoints = 4096;
  std::vector<FenceRef> fences, chains;
  FenceRef head;
  for (int i = 0; i < kPoints; ++i) {
    fences.push_back(Fence::Create(FenceContext::Allocate(), 1));
    head = FenceChain::Create(head, fences.back(), i + 1);
    chains.push_back(head);
  }
  head->EnableSignaling();
  std::vector<int> order(kPoints);
  for (int i = 0; i < kPoints; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(12345));
  std::atomic<bool> done{false};
  auto signaller = [&](int parity) {
    for (int k = parity; k < kPoints; k += 2) fences[order[k]]->Signal();
  };
  std::thread finder([&] {
    std::mt19937 rng(7);
    int lookups = 0;
    while (!done || lookups < 1000) {
      uint64_t point = 1 + rng() % kPoints;
      FenceRef f = head;
      ASSERT_TRUE(FenceChain::FindSeqno(&f, point).ok());
      if (f != nullptr) {
        ASSERT_EQ(f->context(), head->context());
        ASSERT_LE(f->seqno(), point) << "found a node after the point";
      }
      ++lookups;
    }
  });
  std::thread s1(signaller, 0), s2(signaller, 1);
  s1.join();
  s2.join();
  done = true;
  finder.join();
  EXPECT_TRUE(head->Wait(absl::Seconds(30)).ok());
  // The head itself signals the last point; every earlier link was garbage-collected.
  FenceRef f = head;
  ASSERT_TRUE(FenceChain::FindSeqno(&f, kPoints).ok());
  EXPECT_EQ(f, head);
  f = head;
  ASSERT_TRUE(FenceChain::FindSeqno(&f, kPoints - 1).ok());
  EXPECT_EQ(f, nullptr);
  EXPECT_EQ(FenceChain::Cast(head.get())->prev(), nullptr);
  for (const FenceRef& c : chains) EXPECT_TRUE(c->IsSignaled());
}

}  // namespace
}  // namespace fence
