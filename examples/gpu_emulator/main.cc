// gpu_emulator: a small emulated GPU built on udrm's public API, the way an emulator would use it.
//
//   ./bazelw run //examples:gpu_emulator [-- --contexts=4 --duration=5s --hang=1 --fault=2 ...]
//
// N contexts, each with its own VM (vm::BindVm) and bind queue, run fill/copy/saxpy/checksum
// kernels on two engines — one sched::Scheduler each (compute, copy), shared by every context —
// while re-binding their buffers; a third scheduler runs every VM's bind jobs. The kernels run on
// a pool of GPU threads that translate every access through the context's page table. Every
// checksum is compared with a CPU reference. Prints a summary and writes trace.json (Perfetto /
// chrome://tracing) and timeline.svg into the directory it was started from.
//
// --hang=CTX: one job of that context never finishes; the compute scheduler's timeout fires, the
// engine recovers (stop, karma, reset, resubmit, start), the context is reported guilty and the
// others finish. --fault=CTX: a page-table fault in one of that context's binds; its VM becomes
// unusable and the others go on. Exit status: 0 when every context ended as expected, 1 on a
// checksum mismatch or any unexpected outcome, 2 for bad flags.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/check.h"
#include "examples/gpu_emulator/context.h"
#include "examples/gpu_emulator/flags.h"
#include "examples/gpu_emulator/gpu.h"
#include "examples/gpu_emulator/timeline.h"
#include "sched/scheduler.h"
#include "vm/bind_job.h"

namespace gpu_emulator {
namespace {

constexpr const char* kColors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759",
                                   "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::ceil(p * v.size()));
  return v[std::clamp<size_t>(i, 1, v.size()) - 1];
}

std::string OutDir(const Flags& flags) {
  std::string dir = flags.out_dir;
  if (dir.empty()) {
    const char* bwd = std::getenv("BUILD_WORKING_DIRECTORY");  // set by `bazel run`
    dir = bwd != nullptr ? bwd : ".";
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::filesystem::path abs = std::filesystem::absolute(dir, ec);
  return ec ? dir : abs.lexically_normal().string();
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) std::fprintf(stderr, "cannot write %s\n", path.c_str());
  return static_cast<bool>(f);
}

std::unique_ptr<sched::Scheduler> MakeScheduler(sched::Backend* backend, std::string name,
                                                Timeline* timeline, const Flags* engine) {
  const bool bind = engine == nullptr;
  sched::SchedulerOptions o;
  o.name = std::move(name);
  o.trace = timeline;
  if (bind) {  // as vm::CreateBindScheduler: one bind at a time, in order, no timeout
    o.credit_limit = 1;
    o.policy = sched::Policy::kFifo;
  } else {
    o.credit_limit = 8;  // jobs on a ring at once
    o.timeout = engine->timeout;
    o.hang_limit = 0;  // a job blamed once makes its context guilty
  }
  absl::StatusOr<std::unique_ptr<sched::Scheduler>> s = sched::Scheduler::Create(backend, o);
  UDRM_CHECK(s.ok(), s.status().ToString().c_str());
  return std::move(*s);
}

const char* EndName(ContextResult::End e) {
  switch (e) {
    case ContextResult::End::kOk: return "ok";
    case ContextResult::End::kGuilty: return "GUILTY";
    case ContextResult::End::kVmUnusable: return "VM UNUSABLE";
    case ContextResult::End::kUnexpected: return "FAILED";
  }
  return "?";
}

int Run(const Flags& flags) {
  const int n = flags.contexts, hang = flags.hang, fault = flags.fault,
            threads = flags.gpu_threads;
  const uint64_t elements = flags.elements;
  if (n < 1 || n > 16 || hang < -1 || hang >= n || fault < -1 || fault >= n || threads < 1 ||
      threads > 64 || elements < 1 || elements > (uint64_t{1} << 26) ||
      flags.jobs < 1 || flags.timeout <= absl::ZeroDuration()) {
    std::fprintf(stderr, "bad flags; see --help\n");
    return 2;
  }
  std::printf("udrm gpu_emulator: %d contexts, %d GPU threads, %llu floats per buffer, seed %u%s%s\n",
              n, threads, static_cast<unsigned long long>(elements), flags.seed,
              hang >= 0 ? absl::StrCat(", ctx", hang, " hangs").c_str() : "",
              fault >= 0 ? absl::StrCat(", ctx", fault, " bind faults").c_str() : "");
  std::fflush(stdout);

  const absl::Time start = absl::Now();
  Timeline timeline(start);
  const int compute_lane = timeline.AddLane("compute");
  const int copy_lane = timeline.AddLane("copy");
  timeline.AddLane("bind");
  std::vector<int> ctx_lanes;
  for (int c = 0; c < n; ++c) {
    ctx_lanes.push_back(timeline.AddLane(absl::StrCat("ctx", c)));
    timeline.AddLegend(kColors[c % 8], absl::StrCat("ctx", c));
  }
  timeline.AddLegend("#7f7f7f", "bind (submit to out-fence)");
  timeline.AddLegend("#ffffff", "dashed outline: failed");

  Gpu gpu(threads, n);
  Engine compute_engine("compute", gpu, timeline, compute_lane);
  Engine copy_engine("copy", gpu, timeline, copy_lane);
  vm::BindBackend bind_backend;
  std::unique_ptr<sched::Scheduler> compute = MakeScheduler(&compute_engine, "compute", &timeline, &flags);
  std::unique_ptr<sched::Scheduler> copy = MakeScheduler(&copy_engine, "copy", &timeline, &flags);
  std::unique_ptr<sched::Scheduler> bind = MakeScheduler(&bind_backend, "bind", &timeline, nullptr);
  compute_engine.set_scheduler(compute.get());
  copy_engine.set_scheduler(copy.get());

  std::vector<ContextResult> results(n);
  {
    const Device device{compute.get(), copy.get(), bind.get(), &timeline};
    std::vector<std::unique_ptr<Context>> contexts;
    for (int c = 0; c < n; ++c) {
      ContextOptions o;
      o.id = c;
      o.lane = ctx_lanes[c];
      o.color = kColors[c % 8];
      o.elements = elements;
      o.max_jobs = flags.jobs;
      o.deadline = start + flags.duration;
      o.seed = flags.seed;
      o.hang = c == hang;
      o.fault = c == fault;
      absl::StatusOr<std::unique_ptr<Context>> ctx = Context::Create(device, o);
      if (!ctx.ok()) {
        std::fprintf(stderr, "ctx%d: %s\n", c, ctx.status().ToString().c_str());
        return 1;
      }
      contexts.push_back(std::move(*ctx));
    }
    std::vector<std::thread> runners;
    for (auto& ctx : contexts) runners.emplace_back([&ctx] { ctx->Run(); });
    for (auto& t : runners) t.join();
    for (int c = 0; c < n; ++c) results[c] = contexts[c]->Finish();
    gpu.ForgetContexts();  // the GPU threads' TLBs go before the VMs they translate through
  }  // contexts (entities, bind queues, VMs) go before the schedulers
  const absl::Duration elapsed = absl::Now() - start;
  bind.reset();
  copy.reset();
  compute.reset();

  // Summary.
  int jobs = 0, binds = 0, failures = 0;
  std::vector<double> job_ms, bind_ms;
  std::printf("\n%-6s %10s %6s %6s %9s  %s\n", "ctx", "iterations", "jobs", "binds", "verified",
              "end");
  for (int c = 0; c < n; ++c) {
    const ContextResult& r = results[c];
    jobs += r.jobs;
    binds += r.binds;
    job_ms.insert(job_ms.end(), r.job_ms.begin(), r.job_ms.end());
    bind_ms.insert(bind_ms.end(), r.bind_ms.begin(), r.bind_ms.end());
    std::printf("ctx%-3d %10d %6d %6d %9d  %s%s%s\n", c, r.iterations, r.jobs, r.binds,
                r.verified, EndName(r.end), r.why.empty() ? "" : ": ", r.why.c_str());
    const ContextResult::End want = c == hang    ? ContextResult::End::kGuilty
                                    : c == fault ? ContextResult::End::kVmUnusable
                                                 : ContextResult::End::kOk;
    if (r.end != want || r.mismatches != 0 || (want == ContextResult::End::kOk && r.verified == 0)) {
      ++failures;
    }
  }
  const int timeouts = compute_engine.timeouts() + copy_engine.timeouts();
  const int recoveries = compute_engine.recoveries() + copy_engine.recoveries();
  if (hang >= 0 && recoveries == 0) ++failures;
  std::printf("\n%d jobs, %d binds in %.2f s: %.0f jobs/s\n", jobs, binds,
              absl::ToDoubleSeconds(elapsed), jobs / absl::ToDoubleSeconds(elapsed));
  std::printf("%-14s %9s %9s\n", "latency (ms)", "p50", "p99");
  std::printf("%-14s %9.3f %9.3f\n", "job", Percentile(job_ms, 0.5), Percentile(job_ms, 0.99));
  std::printf("%-14s %9.3f %9.3f\n", "bind", Percentile(bind_ms, 0.5), Percentile(bind_ms, 0.99));
  std::printf("timeouts %d, recoveries %d\n", timeouts, recoveries);

  const std::string dir = OutDir(flags);
  const std::string json = dir + "/trace.json", svg = dir + "/timeline.svg";
  const std::string title = absl::StrFormat(
      "udrm gpu_emulator: %d contexts, %d jobs, %d binds, %d timeouts, %d recoveries", n, jobs,
      binds, timeouts, recoveries);
  if (!WriteFile(json, timeline.ToChromeJson()) || !WriteFile(svg, timeline.ToSvg(title))) {
    return 1;
  }
  std::printf("\nwrote %s  (open in https://ui.perfetto.dev or chrome://tracing)\n", json.c_str());
  std::printf("wrote %s  (open in a browser)\n", svg.c_str());
  if (failures != 0) {
    std::printf("\nFAILED: %d context(s) did not end as expected\n", failures);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace gpu_emulator

int main(int argc, char** argv) {
  gpu_emulator::Flags flags;
  if (!gpu_emulator::ParseFlags(argc, argv, &flags)) return 2;
  if (flags.help) {
    std::printf("%s", gpu_emulator::FlagsHelp().c_str());
    return 0;
  }
  return gpu_emulator::Run(flags);
}
