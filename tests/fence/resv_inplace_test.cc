// fence::Resv: AddFence changes the published list in place when no reader holds it, and copies
// it when one does. Both paths must give the same list (the add-fence rule, signalled entries
// dropped), a held snapshot must never change, and reservations must cover the copy path
// whichever path the earlier adds took.
#include <random>
#include <utility>
#include <vector>

#include "fence/fence_context.h"
#include "fence/resv.h"
#include "gtest/gtest.h"

namespace fence {
namespace {

using U = ResvUsage;

struct ModelEntry {
  FenceRef fence;
  U usage;
  bool operator==(const ModelEntry& o) const { return fence == o.fence && usage == o.usage; }
};

// resv.h's rule, written out: signalled entries dropped, the first entry of the same context with
// usage >= `usage` and not later than `f` replaced in its place, otherwise `f` appended.
void ModelAdd(std::vector<ModelEntry>& m, const FenceRef& f, U usage) {
  std::vector<ModelEntry> out;
  bool replaced = false;
  for (const ModelEntry& e : m) {
    if (e.fence->IsSignaled()) continue;
    if (!replaced && e.fence->context() == f->context() && e.usage >= usage &&
        Fence::IsLaterOrSame(*f, *e.fence)) {
      out.push_back({f, usage});
      replaced = true;
      continue;
    }
    out.push_back(e);
  }
  if (!replaced) out.push_back({f, usage});
  m = std::move(out);
}

std::vector<ModelEntry> Locked(const Resv& r) {
  std::vector<ModelEntry> out;
  r.ForEachLocked(U::kBookkeep, [&](const FenceRef& f, U u) { out.push_back({f, u}); });
  return out;
}

std::vector<ModelEntry> Unsignalled(const std::vector<ModelEntry>& m) {
  std::vector<ModelEntry> out;
  for (const ModelEntry& e : m) {
    if (!e.fence->IsSignaled()) out.push_back(e);
  }
  return out;
}

// Rule: whether an add goes in place (no reader) or copies (a reader holds the list: the add is
// made from inside ForEachUnlocked), the list is the model's, entry for entry and in order; and
// the reader's snapshot is the list as it was before the add. Seeded, so deterministic.
TEST(ResvInPlace, BothPathsFollowTheRuleAndHeldSnapshotsNeverChange) {
  Resv resv;
  std::vector<FenceContext> timelines(5);
  std::vector<FenceRef> pending;
  std::vector<ModelEntry> model;
  std::mt19937 rng(13);
  int copies = 0, in_place = 0;
  for (int i = 0; i < 4000; ++i) {
    ASSERT_TRUE(resv.Lock(nullptr).ok());
    const int adds = 1 + static_cast<int>(rng() % 3);
    ASSERT_TRUE(resv.Reserve(adds).ok());
    for (int a = 0; a < adds; ++a) {
      FenceContext& tl = timelines[rng() % timelines.size()];
      FenceRef f = tl.NewFence();
      pending.push_back(f);
      const U usage = static_cast<U>(rng() % 4);
      if (rng() % 4 == 0) {
        // A reader holds the list across the add: it must see exactly the list before it.
        const std::vector<ModelEntry> before = Unsignalled(model);
        std::vector<ModelEntry> seen;
        bool added = false;
        resv.ForEachUnlocked(U::kBookkeep, [&](const FenceRef& g, U u) {
          if (!added) {
            resv.AddFence(f, usage);
            added = true;
          }
          seen.push_back({g, u});
        });
        if (!added) resv.AddFence(f, usage);  // nothing to iterate: no list held
        ++copies;
        EXPECT_EQ(seen, before) << "iteration " << i;
      } else {
        resv.AddFence(f, usage);
        ++in_place;
      }
      ModelAdd(model, f, usage);
      ASSERT_EQ(Locked(resv), model) << "iteration " << i << " add " << a;
      EXPECT_EQ(resv.reserved(), static_cast<size_t>(adds - a - 1));
    }
    resv.Unlock();
    // Signal a few pending fences (oldest first or at random), so later adds drop them.
    for (int s = static_cast<int>(rng() % 3); s > 0 && !pending.empty(); --s) {
      const size_t k = rng() % pending.size();
      pending[k]->Signal();
      pending.erase(pending.begin() + static_cast<long>(k));
    }
  }
  EXPECT_GT(copies, 500);
  EXPECT_GT(in_place, 2000);
  for (auto& f : pending) f->Signal();
}

// Rule: reservations cover the copy path even when earlier adds of the same Reserve() went in
// place (each add uses one reservation whichever path it takes): Reserve(3), an add in place, then
// two adds while a reader holds the list, which must copy into reserved lists (a missing one is a
// contract crash, "no spare list").
TEST(ResvInPlace, ReservationsCoverCopiesAfterInPlaceAdds) {
  Resv resv;
  FenceContext a, b, c, d;
  ASSERT_TRUE(resv.Lock(nullptr).ok());
  ASSERT_TRUE(resv.Reserve(1).ok());
  FenceRef fa = a.NewFence();
  resv.AddFence(fa, U::kWrite);  // publishes the first list (a copy: there was none)
  resv.Unlock();

  ASSERT_TRUE(resv.Lock(nullptr).ok());
  ASSERT_TRUE(resv.Reserve(3).ok());
  FenceRef fb = b.NewFence(), fc = c.NewFence(), fd = d.NewFence();
  resv.AddFence(fb, U::kRead);  // in place
  EXPECT_EQ(resv.reserved(), 2u);
  int n = 0;
  resv.ForEachUnlocked(U::kBookkeep, [&](const FenceRef&, U) {
    if (n++ == 0) {
      resv.AddFence(fc, U::kRead);  // copies
      resv.AddFence(fd, U::kRead);  // the list just published is not held: in place
    }
  });
  EXPECT_EQ(n, 2);  // the snapshot: fa, fb
  EXPECT_EQ(resv.reserved(), 0u);
  EXPECT_EQ(Locked(resv), (std::vector<ModelEntry>{
                              {fa, U::kWrite}, {fb, U::kRead}, {fc, U::kRead}, {fd, U::kRead}}));

  // Again with every add made while a reader holds the list: three copies from one Reserve(3).
  std::vector<ModelEntry> model = Locked(resv);
  resv.Unlock();
  ASSERT_TRUE(resv.Lock(nullptr).ok());
  ASSERT_TRUE(resv.Reserve(3).ok());
  for (int i = 0; i < 3; ++i) {
    FenceRef f = a.NewFence();
    ModelAdd(model, f, U::kBookkeep);
    resv.ForEachUnlocked(U::kBookkeep, [&](const FenceRef&, U) {
      if (f != nullptr) resv.AddFence(std::exchange(f, nullptr), U::kBookkeep);
    });
    ASSERT_EQ(f, nullptr);
  }
  EXPECT_EQ(resv.reserved(), 0u);
  EXPECT_EQ(Locked(resv), model);
  resv.Unlock();
  for (const FenceRef& f : {fa, fb, fc, fd}) f->Signal();
}

// Rule: an in-place add needs room in the published list; a full one is copied into the
// reservation instead (which Reserve sized for one more entry), with the same result.
TEST(ResvInPlace, FullListIsCopied) {
  Resv resv;
  std::vector<FenceContext> tls(9);
  std::vector<ModelEntry> model;
  ASSERT_TRUE(resv.Lock(nullptr).ok());
  for (FenceContext& tl : tls) {  // 9 contexts, none signalled: the list grows past 4 and 8
    FenceRef f = tl.NewFence();
    ASSERT_TRUE(resv.Reserve(1).ok());
    resv.AddFence(f, U::kRead);
    ModelAdd(model, f, U::kRead);
    ASSERT_EQ(Locked(resv), model);
  }
  resv.Unlock();
  for (auto& e : model) e.fence->Signal();
}

}  // namespace
}  // namespace fence
