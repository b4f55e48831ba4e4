// examples/gpu_emulator, run as a user runs it (a child process, with short settings): its exit
// status, its summary, and that trace.json is valid JSON with a track per scheduler and per
// context and timeline.svg is well-formed XML with those lanes — in the default mode, with a
// hung job (--hang) and with a faulting bind (--fault). Under TSan/ASan the child is built with
// the same sanitizer, so these runs check the emulator and the library under it too.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/sched/json_check.h"

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

struct Outcome {
  int exit_code = -1;
  std::string output, json, svg;
};

Outcome RunEmulator(const std::string& name, const std::string& flags) {
  const std::string dir = Env("TEST_TMPDIR") + "/" + name;
  const std::string binary = Env("TEST_SRCDIR") + "/" + Env("TEST_WORKSPACE") + "/examples/gpu_emulator";
  const std::string cmd = binary +
                          " --contexts=3 --duration=200ms --elements=4096 --gpu_threads=2"
                          " --out_dir=" + dir + " " + flags + " > " + dir + ".out 2>&1";
  Outcome r;
  const int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = ReadFile(dir + ".out");
  r.json = ReadFile(dir + "/trace.json");
  r.svg = ReadFile(dir + "/timeline.svg");
  return r;
}

// A small XML well-formedness check (elements nest and match, attributes are quoted, entities
// are the predefined ones); collects the text of <text class="lane"> elements.
class XmlCheck {
 public:
  explicit XmlCheck(const std::string& s) : s_(s) {}
  bool Parse() {
    if (s_.compare(0, 5, "<?xml") == 0) {
      i_ = s_.find("?>");
      if (i_ == std::string::npos) return false;
      i_ += 2;
    }
    std::vector<std::string> open;
    bool root_done = false;
    while (i_ < s_.size()) {
      if (s_[i_] != '<') {
        const size_t end = s_.find('<', i_);
        const std::string text = s_.substr(i_, end - i_);
        if (!Entities(text) || (open.empty() && text.find_first_not_of(" \n\r\t") != std::string::npos)) {
          return false;
        }
        if (in_lane_) lanes_.push_back(text);
        i_ = end == std::string::npos ? s_.size() : end;
        continue;
      }
      const size_t end = s_.find('>', i_);
      if (end == std::string::npos) return false;
      std::string tag = s_.substr(i_ + 1, end - i_ - 1);
      i_ = end + 1;
      if (tag.starts_with("/")) {
        if (open.empty() || open.back() != tag.substr(1)) return false;
        open.pop_back();
        in_lane_ = false;
        if (open.empty()) root_done = true;
        continue;
      }
      if (root_done) return false;  // one root element
      const bool empty = tag.ends_with("/");
      if (empty) tag.pop_back();
      const std::string name = tag.substr(0, tag.find_first_of(" \n\t"));
      if (name.empty() || !Attributes(tag.substr(name.size()))) return false;
      in_lane_ = name == "text" && tag.find("class=\"lane\"") != std::string::npos;
      if (!empty) open.push_back(name);
      if (empty && open.empty()) root_done = true;
    }
    return open.empty() && root_done;
  }
  const std::vector<std::string>& lanes() const { return lanes_; }

 private:
  static bool Entities(const std::string& t) {
    for (size_t k = t.find('&'); k != std::string::npos; k = t.find('&', k + 1)) {
      bool ok = false;
      for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"}) ok |= t.compare(k, std::strlen(e), e) == 0;
      if (!ok) return false;
    }
    return t.find('<') == std::string::npos;
  }
  // ` name="value" name="value"`.
  static bool Attributes(const std::string& a) {
    size_t k = 0;
    for (;;) {
      k = a.find_first_not_of(" \n\t", k);
      if (k == std::string::npos) return true;
      const size_t eq = a.find('=', k);
      if (eq == std::string::npos || eq == k || a[eq + 1] != '"') return false;
      const size_t close = a.find('"', eq + 2);
      if (close == std::string::npos || !Entities(a.substr(eq + 2, close - eq - 2))) return false;
      k = close + 1;
    }
  }
  const std::string& s_;
  size_t i_ = 0;
  bool in_lane_ = false;
  std::vector<std::string> lanes_;
};

void ExpectOutputs(const Outcome& r) {
  EXPECT_TRUE(sched::testing::JsonCheck::IsValid(r.json)) << r.json.substr(0, 500);
  for (const char* track : {"compute", "copy", "bind", "ctx0", "ctx1", "ctx2"}) {
    EXPECT_NE(r.json.find("\"args\":{\"name\":\"" + std::string(track) + "\"}"), std::string::npos)
        << "no track " << track;
  }
  EXPECT_NE(r.json.find("\"ph\":\"X\""), std::string::npos);  // spans
  EXPECT_NE(r.json.find("\"ph\":\"i\""), std::string::npos);  // fence signals
  XmlCheck xml(r.svg);
  ASSERT_TRUE(xml.Parse()) << r.svg.substr(0, 300);
  // Two panels (the whole run, a zoom), each with every lane.
  const std::multiset<std::string> lanes(xml.lanes().begin(), xml.lanes().end());
  for (const char* lane : {"compute", "copy", "bind", "ctx0", "ctx1", "ctx2"}) {
    EXPECT_EQ(lanes.count(lane), 2u) << lane;
  }
  EXPECT_NE(r.svg.find("<rect"), std::string::npos);
  EXPECT_NE(r.output.find("trace.json"), std::string::npos);
  EXPECT_NE(r.output.find("timeline.svg"), std::string::npos);
}

// Every context's checksums match the CPU reference; the summary and both files are written.
TEST(GpuEmulatorTest, DefaultRunVerifiesAndWritesTraceAndTimeline) {
  const Outcome r = RunEmulator("default", "");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* row : {"ctx0", "ctx1", "ctx2"}) {
    const size_t at = r.output.find(std::string("\n") + row + " ");
    ASSERT_NE(at, std::string::npos) << r.output;
    EXPECT_NE(r.output.substr(at, r.output.find('\n', at + 1) - at).find(" ok"), std::string::npos)
        << r.output;
  }
  EXPECT_NE(r.output.find("jobs/s"), std::string::npos);
  EXPECT_NE(r.output.find("timeouts 0, recoveries 0"), std::string::npos) << r.output;
  ExpectOutputs(r);
}

// A job that never finishes: the timeout fires, the engine recovers once, ctx1 is guilty and the
// other contexts still verify.
TEST(GpuEmulatorTest, HangIsRecoveredAndTheGuiltyContextReported) {
  const Outcome r = RunEmulator("hang", "--hang=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GUILTY"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("recoveries 1"), std::string::npos) << r.output;
  EXPECT_NE(r.json.find("timeout: ctx1 saxpy #1"), std::string::npos);
  EXPECT_NE(r.svg.find("reset (ctx1 saxpy #1 guilty)"), std::string::npos);
  ExpectOutputs(r);
}

// A page-table fault in a bind makes ctx2's VM unusable; the others go on.
TEST(GpuEmulatorTest, BindFaultMakesOnlyThatVmUnusable) {
  const Outcome r = RunEmulator("fault", "--fault=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ctx2 "), std::string::npos);
  EXPECT_NE(r.output.find("VM UNUSABLE"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("simulated page-table fault"), std::string::npos) << r.output;
  ExpectOutputs(r);
}

// Bad flags: exit status 2, nothing run.
TEST(GpuEmulatorTest, BadFlagsExitTwo) {
  EXPECT_EQ(RunEmulator("bad", "--contexts=0").exit_code, 2);
  EXPECT_EQ(RunEmulator("bad_hang", "--hang=7").exit_code, 2);
  EXPECT_EQ(RunEmulator("bad_name", "--no_such_flag=1").exit_code, 2);
}

}  // namespace
