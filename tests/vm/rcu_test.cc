// vm::Rcu: the grace period protects a reader; and a deliberately premature free — no grace
// period — IS reported by the sanitizers (so the page-table stress tests can fail). The premature
// case needs a sanitizer to be observable and is skipped in plain builds.
#include "vm/rcu.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "base/sanitizers.h"
#include "gtest/gtest.h"

namespace vm {
namespace {

#if UDRM_SANITIZER
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// A reader inside a section reads an object; the writer unhooks it and frees it either after
// RcuSynchronize() (correct) or at once (premature). Handshakes are relaxed atomics, so nothing
// but the grace period orders the reader's accesses before the free.
void ReaderVersusFree(bool wait_for_grace_period) {
  std::atomic<int*> slot{new int(42)};
  std::atomic<int> phase{0};
  std::atomic<int> sum{0};
  std::thread reader([&] {
    RcuReaderThread registered;
    {
      RcuReadSection section;
      // volatile: both reads really happen (the compiler may not reuse the first).
      volatile int* p = slot.load(std::memory_order_acquire);
      sum.fetch_add(*p, std::memory_order_relaxed);
      phase.store(1, std::memory_order_relaxed);
      // Premature case: give the writer time to free before this second read. (Acquire keeps
      // the compiler from hoisting the read above the loop; the writer's store is relaxed, so
      // it still orders nothing for the sanitizers.)
      while (!wait_for_grace_period && phase.load(std::memory_order_acquire) != 2) {
        std::this_thread::yield();
      }
      sum.fetch_add(*p, std::memory_order_relaxed);
    }
  });
  while (phase.load(std::memory_order_relaxed) != 1) std::this_thread::yield();
  int* old = slot.exchange(nullptr, std::memory_order_acq_rel);
  if (wait_for_grace_period) RcuSynchronize();
  delete old;
  phase.store(2, std::memory_order_relaxed);
  reader.join();
}

// The grace period makes the free safe: no report (the test binary would die under a sanitizer).
TEST(Rcu, FreeAfterGracePeriodIsSafe) {
  for (int i = 0; i < 50; ++i) ReaderVersusFree(true);
}

// The reader's view of a premature free, made deterministic: inside its section a reader reads
// an object, a writer frees it without a grace period, the reader reads it again.
[[maybe_unused]] void PrematureFreeSameThread() {
  RcuReaderThread registered;
  RcuReadSection section;
  std::atomic<int*> slot{new int(7)};
  volatile int* p = slot.load(std::memory_order_acquire);
  int first = *p;
  delete slot.exchange(nullptr);  // the bug: no RcuSynchronize() before the free
  int second = *p;
  std::printf("%d %d\n", first, second);
}

// A free without a grace period is caught: TSan reports the reader racing with the free (the
// threads share nothing else), ASan the reader's use after free; either aborts the process.
TEST(RcuDeathTest, PrematureFreeIsReported) {
  if (!kSanitized) GTEST_SKIP() << "needs ASan or TSan to observe a use-after-free";
#if UDRM_SANITIZER == 'T'
  EXPECT_DEATH(ReaderVersusFree(false), "data race|heap-use-after-free");
#else
  EXPECT_DEATH(PrematureFreeSameThread(), "heap-use-after-free");
#endif
}

// Sections nest: only the outermost one's end lets a grace period pass.
TEST(Rcu, NestedSectionsHoldTheGracePeriod) {
  std::atomic<int> phase{0};
  std::atomic<bool> synchronized{false};
  std::thread reader([&] {
    RcuReaderThread registered;
    RcuReadSection outer;
    {
      RcuReadSection inner;
      phase.store(1, std::memory_order_release);
    }
    while (phase.load(std::memory_order_acquire) != 2) std::this_thread::yield();
    EXPECT_FALSE(synchronized.load());  // the outer section is still open
  });
  while (phase.load(std::memory_order_acquire) != 1) std::this_thread::yield();
  std::thread writer([&] {
    RcuSynchronize();
    synchronized.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  phase.store(2, std::memory_order_release);
  reader.join();
  writer.join();
  EXPECT_TRUE(synchronized.load());
}

// Threads register and unregister (reusing slots) while grace periods run; a grace period never
// waits for a thread outside its sections, and the slots are reused, not leaked (ASan).
TEST(Rcu, RegistrationChurnWithGracePeriods) {
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop.load(std::memory_order_relaxed)) RcuSynchronize();
  });
  for (int round = 0; round < 50; ++round) {
    std::thread threads[4];
    for (auto& t : threads) {
      t = std::thread([] {
        RcuReaderThread registered;
        EXPECT_TRUE(RcuReaderThread::IsRegistered());
        for (int i = 0; i < 100; ++i) RcuReadSection section;
      });
    }
    for (auto& t : threads) t.join();
  }
  EXPECT_FALSE(RcuReaderThread::IsRegistered());
  stop = true;
  writer.join();
}

}  // namespace
}  // namespace vm
