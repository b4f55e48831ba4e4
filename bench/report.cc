#include "bench/report.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"

namespace udrm::bench {
namespace {

// Console output as usual, plus a record of each benchmark's real time per iteration (ns). With
// --benchmark_repetitions=N every repetition is recorded and the median is used, which keeps
// a noisy 2-core machine's outliers out of the ratios.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred || run.run_type != Run::RT_Iteration) continue;
      const double ns = run.GetAdjustedRealTime() *
                        (1e9 / benchmark::GetTimeUnitMultiplier(run.time_unit));
      samples_[run.benchmark_name()].push_back(ns);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> times() const {
    std::map<std::string, double> median;
    for (auto [name, v] : samples_) {
      std::sort(v.begin(), v.end());
      median[name] = v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    }
    return median;
  }

 private:
  std::map<std::string, std::vector<double>> samples_;
};

}  // namespace

int RunAndReport(int argc, char** argv, const std::vector<Comparison>& comparisons,
                 const std::vector<Value>& values) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  const std::map<std::string, double> t = reporter.times();
  std::printf("\n");
  for (const Comparison& c : comparisons) {
    auto u = t.find(c.udrm);
    auto p = t.find(c.peer);
    if (u == t.end() || p == t.end() || u->second <= 0) continue;
    std::printf("RATIO %s vs %s: %.3f\n", c.metric.c_str(), c.peer_name.c_str(),
                p->second / u->second);
  }
  for (const Value& v : values) {
    auto it = t.find(v.bench);
    if (it == t.end()) continue;
    if (v.per_iteration > 0) {
      std::printf("VALUE %s %.4g %s\n", v.metric.c_str(), v.per_iteration * 1e9 / it->second,
                  v.unit.c_str());
    } else {
      std::printf("VALUE %s %.1f %s\n", v.metric.c_str(), it->second * v.scale, v.unit.c_str());
    }
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace udrm::bench
