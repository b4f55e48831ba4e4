// Runs examples/vm_bind_walkthrough and checks that every state it prints is the one the seed
// thread's scenario must produce, in the right phase: the VA tree changes at vm_bind, the page
// table only at run_job, and the op list is the one msm builds (UNMAP of A's hole, MAP of B,
// UNMAP of the hole the second op cuts into B's fresh mapping).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

struct Output {
  std::string out;
  int status = -1;
};

Output RunWalkthrough() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const std::string bin = std::string(srcdir ? srcdir : ".") + "/udrm/examples/vm_bind_walkthrough";
  Output r;
  FILE* p = popen(bin.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  r.status = pclose(p);
  return r;
}

// The text between the line containing `from` and the next line containing `to` (or the end).
std::string Section(const std::string& out, const std::string& from, const std::string& to) {
  const size_t a = out.find(from);
  if (a == std::string::npos) return "";
  const size_t b = to.empty() ? std::string::npos : out.find(to, a + from.size());
  return out.substr(a, b == std::string::npos ? std::string::npos : b - a);
}

class WalkthroughTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { run_ = new Output(RunWalkthrough()); }
  static void TearDownTestSuite() { delete run_; }
  static const std::string& out() { return run_->out; }
  static Output* run_;
};
Output* WalkthroughTest::run_ = nullptr;

// The example runs to the end and exits 0.
TEST_F(WalkthroughTest, ExitsCleanly) {
  EXPECT_TRUE(WIFEXITED(run_->status) && WEXITSTATUS(run_->status) == 0) << out();
  EXPECT_NE(out().find("cleanup (free_job)"), std::string::npos) << out();
}

// Before the bind: only BO A, in the tree and in the page table.
TEST_F(WalkthroughTest, StateBeforeTheBind) {
  const std::string tree = Section(out(), "VA tree (drm_gpuvm) before the bind", "page table");
  EXPECT_NE(tree.find("va [0x100000, 0x110000) -> BO A offset 0x0"), std::string::npos) << out();
  const std::string pt = Section(out(), "page table before the bind", "==");
  EXPECT_NE(pt.find("pages [0x100000, 0x110000): BO A offset 0x0"), std::string::npos) << out();
  EXPECT_NE(pt.find("pages [0x110000, 0x11a000): fault"), std::string::npos) << out();
}

// The op list: one list for both ops, the second op seeing the first one's mapping.
TEST_F(WalkthroughTest, OneOpListForTheWholeBind) {
  const std::string ops = Section(out(), "op list of the job", "drm_sched_entity_push_job");
  EXPECT_NE(ops.find("[0] UNMAP [0x108000, 0x110000) (from op 0; holds a reference on BO A"),
            std::string::npos)
      << out();
  EXPECT_NE(ops.find("[1] MAP   [0x108000, 0x118000) (from op 0)"), std::string::npos) << out();
  EXPECT_NE(ops.find("[2] UNMAP [0x110000, 0x114000) (from op 1; holds a reference on BO B"),
            std::string::npos)
      << out();
  EXPECT_EQ(ops.find("[3]"), std::string::npos) << out();
  // Every lock was taken before the tree changed.
  EXPECT_NE(out().find("[VM resv object] [BO B] [BO A]"), std::string::npos) << out();
}

// After vm_bind returns the tree is final while the page table still shows the old state.
TEST_F(WalkthroughTest, TreeChangesAtBindPageTableAtRunJob) {
  const std::string tree =
      Section(out(), "VA tree (drm_gpuvm) after vm_bind returned", "page table");
  EXPECT_NE(tree.find("va [0x100000, 0x108000) -> BO A offset 0x0"), std::string::npos) << out();
  EXPECT_NE(tree.find("va [0x108000, 0x110000) -> BO B offset 0x0"), std::string::npos) << out();
  EXPECT_NE(tree.find("va [0x114000, 0x118000) -> BO B offset 0xc000"), std::string::npos) << out();
  const std::string before = Section(out(), "before run_job (unchanged)", "==");
  EXPECT_NE(before.find("pages [0x100000, 0x110000): BO A offset 0x0"), std::string::npos) << out();
  EXPECT_NE(before.find("pages [0x110000, 0x11a000): fault"), std::string::npos) << out();
  const std::string after = Section(out(), "page table after run_job", "cleanup");
  EXPECT_NE(after.find("pages [0x100000, 0x108000): BO A offset 0x0"), std::string::npos) << out();
  EXPECT_NE(after.find("pages [0x108000, 0x110000): BO B offset 0x0"), std::string::npos) << out();
  EXPECT_NE(after.find("pages [0x110000, 0x114000): fault"), std::string::npos) << out();
  EXPECT_NE(after.find("pages [0x114000, 0x118000): BO B offset 0xc000"), std::string::npos)
      << out();
  EXPECT_NE(after.find("pages [0x118000, 0x11a000): fault"), std::string::npos) << out();
}

}  // namespace
