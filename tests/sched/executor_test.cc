// sched/: the executors a scheduler's work item runs on — every posted item runs exactly once,
// a one-thread pool runs them in order, a TbbExecutor never runs more at once than its bound,
// and destroying an executor waits for what was posted.
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sched/executor.h"
#include "sched/tbb_executor.h"

namespace sched {
namespace {

// A one-thread pool is ordered: items run in post order, never on the posting thread.
TEST(ThreadPoolExecutor, OneThreadRunsInPostOrder) {
  absl::Mutex mu;
  std::vector<int> order;
  const std::thread::id me = std::this_thread::get_id();
  std::atomic<bool> ran_here{false};
  {
    ThreadPoolExecutor ex(1);
    for (int i = 0; i < 1000; ++i) {
      ex.Post([&, i] {
        if (std::this_thread::get_id() == me) ran_here = true;
        absl::MutexLock l(&mu);
        order.push_back(i);
      });
    }
  }  // the destructor drains the queue
  ASSERT_EQ(order.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(order[i], i);
  EXPECT_FALSE(ran_here.load());
}

// Posts from several threads to each kind: every item runs exactly once; the concurrency never
// exceeds the executor's thread count.
void RunsEverythingOnce(Executor& ex, int bound) {
  constexpr int kThreads = 4, kPerThread = 500;
  std::vector<std::atomic<int>> runs(kThreads * kPerThread);
  std::atomic<int> running{0}, peak{0}, done{0};
  absl::Notification all_done;
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t) {
    posters.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        ex.Post([&, k = t * kPerThread + i] {
          const int now = running.fetch_add(1) + 1;
          int p = peak.load();
          while (now > p && !peak.compare_exchange_weak(p, now)) {
          }
          runs[k].fetch_add(1);
          running.fetch_sub(1);
          if (done.fetch_add(1) + 1 == kThreads * kPerThread) all_done.Notify();
        });
      }
    });
  }
  for (auto& t : posters) t.join();
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  for (auto& r : runs) EXPECT_EQ(r.load(), 1);
  EXPECT_LE(peak.load(), bound);
  EXPECT_GE(peak.load(), 1);
}

TEST(ThreadPoolExecutor, FourThreadsRunEverythingOnce) {
  ThreadPoolExecutor ex(4);
  RunsEverythingOnce(ex, 4);
}

TEST(TbbExecutor, RunsEverythingOnceWithinItsConcurrency) {
  TbbExecutor ex(2);
  RunsEverythingOnce(ex, 2);
}

// The destructor waits for posted work, including work still queued behind a slow item.
TEST(TbbExecutor, DestructorWaitsForPostedWork) {
  std::atomic<int> ran{0};
  {
    TbbExecutor ex(1);
    ex.Post([&] {
      absl::SleepFor(absl::Milliseconds(50));
      ran.fetch_add(1);
    });
    for (int i = 0; i < 10; ++i) ex.Post([&] { ran.fetch_add(1); });
  }
  EXPECT_EQ(ran.load(), 11);
}

}  // namespace
}  // namespace sched
