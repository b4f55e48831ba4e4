// Ports of the dma-fence selftests (drivers/dma-buf/st-dma-fence.c, KUnit "dma-buf-fence") plus
// the udrm-specific contracts of fence::Fence. Each test names the upstream case it ports.
#include "fence/fence.h"

#include <atomic>
#include <stop_token>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"

namespace fence {
namespace {

FenceRef MockFence() { return Fence::Create(FenceContext::Allocate(), 1); }

// upstream: sanitycheck — create, enable signalling, signal, release.
TEST(DmaFence, Sanitycheck) {
  FenceRef f = MockFence();
  f->EnableSignaling();
  EXPECT_TRUE(f->Signal());
  f.reset();
}

// upstream: test_signaling — not signalled at creation; signal reports "was not signalled";
// then signalled, and a second signal reports it already was; ops detach after signal.
TEST(DmaFence, Signaling) {
  FenceRef f = MockFence();
  f->EnableSignaling();
  EXPECT_FALSE(f->IsSignaled());
  EXPECT_EQ(f->driver_name(), "udrm");
  EXPECT_TRUE(f->Signal());
  EXPECT_TRUE(f->IsSignaled());
  EXPECT_TRUE(f->IsSignaledFlag());
  EXPECT_FALSE(f->Signal());
  EXPECT_EQ(f->driver_name(), "detached-driver");
  EXPECT_EQ(f->timeline_name(), "signaled-timeline");
}

// upstream: test_add_callback — a callback added before the signal runs on signal.
TEST(DmaFence, AddCallback) {
  FenceRef f = MockFence();
  FenceCallback cb;
  bool seen = false;
  ASSERT_TRUE(f->AddCallback(&cb, [&](Fence&) { seen = true; }).ok());
  EXPECT_FALSE(seen);
  f->Signal();
  EXPECT_TRUE(seen);
}

// upstream: test_late_add_callback — adding after the signal fails with "already signalled"
// and the callback never runs, not even on a second signal.
TEST(DmaFence, LateAddCallback) {
  FenceRef f = MockFence();
  f->Signal();
  FenceCallback cb;
  bool seen = false;
  absl::Status st = f->AddCallback(&cb, [&](Fence&) { seen = true; });
  EXPECT_TRUE(IsAlreadySignaled(st)) << st;
  // Recognised by its tag, not its text: reworded it still is; the same text without the tag is
  // not.
  absl::Status reworded(st.code(), "reworded");
  st.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& v) { reworded.SetPayload(url, v); });
  EXPECT_TRUE(IsAlreadySignaled(reworded));
  EXPECT_FALSE(IsAlreadySignaled(absl::Status(st.code(), st.message())));
  f->Signal();
  EXPECT_FALSE(seen);
}

// upstream: test_rm_callback — a removed callback does not run.
TEST(DmaFence, RmCallback) {
  FenceRef f = MockFence();
  FenceCallback cb;
  bool seen = false;
  ASSERT_TRUE(f->AddCallback(&cb, [&](Fence&) { seen = true; }).ok());
  EXPECT_TRUE(f->RemoveCallback(&cb));
  f->Signal();
  EXPECT_FALSE(seen);
}

// upstream: test_late_rm_callback — removing after the callback ran returns false.
TEST(DmaFence, LateRmCallback) {
  FenceRef f = MockFence();
  FenceCallback cb;
  bool seen = false;
  ASSERT_TRUE(f->AddCallback(&cb, [&](Fence&) { seen = true; }).ok());
  f->Signal();
  EXPECT_TRUE(seen);
  EXPECT_FALSE(f->RemoveCallback(&cb));
}

// upstream: test_status — pending before the signal, signalled after.
TEST(DmaFence, Status) {
  FenceRef f = MockFence();
  f->EnableSignaling();
  EXPECT_EQ(f->GetStatus(), FenceStatus::kPending);
  f->Signal();
  EXPECT_EQ(f->GetStatus(), FenceStatus::kSignaled);
}

// upstream: test_error — an error set before the signal shows only once signalled.
TEST(DmaFence, Error) {
  FenceRef f = MockFence();
  f->EnableSignaling();
  f->SetError(absl::DataLossError("EIO"));
  EXPECT_EQ(f->GetStatus(), FenceStatus::kPending);
  f->Signal();
  EXPECT_EQ(f->GetStatus(), FenceStatus::kError);
  EXPECT_EQ(f->error(), absl::DataLossError("EIO"));
}

// upstream: test_wait — a zero-timeout wait times out before the signal and returns "1" after.
TEST(DmaFence, Wait) {
  FenceRef f = MockFence();
  f->EnableSignaling();
  EXPECT_TRUE(absl::IsDeadlineExceeded(f->Wait(absl::ZeroDuration()).status()));
  f->Signal();
  auto r = f->Wait(absl::ZeroDuration());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, absl::Nanoseconds(1));
}

// upstream: test_wait_timeout — a short wait times out; a longer one sees a timer's signal and
// returns the remaining time.
TEST(DmaFence, WaitTimeout) {
  FenceRef f = MockFence();
  EXPECT_TRUE(absl::IsDeadlineExceeded(f->Wait(absl::Milliseconds(10)).status()));
  std::thread timer([f] {
    absl::SleepFor(absl::Milliseconds(10));
    f->Signal();
  });
  auto r = f->Wait(absl::Seconds(10));
  timer.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(*r, absl::ZeroDuration());
  EXPECT_LE(*r, absl::Seconds(10));
}

// upstream: test_stub — the stub fence is always signalled.
TEST(DmaFence, Stub) {
  for (int i = 0; i < 64; ++i) {
    FenceRef f = Fence::GetStub();
    EXPECT_TRUE(f->IsSignaled());
    EXPECT_EQ(f->context(), 0u);
  }
}

// udrm: a private stub carries the timestamp it was made with.
TEST(DmaFence, PrivateStubTimestamp) {
  absl::Time t = absl::FromUnixSeconds(1234);
  FenceRef f = Fence::AllocatePrivateStub(t);
  EXPECT_TRUE(f->IsSignaled());
  EXPECT_EQ(f->timestamp(), t);
}

// udrm: callbacks run in registration order, on the signalling thread.
TEST(DmaFence, CallbacksRunInRegistrationOrderOnSignaller) {
  FenceRef f = MockFence();
  FenceCallback cbs[5];
  std::vector<int> order;
  std::thread::id ran_on;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(f->AddCallback(&cbs[i], [&, i](Fence&) {
                   order.push_back(i);
                   ran_on = std::this_thread::get_id();
                 }).ok());
  }
  ASSERT_TRUE(f->RemoveCallback(&cbs[2]));
  std::thread t([&] { f->Signal(); });
  std::thread::id signaller = t.get_id();
  t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 3, 4}));
  EXPECT_EQ(ran_on, signaller);
}

// udrm: the timestamp is recorded at signal time and is the one given to SignalWithTimestamp.
TEST(DmaFence, Timestamp) {
  FenceRef f = MockFence();
  absl::Time before = absl::Now();
  f->Signal();
  EXPECT_GE(f->timestamp(), before);
  EXPECT_LE(f->timestamp(), absl::Now());
  FenceRef g = MockFence();
  g->SignalWithTimestamp(absl::FromUnixSeconds(42));
  EXPECT_EQ(g->timestamp(), absl::FromUnixSeconds(42));
}

// udrm: wrap-safe 32-bit seqno comparison, plain 64-bit comparison for 64-bit fences.
TEST(DmaFence, IsLaterWrapsAt32Bits) {
  uint64_t ctx = FenceContext::Allocate();
  FenceRef a = Fence::Create(ctx, 0xffffffffu);
  FenceRef b = Fence::Create(ctx, 0x100000001ull);  // low 32 bits 1: later after the wrap
  EXPECT_TRUE(Fence::IsLater(*b, *a));
  EXPECT_FALSE(Fence::IsLater(*a, *b));
  EXPECT_TRUE(Fence::IsLaterOrSame(*a, *a));
  FenceRef a64 = Fence::Create(ctx, 0xffffffffu, SeqnoWidth::k64);
  FenceRef b64 = Fence::Create(ctx, 0x100000001ull, SeqnoWidth::k64);
  EXPECT_TRUE(Fence::IsLater(*b64, *a64));
  EXPECT_TRUE(SeqnoIsLater(1ull << 40, 5, SeqnoWidth::k64));
  EXPECT_FALSE(SeqnoIsLater(0x80000005u, 5, SeqnoWidth::k32));  // half the ring away: not later
}

// udrm: different contexts are never "later"; Later() returns null for a signalled winner.
TEST(DmaFence, LaterAcrossContextsAndSignalled) {
  FenceContext tl;
  FenceRef a = tl.NewFence(), b = tl.NewFence();
  FenceRef other = MockFence();
  EXPECT_FALSE(Fence::IsLater(*a, *other));
  EXPECT_EQ(Fence::Later(a, b), b);
  b->Signal();
  EXPECT_EQ(Fence::Later(a, b), nullptr);
}

// udrm: contexts are unique and start at 1; a FenceContext hands out consecutive seqnos.
TEST(DmaFence, ContextAllocation) {
  uint64_t first = FenceContext::Allocate(3);
  EXPECT_GE(first, 1u);
  EXPECT_EQ(FenceContext::Allocate(), first + 3);
  FenceContext tl("gfx");
  EXPECT_EQ(tl.NewFence()->seqno(), 1u);
  EXPECT_EQ(tl.NewFence()->seqno(), 2u);
  EXPECT_EQ(tl.name(), "gfx");
}

// udrm: a cancellable wait returns Cancelled when a stop is requested on its token, and a
// negative timeout is InvalidArgument.
TEST(DmaFence, CancellableWait) {
  FenceRef f = MockFence();
  std::stop_source token;
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(5));
    token.request_stop();
  });
  EXPECT_TRUE(absl::IsCancelled(f->Wait(token.get_token())));
  canceller.join();
  EXPECT_TRUE(absl::IsCancelled(f->Wait(absl::Seconds(1), token.get_token()).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(f->Wait(absl::Seconds(-1)).status()));
  f->Signal();
  EXPECT_TRUE(f->Wait().ok());
}

// A producer that signals lazily: it only starts when someone enables signalling.
class LazyFence : public Fence {
 public:
  LazyFence() : Fence(FenceContext::Allocate(), 1, SeqnoWidth::k32) {}
  ~LazyFence() override {
    if (producer_.joinable()) producer_.join();
  }
  std::atomic<int> enabled{0};
  bool done_at_enable = false;
  std::atomic<bool> hw_done{false};

 protected:
  bool EnableSignalingHook() override {
    enabled.fetch_add(1);
    if (done_at_enable) return false;
    producer_ = std::thread([this] { Signal(); });
    return true;
  }
  bool PollSignaled() override { return hw_done.load(); }

 private:
  std::thread producer_;
};

// udrm: EnableSignaling calls the producer's hook exactly once; Wait enables it and then sees
// the producer's signal.
TEST(DmaFence, EnableSignalingStartsLazyProducerOnce) {
  auto f = std::make_shared<LazyFence>();
  EXPECT_FALSE(f->IsSignaled());
  EXPECT_EQ(f->enabled.load(), 0);
  EXPECT_TRUE(f->Wait(absl::Seconds(10)).ok());
  f->EnableSignaling();
  EXPECT_EQ(f->enabled.load(), 1);
}

// udrm: a hook reporting "already complete" signals at once; AddCallback then reports it.
TEST(DmaFence, EnableSignalingHookFalseSignals) {
  auto f = std::make_shared<LazyFence>();
  f->done_at_enable = true;
  FenceCallback cb;
  EXPECT_TRUE(IsAlreadySignaled(f->AddCallback(&cb, [](Fence&) {})));
  EXPECT_TRUE(f->IsSignaledFlag());
}

// udrm: IsSignaled polls the producer (ops->signaled) and signals when it reports completion.
TEST(DmaFence, IsSignaledPollsProducer) {
  auto f = std::make_shared<LazyFence>();
  EXPECT_FALSE(f->IsSignaled());
  f->hw_done = true;
  EXPECT_FALSE(f->IsSignaledFlag());
  EXPECT_TRUE(f->IsSignaled());
  EXPECT_TRUE(f->IsSignaledFlag());
}

// udrm: releasing an unsignalled fence with callbacks pending signals it with Aborted (EDEADLK).
TEST(DmaFence, ReleaseWithPendingCallbacksSignalsDeadlock) {
  FenceRef f = MockFence();
  FenceCallback cb;
  absl::Status seen;
  ASSERT_TRUE(f->AddCallback(&cb, [&](Fence& fence) { seen = fence.error(); }).ok());
  f.reset();
  EXPECT_TRUE(absl::IsAborted(seen)) << seen;
}

// udrm: bad input to AddCallback is InvalidArgument and registers nothing.
TEST(DmaFence, AddCallbackRejectsEmptyFn) {
  FenceRef f = MockFence();
  FenceCallback cb;
  EXPECT_TRUE(absl::IsInvalidArgument(f->AddCallback(&cb, nullptr)));
  EXPECT_FALSE(f->RemoveCallback(&cb));
}

// udrm: a callback may re-register its own node on another fence from inside the callback.
TEST(DmaFence, CallbackMayReregisterItsNode) {
  FenceRef a = MockFence(), b = MockFence();
  FenceCallback cb;
  int runs = 0;
  ASSERT_TRUE(a->AddCallback(&cb, [&](Fence&) {
                 ++runs;
                 EXPECT_TRUE(b->AddCallback(&cb, [&](Fence&) { ++runs; }).ok());
               }).ok());
  a->Signal();
  EXPECT_EQ(runs, 1);
  b->Signal();
  EXPECT_EQ(runs, 2);
}

// udrm contract: SetError after signal, or with OK, crashes with a clear message.
TEST(DmaFenceDeathTest, SetErrorAfterSignal) {
  EXPECT_DEATH(
      {
        FenceRef f = MockFence();
        f->Signal();
        f->SetError(absl::DataLossError("late"));
      },
      "SetError after the fence signalled");
  EXPECT_DEATH(MockFence()->SetError(absl::OkStatus()), "non-OK");
}

// udrm contract: timestamp() of an unsignalled fence crashes.
TEST(DmaFenceDeathTest, TimestampBeforeSignal) {
  EXPECT_DEATH(MockFence()->timestamp(), "unsignalled");
}

// udrm memory ordering: data written before Signal() is visible after Wait() returns.
TEST(DmaFence, WaitPublishesProducerWrites) {
  for (int i = 0; i < 200; ++i) {
    FenceRef f = MockFence();
    int payload = 0;
    std::thread producer([&] {
      payload = i + 1;
      f->Signal();
    });
    ASSERT_TRUE(f->Wait().ok());
    EXPECT_EQ(payload, i + 1);
    producer.join();
  }
}

}  // namespace
}  // namespace fence
