// udrm benchmark reporting: runs Google Benchmark, then prints comparison lines.
//
// Every udrm benchmark binary compares udrm with a peer doing the same work in the same run, and
// ends with machine-readable lines:
//   RATIO <metric> vs <peer>: <x>     x > 1 means udrm is better by that factor
//   VALUE <metric> <number> <unit>    an absolute figure
// A Comparison names the two benchmarks (by their full Google Benchmark names) and whether a
// larger or a smaller per-iteration time is better (time: smaller; rates are given as counters).
#ifndef UDRM_BENCH_REPORT_H_
#define UDRM_BENCH_REPORT_H_

#include <string>
#include <vector>

namespace udrm::bench {

struct Comparison {
  std::string metric;     // e.g. "signal_cb8"
  std::string udrm;       // benchmark name of the udrm side
  std::string peer_name;  // e.g. "promise"
  std::string peer;       // benchmark name of the peer side
};

struct Value {
  std::string metric;  // e.g. "wait_wakeup"
  std::string bench;   // benchmark whose per-iteration real time (ns) is reported
  double scale = 1.0;  // multiplies the time (e.g. 0.5 for a round trip that is two wake-ups)
  std::string unit = "ns";
  // If > 0, a rate is printed instead: per_iteration items / time (items per second).
  double per_iteration = 0;
};

// Runs the benchmarks selected on the command line, prints the usual table, then the RATIO and
// VALUE lines for every comparison whose two sides both ran. Returns the process exit code.
int RunAndReport(int argc, char** argv, const std::vector<Comparison>& comparisons,
                 const std::vector<Value>& values);

}  // namespace udrm::bench

#endif  // UDRM_BENCH_REPORT_H_
