// udrm_stress: a stress and soak tool for the whole stack. See tools/stress/stress.h and the
// usage text below.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "fence/fence.h"
#include "tools/stress/stress.h"

namespace stress {
namespace {

constexpr char kUsage[] =
    "usage: udrm_stress [--scenario=sched|exec|fence|vmbind|all] [--duration=60s] [--seed=N]\n"
    "                   [--threads=T] [--drop_armed=0|1]\n"
    "  sched   submit/kill/timeout races: entities submitting jobs with dependencies, entities\n"
    "          killed mid-stream, hanging jobs the TDR recovers (stop, karma, reset, start)\n"
    "  exec    contended exec::Exec locking of random object sets, wait-die and wound-wait\n"
    "  fence   chains, merges, arrays and unwrap under concurrent signalling\n"
    "  vmbind  VM_BIND binds vs readers translating vs BO release; page table == VA tree\n"
    "  all     each of the above, one after the other (duration split evenly)\n"
    "  --drop_armed=0: sched never drops an armed job unpushed (default 1; see\n"
    "          tests/sched/armed_job_order_test.cc for the defect it found)\n"
    "The seed decides the workload; a violation prints it with the failing invariant and exits 1.\n";

[[noreturn]] void Usage(const std::string& error) {
  if (!error.empty()) std::fprintf(stderr, "udrm_stress: %s\n", error.c_str());
  std::fputs(kUsage, stderr);
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  o.seed = static_cast<uint64_t>(absl::GetCurrentTimeNanos()) % 1000000007;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key == "--help" || key == "-h") Usage("");
    if (key == "--scenario") {
      o.scenario = value;
    } else if (key == "--duration") {
      if (!absl::ParseDuration(value, &o.duration) || o.duration <= absl::ZeroDuration()) {
        Usage(absl::StrFormat("bad --duration '%s' (e.g. 60s, 2m)", value));
      }
    } else if (key == "--seed") {
      if (!absl::SimpleAtoi(value, &o.seed)) Usage(absl::StrFormat("bad --seed '%s'", value));
    } else if (key == "--threads") {
      if (!absl::SimpleAtoi(value, &o.threads) || o.threads < 2 || o.threads > 64) {
        Usage(absl::StrFormat("bad --threads '%s' (2..64)", value));
      }
    } else if (key == "--drop_armed") {
      if (value != "0" && value != "1") Usage("bad --drop_armed (0 or 1)");
      o.drop_armed = value == "1";
    } else {
      Usage(absl::StrFormat("unknown argument '%s'", arg));
    }
  }
  return o;
}

struct Scenario {
  const char* name;
  void (*run)(const Options&);
};
constexpr Scenario kScenarios[] = {
    {"sched", RunSched}, {"exec", RunExec}, {"fence", RunFence}, {"vmbind", RunVmBind}};

void RunOne(const Scenario& s, Options o) {
  o.scenario = s.name;
  SetCurrentOptions(o);
  const int64_t fences_before = fence::Fence::LiveCount();
  const absl::Time start = absl::Now();
  SetDeadline(start + o.duration);
  Progress::Start(s.name, start + o.duration, absl::Seconds(60));
  s.run(o);
  Progress::Stop();
  const int64_t fences_after = fence::Fence::LiveCount();
  // -1 in optimised builds (not counted there).
  Check(fences_before < 0 || fences_after == fences_before,
        absl::StrFormat("leak: %d fences alive at the end, %d before the scenario", fences_after,
                        fences_before));
  std::printf("udrm_stress: %s: ok, %lld operations in %s\n", s.name,
              static_cast<long long>(Progress::ops()),
              absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))).c_str());
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  Options o = Parse(argc, argv);
  std::printf("udrm_stress: scenario %s, seed %llu, %d threads, %s\n", o.scenario.c_str(),
              static_cast<unsigned long long>(o.seed), o.threads,
              absl::FormatDuration(o.duration).c_str());
  std::fflush(stdout);
  std::vector<const Scenario*> run;
  for (const Scenario& s : kScenarios) {
    if (o.scenario == "all" || o.scenario == s.name) run.push_back(&s);
  }
  if (run.empty()) Usage(absl::StrFormat("unknown scenario '%s'", o.scenario));
  Options each = o;
  each.duration = std::max(absl::Seconds(1), o.duration / static_cast<int64_t>(run.size()));
  for (const Scenario* s : run) RunOne(*s, each);
  std::printf("udrm_stress: all invariants held (seed %llu)\n",
              static_cast<unsigned long long>(o.seed));
  return 0;
}

}  // namespace
}  // namespace stress

int main(int argc, char** argv) { return stress::Main(argc, argv); }
