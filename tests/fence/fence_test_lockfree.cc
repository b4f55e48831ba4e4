// fence::Fence's state word (issue 13): a signal with no callback registered takes no mutex, and
// races between that signal and AddCallback / Wait / SetError keep every fence.h contract —
// a callback runs exactly once iff AddCallback returned OK, a failed AddCallback sees the
// timestamp, Signal returns true exactly once.
#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "gtest/gtest.h"

namespace fence {
namespace {

TEST(FenceStateWord, SignalRacingWithAddCallbackRunsEachCallbackOnceIffAdded) {
  for (int round = 0; round < 2000; ++round) {
    FenceRef f = Fence::Create(1, 1);
    std::atomic<bool> go{false};
    std::atomic<int> ran{0};
    FenceCallback cb;
    bool added = false;
    absl::Time seen_ts;
    int signalled = 0;
    std::thread adder([&] {
      while (!go.load(std::memory_order_acquire)) {
      }
      added = f->AddCallback(&cb, [&](Fence&) { ran.fetch_add(1); }).ok();
      if (!added) seen_ts = f->timestamp();  // a failed AddCallback observes the signal
    });
    std::thread signaller([&] {
      while (!go.load(std::memory_order_acquire)) {
      }
      signalled += f->SignalWithTimestamp(absl::FromUnixSeconds(round + 1)) ? 1 : 0;
    });
    go.store(true, std::memory_order_release);
    adder.join();
    signaller.join();
    signalled += f->Signal() ? 1 : 0;  // already signalled: false
    EXPECT_EQ(signalled, 1);
    EXPECT_EQ(ran.load(), added ? 1 : 0);
    if (!added) {
      EXPECT_EQ(seen_ts, absl::FromUnixSeconds(round + 1));
    }
    EXPECT_TRUE(f->IsSignaledFlag());
    EXPECT_EQ(f->timestamp(), absl::FromUnixSeconds(round + 1));
  }
}

TEST(FenceStateWord, TwoSignallersOneWins) {
  for (int round = 0; round < 2000; ++round) {
    FenceRef f = Fence::Create(1, 1);
    std::atomic<int> wins{0};
    std::atomic<bool> go{false};
    auto signal = [&](int s) {
      while (!go.load(std::memory_order_acquire)) {
      }
      if (f->SignalWithTimestamp(absl::FromUnixSeconds(s))) wins.fetch_add(1);
    };
    std::thread a(signal, 1), b(signal, 2);
    go.store(true, std::memory_order_release);
    a.join();
    b.join();
    EXPECT_EQ(wins.load(), 1);
    const absl::Time ts = f->timestamp();
    EXPECT_TRUE(ts == absl::FromUnixSeconds(1) || ts == absl::FromUnixSeconds(2));
  }
}

// A Signal that loses the race returns only once the winner's signal is visible: right after
// either call returns, the fence reads as signalled and its timestamp is readable (a loser used to
// return false — and IsSignaled() true — between the winner's claim and its release store).
TEST(FenceStateWord, LosingSignallerSeesTheSignal) {
  for (int round = 0; round < 2000; ++round) {
    FenceRef f = Fence::Create(1, 1);
    std::atomic<bool> go{false};
    std::atomic<int> unsignalled_after_return{0};
    auto signal = [&](int s) {
      while (!go.load(std::memory_order_acquire)) {
      }
      f->SignalWithTimestamp(absl::FromUnixSeconds(s));
      if (!f->IsSignaled()) unsignalled_after_return.fetch_add(1);
      (void)f->timestamp();  // CHECK-fails on an unsignalled fence
    };
    std::thread a(signal, 1), b(signal, 2);
    go.store(true, std::memory_order_release);
    a.join();
    b.join();
    EXPECT_EQ(unsignalled_after_return.load(), 0);
  }
}

// SetError on one thread, the signal on another that learned of it only through a relaxed flag
// (no happens-before), and a reader that sees the fence signalled: the reader must see the error
// and read it race-free (TSan reports the error's write against the read if the signal does not
// publish it — it used to claim lock-free, past the mutex SetError wrote under).
TEST(FenceStateWord, ErrorSetOnAnotherThreadIsPublishedBySignal) {
  for (int round = 0; round < 200; ++round) {
    FenceRef f = Fence::Create(1, 1);
    std::atomic<bool> error_set{false};
    std::thread setter([&] {
      f->SetError(absl::InternalError("boom"));
      error_set.store(true, std::memory_order_relaxed);
    });
    std::thread signaller([&] {
      while (!error_set.load(std::memory_order_relaxed)) {
      }
      f->Signal();
    });
    while (!f->IsSignaled()) {
    }
    EXPECT_EQ(f->error().code(), absl::StatusCode::kInternal);
    setter.join();
    signaller.join();
  }
}

// A callback added and removed again leaves the fence signallable without the mutex, and an
// error set before a lock-free signal is seen by every reader after it.
TEST(FenceStateWord, RemovedCallbackAndErrorBeforeSignal) {
  FenceRef f = Fence::Create(1, 1);
  FenceCallback cb;
  bool ran = false;
  ASSERT_TRUE(f->AddCallback(&cb, [&](Fence&) { ran = true; }).ok());
  EXPECT_TRUE(f->RemoveCallback(&cb));
  f->SetError(absl::DataLossError("x"));
  std::thread t([&] { EXPECT_TRUE(f->Signal()); });
  ASSERT_TRUE(f->Wait(absl::Seconds(10)).ok());
  EXPECT_TRUE(absl::IsDataLoss(f->error()));
  EXPECT_EQ(f->GetStatus(), FenceStatus::kError);
  t.join();
  EXPECT_FALSE(ran);
}

// The timestamp is kept in nanoseconds: whole nanoseconds round-trip, the infinities saturate.
TEST(FenceStateWord, TimestampNanosecondsAndInfinities) {
  const absl::Time t = absl::FromUnixNanos(1234567890123456789);
  FenceRef a = Fence::Create(1, 1);
  a->SignalWithTimestamp(t);
  EXPECT_EQ(a->timestamp(), t);
  FenceRef b = Fence::Create(1, 2);
  b->SignalWithTimestamp(absl::InfiniteFuture());
  EXPECT_EQ(b->timestamp(), absl::InfiniteFuture());
  FenceRef c = Fence::Create(1, 3);
  c->SignalWithTimestamp(absl::InfinitePast());
  EXPECT_EQ(c->timestamp(), absl::InfinitePast());
}

// Many waiters racing with a signal: each Wait returns once the fence is signalled.
TEST(FenceStateWord, WaitersRacingWithSignal) {
  for (int round = 0; round < 200; ++round) {
    FenceRef f = Fence::Create(1, 1);
    std::vector<std::thread> waiters;
    std::atomic<int> ok{0};
    for (int i = 0; i < 3; ++i) {
      waiters.emplace_back([&] { ok.fetch_add(f->Wait(absl::Seconds(10)).ok() ? 1 : 0); });
    }
    f->Signal();
    for (auto& w : waiters) w.join();
    EXPECT_EQ(ok.load(), 3);
  }
}

}  // namespace
}  // namespace fence
