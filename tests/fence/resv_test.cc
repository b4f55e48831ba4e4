// fence::Resv: dma_resv semantics — usage classes, reservations, the add-fence replacement rule,
// locked and unlocked iteration, waits; and readers racing a writer (run under TSan in CI).
#include "fence/resv.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"

namespace fence {
namespace {

using U = ResvUsage;

class ResvTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(resv_.Lock(nullptr).ok()); }
  void TearDown() override {
    if (resv_.lock().IsLocked()) resv_.Unlock();
  }
  void Add(const FenceRef& f, U usage) {
    ASSERT_TRUE(resv_.Reserve(1).ok());
    resv_.AddFence(f, usage);
  }
  Resv resv_;
  FenceContext tl_a_, tl_b_, tl_c_, tl_d_;
};

// Rule: a query for usage U returns every fence with usage <= U (KERNEL < WRITE < READ < BOOKKEEP).
TEST_F(ResvTest, UsageClassesNest) {
  Add(tl_a_.NewFence(), U::kKernel);
  Add(tl_b_.NewFence(), U::kWrite);
  Add(tl_c_.NewFence(), U::kRead);
  Add(tl_d_.NewFence(), U::kBookkeep);
  EXPECT_EQ(resv_.GetFences(U::kKernel).size(), 1u);
  EXPECT_EQ(resv_.GetFences(U::kWrite).size(), 2u);
  EXPECT_EQ(resv_.GetFences(U::kRead).size(), 3u);
  EXPECT_EQ(resv_.GetFences(U::kBookkeep).size(), 4u);
  EXPECT_EQ(UsageRw(true), U::kRead);
  EXPECT_EQ(UsageRw(false), U::kWrite);
}

// Rule: Reserve(0) is InvalidArgument and changes nothing.
TEST_F(ResvTest, ReserveZeroIsInvalid) {
  EXPECT_TRUE(absl::IsInvalidArgument(resv_.Reserve(0)));
  EXPECT_EQ(resv_.reserved(), 0u);
}

// Rule: a later fence of the same context with no weaker usage replaces the old one.
TEST_F(ResvTest, SameContextLaterReplaces) {
  FenceRef f1 = tl_a_.NewFence(), f2 = tl_a_.NewFence();
  Add(f1, U::kWrite);
  Add(f2, U::kWrite);
  auto fences = resv_.GetFences(U::kBookkeep);
  ASSERT_EQ(fences.size(), 1u);
  EXPECT_EQ(fences[0].fence, f2);
}

// Rule: a same-context fence with a *weaker* usage is added beside the old one, not in its place.
TEST_F(ResvTest, SameContextWeakerUsageAppends) {
  FenceRef f1 = tl_a_.NewFence(), f2 = tl_a_.NewFence();
  Add(f1, U::kWrite);
  Add(f2, U::kRead);
  EXPECT_EQ(resv_.GetFences(U::kBookkeep).size(), 2u);
  EXPECT_EQ(resv_.GetFences(U::kWrite).size(), 1u);
}

// Rule: a signalled fence's slot is reused by any new fence.
TEST_F(ResvTest, SignalledSlotReplaced) {
  FenceRef f1 = tl_a_.NewFence();
  Add(f1, U::kBookkeep);
  f1->Signal();
  FenceRef f2 = tl_b_.NewFence();
  Add(f2, U::kKernel);
  int entries = 0;
  resv_.ForEachLocked(U::kBookkeep, [&](const FenceRef& f, U u) {
    ++entries;
    EXPECT_EQ(f, f2);
    EXPECT_EQ(u, U::kKernel);
  });
  EXPECT_EQ(entries, 1);
}

// Rule: locked iteration includes signalled fences; unlocked iteration skips them.
TEST_F(ResvTest, LockedIterationIncludesSignalled) {
  FenceRef f1 = tl_a_.NewFence(), f2 = tl_b_.NewFence();
  Add(f1, U::kWrite);
  Add(f2, U::kWrite);
  f1->Signal();
  int locked = 0;
  resv_.ForEachLocked(U::kBookkeep, [&](const FenceRef&, U) { ++locked; });
  EXPECT_EQ(locked, 2);
  EXPECT_EQ(resv_.GetFences(U::kBookkeep).size(), 1u);
}

// Rule: reservations last until unlock; adding drops signalled fences.
TEST_F(ResvTest, ReservationsEndAtUnlockAndAddPrunesSignalled) {
  FenceRef f1 = tl_a_.NewFence(), f2 = tl_b_.NewFence();
  Add(f1, U::kWrite);
  Add(f2, U::kWrite);
  f1->Signal();
  f2->Signal();
  ASSERT_TRUE(resv_.Reserve(3).ok());
  EXPECT_EQ(resv_.reserved(), 3u);
  resv_.AddFence(tl_c_.NewFence(), U::kRead);
  EXPECT_EQ(resv_.reserved(), 2u);
  int locked = 0;
  resv_.ForEachLocked(U::kBookkeep, [&](const FenceRef&, U) { ++locked; });
  EXPECT_EQ(locked, 1);
  resv_.Unlock();
  ASSERT_TRUE(resv_.Lock(nullptr).ok());
  EXPECT_EQ(resv_.reserved(), 0u);
}

// Rule (list reuse): the writer reuses a replaced list only when no reader holds it. A reader
// iterating a snapshot while the same thread, as the writer, publishes twice keeps seeing its
// snapshot unchanged (a reuse of the list it holds would clear it under it: ASan / wrong fences).
TEST_F(ResvTest, ReaderSnapshotSurvivesWriterReuse) {
  FenceRef f1 = tl_a_.NewFence(), f2 = tl_b_.NewFence();
  Add(f1, U::kWrite);
  Add(f2, U::kRead);
  std::vector<FenceRef> seen;
  FenceRef f3 = tl_c_.NewFence(), f4 = tl_d_.NewFence();
  resv_.ForEachUnlocked(U::kBookkeep, [&](const FenceRef& f, U) {
    if (seen.empty()) {
      // The writer replaces the list this reader holds, then the one after it; signalling f1
      // makes the next AddFence drop it from the new lists.
      f1->Signal();
      Add(f3, U::kWrite);
      Add(f4, U::kWrite);
    }
    seen.push_back(f);
  });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], f1);
  EXPECT_EQ(seen[1], f2);
  std::vector<FenceRef> now;
  for (const auto& e : resv_.GetFences(U::kBookkeep)) now.push_back(e.fence);
  EXPECT_EQ(now, (std::vector<FenceRef>{f2, f3, f4}));
  // The cycle still works after the reader let go of its list (freed by the reader, not reused).
  FenceRef f5 = tl_a_.NewFence();
  Add(f5, U::kWrite);
  EXPECT_EQ(resv_.GetFences(U::kBookkeep).size(), 4u);
}

// Bad input: a reservation past 2^30 entries is refused, and nothing changes.
TEST_F(ResvTest, HugeReserveIsRefused) {
  Add(tl_a_.NewFence(), U::kWrite);
  EXPECT_EQ(resv_.Reserve(size_t{1} << 31).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(resv_.reserved(), 0u);
  EXPECT_EQ(resv_.GetFences(U::kBookkeep).size(), 1u);
}

// Rule: Replace and Copy on an empty Resv leave it empty; Copy of an empty source empties it.
TEST_F(ResvTest, ReplaceAndCopyEmpty) {
  resv_.Replace(tl_a_.context(), tl_a_.NewFence(), U::kWrite);
  EXPECT_TRUE(resv_.GetFences(U::kBookkeep).empty());
  Add(tl_b_.NewFence(), U::kWrite);
  Resv empty;
  resv_.Copy(empty);
  EXPECT_TRUE(resv_.GetFences(U::kBookkeep).empty());
  EXPECT_TRUE(resv_.TestSignaled(U::kBookkeep));
}

// Contract: adding without a reservation, or adding a container, crashes.
TEST_F(ResvTest, DeathAddWithoutReservation) {
  EXPECT_DEATH(resv_.AddFence(tl_a_.NewFence(), U::kWrite), "without a reservation");
}

TEST_F(ResvTest, DeathWriteWhileUnlocked) {
  resv_.Unlock();
  EXPECT_DEATH((void)resv_.Reserve(1), "not locked");
}

// Rule: Replace swaps every fence of a context; Copy takes the source's unsignalled fences.
TEST_F(ResvTest, ReplaceAndCopy) {
  FenceRef f1 = tl_a_.NewFence(), f2 = tl_b_.NewFence();
  Add(f1, U::kBookkeep);
  Add(f2, U::kWrite);
  FenceRef r = tl_c_.NewFence();
  resv_.Replace(tl_a_.context(), r, U::kKernel);
  auto k = resv_.GetFences(U::kKernel);
  ASSERT_EQ(k.size(), 1u);
  EXPECT_EQ(k[0].fence, r);
  Resv dst;
  ASSERT_TRUE(dst.Lock(nullptr).ok());
  f2->Signal();
  dst.Copy(resv_);
  auto copied = dst.GetFences(U::kBookkeep);
  ASSERT_EQ(copied.size(), 1u);
  EXPECT_EQ(copied[0].fence, r);
  dst.Unlock();
}

// Rule: a reservation lasts until Unlock, also across a Copy that makes the list longer than it
// was when Reserve ran (the spares were sized for the old list: AddFence overflowed them).
TEST_F(ResvTest, ReservationSurvivesALongerCopy) {
  ASSERT_TRUE(resv_.Reserve(2).ok());  // sized for an empty list
  Resv src;
  ASSERT_TRUE(src.Lock(nullptr).ok());
  std::vector<FenceContext> timelines(8);
  for (FenceContext& tl : timelines) {
    ASSERT_TRUE(src.Reserve(1).ok());
    src.AddFence(tl.NewFence(), U::kRead);
  }
  src.Unlock();
  resv_.Copy(src);
  FenceRef f = tl_a_.NewFence(), g = tl_b_.NewFence();
  resv_.AddFence(f, U::kWrite);
  resv_.AddFence(g, U::kWrite);
  EXPECT_EQ(resv_.GetFences(U::kBookkeep).size(), 10u);
  EXPECT_EQ(resv_.GetFences(U::kWrite).size(), 2u);
}

// Rule: TestSignaled / Wait / GetSingleton look at fences with usage <= U only.
TEST_F(ResvTest, TestSignaledWaitSingleton) {
  FenceRef w = tl_a_.NewFence(), r = tl_b_.NewFence();
  Add(w, U::kWrite);
  Add(r, U::kRead);
  resv_.Unlock();
  EXPECT_FALSE(resv_.TestSignaled(U::kWrite));
  EXPECT_TRUE(absl::IsDeadlineExceeded(resv_.Wait(U::kWrite, absl::ZeroDuration()).status()));
  EXPECT_EQ(resv_.GetSingleton(U::kWrite), w);
  FenceRef both = resv_.GetSingleton(U::kRead);
  ASSERT_NE(both, nullptr);
  EXPECT_TRUE(both->IsContainer());
  w->Signal();
  EXPECT_TRUE(resv_.TestSignaled(U::kWrite));
  EXPECT_FALSE(resv_.TestSignaled(U::kRead));
  EXPECT_EQ(resv_.GetSingleton(U::kWrite), nullptr);
  std::thread t([&] { r->Signal(); });
  EXPECT_TRUE(resv_.Wait(U::kBookkeep, absl::Seconds(10)).ok());
  t.join();
  EXPECT_TRUE(both->IsSignaled());
}

// Concurrency: readers take snapshots while a writer adds, replaces and signals fences; every
// snapshot is consistent (no null fence, usages valid), and a fence published before a reader's
// snapshot is in it unless it has signalled since.
TEST(ResvRace, ReadersSeeConsistentSnapshots) {
  Resv resv;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> last_added_seqno{0};
  FenceContext tl;
  std::vector<std::thread> readers;
  std::atomic<int64_t> snapshots{0}, checked{0};
  for (int i = 0; i < 2; ++i) {
    readers.emplace_back([&] {
      while (!stop) {
        uint64_t before = last_added_seqno.load(std::memory_order_acquire);
        uint64_t max_seen = 0;
        std::string dump;
        for (const auto& e : resv.GetFences(U::kBookkeep)) {
          dump += absl::StrCat(e.fence->context(), ":", e.fence->seqno(), " ");
          ASSERT_NE(e.fence, nullptr);
          ASSERT_LE(static_cast<int>(e.usage), 3);
          if (e.fence->context() == tl.context()) max_seen = std::max(max_seen, e.fence->seqno());
        }
        // The writer signals the fence it published as `before` only after publishing a newer
        // one, and the snapshot was taken after `before` was published: unless the writer has
        // moved on meanwhile, the snapshot must hold that fence (or a newer one) pending.
        const uint64_t after = last_added_seqno.load(std::memory_order_acquire);
        if (before != 0 && after == before) {
          ASSERT_GE(max_seen, before) << "snapshot " << dump;
          checked++;
        }
        snapshots++;
      }
    });
  }
  FenceRef prev;
  for (int i = 0; i < 3000; ++i) {
    ASSERT_TRUE(resv.Lock(nullptr).ok());
    ASSERT_TRUE(resv.Reserve(2).ok());
    FenceRef f = tl.NewFence();
    resv.AddFence(f, i % 2 ? U::kRead : U::kWrite);
    FenceContext other;
    FenceRef bookkeeping = other.NewFence();
    resv.AddFence(bookkeeping, U::kBookkeep);
    resv.Unlock();
    bookkeeping->Signal();  // its slot is reused by a later add
    last_added_seqno.store(f->seqno(), std::memory_order_release);
    if (i % 64 == 0) absl::SleepFor(absl::Microseconds(300));  // let readers see a quiet state
    if (prev) prev->Signal();
    prev = f;
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_GT(snapshots.load(), 0);
  EXPECT_GT(checked.load(), 0);
}

}  // namespace
}  // namespace fence
