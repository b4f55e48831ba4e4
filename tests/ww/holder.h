// ww::testing::Holder: a thread that holds one WwMutex (with a context of its own, made when the
// Holder is, or with none) until Release() or 10 s, for tests that need a holder on another
// thread. The context is made on the holder's thread, before the constructor returns: a context
// the test makes afterwards is younger.
#ifndef UDRM_TESTS_WW_HOLDER_H_
#define UDRM_TESTS_WW_HOLDER_H_

#include <optional>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "ww/ww_mutex.h"

namespace ww::testing {

class Holder {
 public:
  Holder(WwClass* cls, WwMutex* m, bool with_context) {
    thread_ = std::thread([this, cls, m, with_context] {
      std::optional<WwAcquireContext> ctx;
      if (with_context) ctx.emplace(cls, /*inject=*/false);
      EXPECT_TRUE(m->Lock(ctx.has_value() ? &*ctx : nullptr).ok());
      holding_.Notify();
      release_.WaitForNotificationWithTimeout(absl::Seconds(10));
      m->Unlock();
    });
    holding_.WaitForNotification();
  }
  Holder(const Holder&) = delete;
  Holder& operator=(const Holder&) = delete;
  ~Holder() { Release(); }

  // Unlocks the mutex (on the holder's thread) and joins it. Idempotent.
  void Release() {
    if (!release_.HasBeenNotified()) release_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  absl::Notification holding_, release_;
  std::thread thread_;
};

}  // namespace ww::testing

#endif  // UDRM_TESTS_WW_HOLDER_H_
