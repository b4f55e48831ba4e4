// Stress for exec/ (run under TSan and ASan in CI): threads lock random subsets of objects in
// random order, through exec::Exec and directly through ww::WwMutex (ports of test-ww_mutex's
// stress in-order, stress reorder and stress one), with and without slow-path injection, for both
// algorithms. A watchdog fails the test instead of letting a deadlock hang it.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "exec/exec.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"

namespace exec {
namespace {

constexpr int kThreads = 3;
constexpr int kIterationsPerThread = 10000;
constexpr int kObjects = 16;

class Watchdog {
 public:
  explicit Watchdog(absl::Duration limit)
      : thread_([this, limit] {
          if (!done_.WaitForNotificationWithTimeout(limit)) {
            std::fprintf(stderr, "watchdog: no progress within the limit: deadlock?\n");
            std::abort();
          }
        }) {}
  ~Watchdog() {
    done_.Notify();
    thread_.join();
  }

 private:
  absl::Notification done_;
  std::thread thread_;
};

class StressObject final : public Object {
 public:
  explicit StressObject(WwClass* cls) : resv_(cls) {}
  fence::Resv& resv() override { return resv_; }
  // Written only while locked: a plain int, so TSan reports any lapse in mutual exclusion.
  int owner_token = 0;
  int64_t updates = 0;

 private:
  fence::Resv resv_;
};

struct Params {
  ww::WwAlgorithm algorithm;
  bool inject;
};

class ExecStress : public ::testing::TestWithParam<Params> {
 protected:
  void SetUp() override { ww::SetSlowpathInjection(GetParam().inject); }
  void TearDown() override { ww::SetSlowpathInjection(false); }
};

std::string Name(const ::testing::TestParamInfo<Params>& info) {
  return std::string(info.param.algorithm == ww::WwAlgorithm::kWaitDie ? "WaitDie" : "WoundWait") +
         (info.param.inject ? "_Injected" : "");
}

INSTANTIATE_TEST_SUITE_P(All, ExecStress,
                         ::testing::Values(Params{ww::WwAlgorithm::kWaitDie, false},
                                           Params{ww::WwAlgorithm::kWaitDie, true},
                                           Params{ww::WwAlgorithm::kWoundWait, false},
                                           Params{ww::WwAlgorithm::kWoundWait, true}),
                         Name);

// Random subsets in random order through Exec: every completed body holds all its objects, each
// with a fence slot reserved; exclusion holds (checked by owner tokens and by TSan).
TEST_P(ExecStress, RandomSubsetsThroughExec) {
  WwClass cls(GetParam().algorithm);
  std::vector<std::unique_ptr<StressObject>> objs;
  for (int i = 0; i < kObjects; ++i) objs.push_back(std::make_unique<StressObject>(&cls));
  std::atomic<int64_t> retries{0}, commits{0};
  Watchdog watchdog(absl::Minutes(4));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      fence::FenceContext timeline;
      const int token = t + 1;
      for (int it = 0; it < kIterationsPerThread; ++it) {
        std::vector<Object*> pick;
        const int k = 1 + rng() % 4;
        for (int j = 0; j < k; ++j) pick.push_back(objs[rng() % kObjects].get());  // may repeat
        Exec exec(Exec::kIgnoreDuplicates, {}, &cls);
        absl::Status st = exec.UntilAllLocked([&](Exec& e) { return e.PrepareArray(pick, 1); });
        ASSERT_TRUE(st.ok()) << st;
        fence::FenceRef done = timeline.NewFence();
        for (Object* o : pick) {
          auto* so = static_cast<StressObject*>(o);
          ASSERT_TRUE(so->resv().lock().IsHeldBy(&exec.ticket()));
          ASSERT_GE(so->resv().reserved(), 1u);
          ASSERT_TRUE(so->owner_token == 0 || so->owner_token == token);
          so->owner_token = token;
          so->updates++;
        }
        for (Object* o : exec.objects()) {
          o->resv().AddFence(done, fence::ResvUsage::kWrite);
          static_cast<StressObject*>(o)->owner_token = 0;
        }
        done->Signal();
        retries += exec.retries();
        commits++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(commits.load(), kThreads * kIterationsPerThread);
  int64_t updates = 0;
  for (auto& o : objs) {
    EXPECT_FALSE(o->resv().lock().IsLocked());
    updates += o->updates;
  }
  EXPECT_GE(updates, kThreads * kIterationsPerThread);
  if (GetParam().inject) {
    EXPECT_GT(retries.load(), 0) << "injection never exercised back-off";
  }
}

// test-ww_mutex stress_inorder: lock a random subset in a fixed order with back-off + LockSlow.
// test-ww_mutex stress_reorder: lock in a random order; on back-off, move the contended mutex to
// the front and retry. Both with direct ww::WwMutex calls, no Exec.
TEST_P(ExecStress, WwMutexInorderAndReorder) {
  WwClass cls(GetParam().algorithm);
  std::vector<std::unique_ptr<ww::WwMutex>> locks;
  for (int i = 0; i < kObjects; ++i) locks.push_back(std::make_unique<ww::WwMutex>(&cls));
  std::vector<int> counters(kObjects, 0);
  Watchdog watchdog(absl::Minutes(4));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(77 + t);
      const bool reorder = t % 2 == 1;
      for (int it = 0; it < kIterationsPerThread / 2; ++it) {
        std::vector<int> order(kObjects);
        for (int i = 0; i < kObjects; ++i) order[i] = i;
        std::shuffle(order.begin(), order.end(), rng);
        order.resize(1 + rng() % 5);
        if (!reorder) std::sort(order.begin(), order.end());
        WwAcquireContext ctx(&cls);
        int contended = -1;
        for (;;) {
          size_t held = 0;
          absl::Status st;
          if (contended >= 0) {
            locks[contended]->LockSlow(&ctx);
            if (reorder) {  // move the contended one to the front
              std::iter_swap(order.begin(), std::find(order.begin(), order.end(), contended));
            }
          }
          for (; held < order.size(); ++held) {
            if (order[held] == contended) continue;
            st = locks[order[held]]->Lock(&ctx);
            if (!st.ok()) break;
          }
          if (st.ok()) break;
          ASSERT_TRUE(IsBackoff(st)) << st;
          for (size_t i = 0; i < held; ++i) {
            if (order[i] != contended) locks[order[i]]->Unlock();
          }
          if (contended >= 0) locks[contended]->Unlock();
          contended = order[held];
        }
        for (int i : order) counters[i]++;
        for (int i : order) locks[i]->Unlock();
      }
    });
  }
  for (auto& th : threads) th.join();
  int64_t total = 0;
  for (int c : counters) total += c;
  EXPECT_GE(total, kThreads * kIterationsPerThread / 2);
  for (auto& l : locks) EXPECT_FALSE(l->IsLocked());
}

// test-ww_mutex stress_one: lock one random mutex without a context, many times.
TEST_P(ExecStress, WwMutexOne) {
  WwClass cls(GetParam().algorithm);
  std::vector<std::unique_ptr<ww::WwMutex>> locks;
  for (int i = 0; i < kObjects; ++i) locks.push_back(std::make_unique<ww::WwMutex>(&cls));
  std::vector<int> counters(kObjects, 0);
  Watchdog watchdog(absl::Minutes(2));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(5 + t);
      for (int it = 0; it < kIterationsPerThread; ++it) {
        int i = rng() % kObjects;
        ASSERT_TRUE(locks[i]->Lock(nullptr).ok());
        counters[i]++;
        locks[i]->Unlock();
      }
    });
  }
  for (auto& th : threads) th.join();
  int64_t total = 0;
  for (int c : counters) total += c;
  EXPECT_EQ(total, kThreads * kIterationsPerThread);
}

}  // namespace
}  // namespace exec
