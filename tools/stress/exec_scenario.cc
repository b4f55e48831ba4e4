// Scenario "exec": contended exec::Exec transactions over random object sets.
//
// Two pools of objects, one per ww algorithm (wait-die: the reservation class; wound-wait: a
// class of its own). Each thread repeatedly picks a pool and 1-6 objects in random order (with
// duplicates, locked with or without kIgnoreDuplicates), locks them with UntilAllLocked and
// PrepareObj, and while holding them: marks itself the holder of each (another holder is a
// violation), bumps a plain counter (TSan sees any lapse), adds its own fence to each Resv and
// checks a lock-free reader sees it. After unlocking it signals the fence.
// Invariants: mutual exclusion; every added fence visible to readers; the counters add up to the
// number of objects locked; no fence leaks (checked by main).
#include <algorithm>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "exec/exec.h"
#include "fence/fence_context.h"
#include "tools/stress/stress.h"

namespace stress {
namespace {

constexpr int kObjectsPerPool = 16;

class StressObject final : public exec::Object {
 public:
  explicit StressObject(ww::WwClass* cls) : resv_(cls) {}
  fence::Resv& resv() override { return resv_; }
  std::atomic<int> holder{0};
  int64_t locked_count = 0;  // written only while locked: a plain int on purpose

 private:
  fence::Resv resv_;
};

struct Pool {
  ww::WwClass* cls;
  std::vector<std::unique_ptr<StressObject>> objects;
};

struct ThreadStats {
  int64_t transactions = 0;
  int64_t objects_locked = 0;
  int64_t retries = 0;
};

// One transaction of thread `tid` (1-based) on `pool`.
void Transaction(Pool& pool, int tid, fence::FenceContext& timeline, std::mt19937_64& rng,
                 ThreadStats& stats) {
  std::vector<StressObject*> pick;
  const int n = 1 + static_cast<int>(Below(rng, 6));
  for (int i = 0; i < n; ++i) pick.push_back(pool.objects[Below(rng, kObjectsPerPool)].get());
  const bool ignore_dups = OneIn(rng, 2);
  const uint32_t flags = ignore_dups ? uint32_t{exec::Exec::kIgnoreDuplicates} : 0u;
  std::vector<StressObject*> locked;
  fence::FenceRef f = timeline.NewFence();
  const auto usage = static_cast<fence::ResvUsage>(Below(rng, 4));
  {
    exec::Exec exec(flags, {}, pool.cls);
    const absl::Status s = exec.UntilAllLocked([&](exec::Exec& e) -> absl::Status {
      locked.clear();
      for (StressObject* o : pick) {
        absl::Status st = e.PrepareObj(o, 1);
        if (exec::IsAlreadyHeld(st)) {
          Check(!ignore_dups, "exec: AlreadyHeld with kIgnoreDuplicates");
          Check(std::find(locked.begin(), locked.end(), o) != locked.end(),
                "exec: AlreadyHeld for an object this Exec never locked");
          continue;
        }
        if (!st.ok()) return st;
        if (std::find(locked.begin(), locked.end(), o) == locked.end()) locked.push_back(o);
      }
      return absl::OkStatus();
    });
    Check(s.ok(), absl::StrFormat("exec: UntilAllLocked failed: %s", s.ToString()));
    Check(exec.objects().size() == locked.size(), "exec: objects() differs from what was locked");
    for (StressObject* o : locked) {
      int expected = 0;
      Check(o->holder.compare_exchange_strong(expected, tid),
            absl::StrFormat("exec: mutual exclusion broken: thread %d locked an object thread %d "
                            "holds",
                            tid, expected));
      ++o->locked_count;
      o->resv().AddFence(f, usage);
      bool seen = false;
      o->resv().ForEachUnlocked(fence::ResvUsage::kBookkeep,
                                [&](const fence::FenceRef& x, fence::ResvUsage) {
                                  seen |= x == f;
                                });
      Check(seen, "exec: a fence added under the lock is not visible to a lock-free reader");
    }
    for (StressObject* o : locked) o->holder.store(0);
    stats.retries += exec.retries();
  }  // ~Exec unlocks
  Check(f->Signal(), "exec: our own fence was signalled by someone else");
  stats.transactions++;
  stats.objects_locked += static_cast<int64_t>(locked.size());
}

}  // namespace

void RunExec(const Options& options) {
  ww::WwClass wound_wait(ww::WwAlgorithm::kWoundWait, "stress_wound_wait");
  Pool pools[2] = {{&fence::ReservationWwClass(), {}}, {&wound_wait, {}}};
  for (Pool& p : pools) {
    for (int i = 0; i < kObjectsPerPool; ++i) {
      p.objects.push_back(std::make_unique<StressObject>(p.cls));
    }
  }
  std::vector<ThreadStats> stats(options.threads);
  std::vector<std::thread> threads;
  for (int t = 0; t < options.threads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng = options.Rng(t);
      fence::FenceContext timeline("stress_exec");
      while (Running()) {
        Transaction(pools[Below(rng, 2)], t + 1, timeline, rng, stats[t]);
        Progress::Add();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  int64_t locked = 0, counted = 0, retries = 0;
  for (const ThreadStats& s : stats) {
    locked += s.objects_locked;
    retries += s.retries;
  }
  for (Pool& p : pools) {
    for (auto& o : p.objects) {
      counted += o->locked_count;
      Check(!o->resv().lock().IsLocked(), "exec: an object is still locked at the end");
    }
  }
  Check(locked == counted, absl::StrFormat("exec: %d objects locked but %d counted under the lock",
                                           locked, counted));
  std::printf("udrm_stress: exec: %lld objects locked, %lld retries\n",
              static_cast<long long>(locked), static_cast<long long>(retries));
}

}  // namespace stress
