// udrm_stress — the harness every scenario shares: options, the seeded per-thread random
// generators that decide the workload, the violation report, progress reporting and the leak
// check.
//
// Determinism: a scenario's workload (what each thread submits, when it waits, which objects and
// dependencies it picks) comes only from the generators made by Options::Rng(stream), each
// seeded from --seed and a fixed stream number; with the same seed and --threads a run repeats
// the same workload (the interleaving, which the OS decides, differs).
//
// Violations: Fail() prints the scenario, the seed, the failing invariant and the command that
// reruns the workload, then ends the process with exit code 1 at once (the state that broke an
// invariant may no longer tear down cleanly).
//
// Thread-safety: Options is immutable once parsed; Fail, Progress::Add and the counters may be
// used from any thread.
#ifndef UDRM_TOOLS_STRESS_STRESS_H_
#define UDRM_TOOLS_STRESS_STRESS_H_

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "fence/fence.h"

namespace stress {

struct Options {
  std::string scenario = "all";
  absl::Duration duration = absl::Seconds(10);
  uint64_t seed = 0;
  int threads = 4;
  // sched: sometimes arm a job and drop it without Push (its fences then signal cancelled, in
  // entity order: //tests/sched:armed_job_order_test). --drop_armed=0 leaves that path out.
  bool drop_armed = true;

  // A generator for one thread (or role) of the current scenario: seeded from the seed, the
  // scenario's name and `stream` (SplitMix64), so two scenarios never share a stream.
  std::mt19937_64 Rng(uint64_t stream) const;
};

// Prints the violation (scenario, seed, invariant, rerun command) and exits with status 1.
[[noreturn]] void Fail(std::string_view invariant);

// Fails with `invariant` unless `ok`.
inline void Check(bool ok, std::string_view invariant) {
  if (!ok) Fail(invariant);
}

// Progress of the running scenario: operations done, shown as a bar on a terminal and as a plain
// line every few seconds otherwise. A watchdog fails the run when no operation completes for
// `stall` (a deadlock or a lost wake-up).
class Progress {
 public:
  static void Add(int64_t n = 1) { ops_.fetch_add(n, std::memory_order_relaxed); }
  static int64_t ops() { return ops_.load(std::memory_order_relaxed); }
  // Runs the reporter on its own thread until Stop(); `label` names the scenario.
  static void Start(std::string label, absl::Time end, absl::Duration stall);
  static void Stop();

 private:
  static std::atomic<int64_t> ops_;
};

// True until the scenario's duration has passed. Memory ordering: relaxed (a hint).
bool Running();
void SetDeadline(absl::Time end);

// Uniform integer in [0, n).
inline uint64_t Below(std::mt19937_64& rng, uint64_t n) { return n == 0 ? 0 : rng() % n; }
// True with probability 1/n.
inline bool OneIn(std::mt19937_64& rng, uint64_t n) { return Below(rng, n) == 0; }

// A callback node on one fence that counts how often it ran ("signals exactly once"). Must
// outlive its registration: call Finish() (or see it refused by Arm) before destroying it.
struct Probe {
  fence::FenceCallback node;
  std::atomic<int> runs{0};

  // Registers on `f`, running `then` (may be empty) after counting. False if `f` had already
  // signalled (nothing registered, `then` not run).
  template <typename F>
  bool Arm(fence::Fence& f, F then) {
    const absl::Status s = f.AddCallback(&node, [this, then](fence::Fence& x) mutable {
      runs.fetch_add(1, std::memory_order_relaxed);
      then(x);
    });
    if (fence::IsAlreadySignaled(s)) return false;
    if (!s.ok()) Fail("AddCallback failed on an unsignalled fence: " + s.ToString());
    return true;
  }
  // Waits up to `timeout` for `f` (registered by Arm) to signal, then checks the callback ran
  // exactly once and is no longer registered. `what` names the fence in a violation.
  void Finish(fence::Fence& f, std::string_view what, absl::Duration timeout = absl::Seconds(30));
};

// The current options (set once by main before a scenario starts).
const Options& CurrentOptions();
void SetCurrentOptions(const Options& options);

// Scenarios. Each returns after its duration with every invariant checked (or does not return).
void RunSched(const Options& options);
void RunExec(const Options& options);
void RunFence(const Options& options);
void RunVmBind(const Options& options);

}  // namespace stress

#endif  // UDRM_TOOLS_STRESS_STRESS_H_
