// Test-only: a udrm::log::Sink that records every message ("logger message") and its level, for
// tests that check what a layer logs (tests/base/log_test, tests/fence/fence_log_test).
#ifndef UDRM_TESTS_BASE_CAPTURED_SINK_H_
#define UDRM_TESTS_BASE_CAPTURED_SINK_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "base/log.h"

namespace udrm::log::testing {

class CapturedSink {
 public:
  // The sink to install; it refers to this object, which must outlive its installation.
  Sink sink() {
    return [this](Level level, std::string_view logger, std::string_view message) {
      absl::MutexLock l(&mu_);
      lines_.push_back(std::string(logger) + " " + std::string(message));
      levels_.push_back(level);
    };
  }
  std::vector<std::string> lines() {
    absl::MutexLock l(&mu_);
    return lines_;
  }
  std::vector<Level> levels() {
    absl::MutexLock l(&mu_);
    return levels_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  std::vector<Level> levels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace udrm::log::testing

#endif  // UDRM_TESTS_BASE_CAPTURED_SINK_H_
