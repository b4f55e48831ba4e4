#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "spdlog/spdlog.h"

TEST(Smoke, MutexCounter) {
  absl::Mutex mu;
  int n = 0;
  auto work = [&] { for (int i = 0; i < 1000; ++i) { absl::MutexLock l(&mu); ++n; } };
  std::thread a(work), b(work);
  a.join(); b.join();
  EXPECT_EQ(n, 2000);
  EXPECT_TRUE(absl::OkStatus().ok());
}
