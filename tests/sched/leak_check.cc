// Linked into every sched/ test: after each test, the number of live MockJobs and of live
// fences must be back where it was before it (issue 4: "TearDown asserts live Job and Fence
// counts are back to zero"). A test that leaks fails the binary, naming the test.
#include <string>
#include <vector>

#include "fence/fence.h"
#include "gtest/gtest.h"
#include "tests/sched/mock_backend.h"

namespace sched::testing {
namespace {

std::vector<std::string>& Leaks() {
  static std::vector<std::string> leaks;
  return leaks;
}

class LeakListener : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo&) override {
    (void)fence::Fence::GetStub();  // created once, lives forever: not a leak
    fences_ = fence::Fence::LiveCount();
    jobs_ = MockJob::live.load();
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    const int64_t fences = fence::Fence::LiveCount();
    const int jobs = MockJob::live.load();
    if (fences != fences_ || jobs != jobs_) {
      Leaks().push_back(std::string(info.test_suite_name()) + "." + info.name() + ": fences " +
                        std::to_string(fences_) + " -> " + std::to_string(fences) + ", jobs " +
                        std::to_string(jobs_) + " -> " + std::to_string(jobs));
    }
  }
  int64_t fences_ = 0;
  int jobs_ = 0;
};

class LeakEnvironment : public ::testing::Environment {
  void TearDown() override {
    for (const std::string& leak : Leaks()) ADD_FAILURE() << "leaked: " << leak;
  }
};

const bool kRegistered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new LeakListener);
  ::testing::AddGlobalTestEnvironment(new LeakEnvironment);
  return true;
}();

}  // namespace
}  // namespace sched::testing
