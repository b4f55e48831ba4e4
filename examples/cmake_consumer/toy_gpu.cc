// toy_gpu: udrm embedded the way an emulator would, from outside the Bazel workspace.
//
// Two engines of a toy GPU (compute and copy), each a sched::Backend with one "hardware" thread
// that runs kernels in the order the scheduler hands them over and then signals their hardware
// fences. Two user contexts submit through their own entities:
//   fill      (context A, compute)  x[i] = i
//   saxpy     (context B, compute)  y[i] = 2 * x[i] + 1   — depends on fill's finished fence
//   checksum  (context A, copy)     sum of y              — depends on saxpy's finished fence
//   fault     (context B, compute)  a kernel that fails: its finished fence carries the error
// The program waits for the finished fences, checks the checksum against the CPU's (n^2) and the
// fault's error, and exits non-zero on any mismatch. docs/EMBEDDING.md walks through it.
#include <absl/status/status.h>
#include <absl/synchronization/mutex.h>
#include <absl/time/time.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <udrm/fence/fence.h>
#include <udrm/fence/fence_context.h>
#include <udrm/sched/backend.h>
#include <udrm/sched/entity.h>
#include <udrm/sched/job.h>
#include <udrm/sched/log.h>
#include <udrm/sched/scheduler.h>
#include <udrm/sched/trace.h>

namespace {

using Kernel = std::function<absl::Status()>;

// A job of the toy GPU: one kernel.
class KernelJob final : public sched::Job {
 public:
  KernelJob(std::string name, Kernel kernel) : name_(std::move(name)), kernel_(std::move(kernel)) {}
  const std::string& name() const { return name_; }

 private:
  friend class ToyEngine;
  const std::string name_;
  Kernel kernel_;         // moved to the engine's queue by RunJob
  fence::FenceRef hw_;    // set by RunJob
};

// One engine: a sched::Backend whose "hardware" is one thread executing kernels in RunJob order.
// RunJob only queues the kernel (it must not block: it is in the fence-signalling critical
// section) and returns the hardware fence; the hardware thread runs the kernel and signals that
// fence, with the kernel's error if it failed. The kernel is moved out of the job, so the
// hardware never touches a Job, which the scheduler frees through FreeJob once finished.
class ToyEngine final : public sched::Backend {
 public:
  explicit ToyEngine(std::string name) : ring_(std::move(name)), hw_([this] { Hardware(); }) {}
  ~ToyEngine() override {
    {
      absl::MutexLock l(&mu_);
      exit_ = true;
    }
    hw_.join();
  }

  // The scheduler's executor thread.
  absl::StatusOr<fence::FenceRef> RunJob(sched::Job& job) override {
    auto& kj = static_cast<KernelJob&>(job);
    kj.hw_ = ring_.NewFence();
    absl::MutexLock l(&mu_);
    queue_.push_back({std::move(kj.kernel_), kj.hw_});
    return kj.hw_;
  }

  // The executor thread (or the scheduler's destructor): the job is ours to destroy.
  void FreeJob(std::unique_ptr<sched::Job> job) override {
    job.reset();
    freed_.fetch_add(1);
  }

  // Scheduler teardown, for a job still on the hardware: fail it if it has not started (one
  // that is running signals by itself when its kernel returns).
  void CancelJob(sched::Job& job) override {
    fence::FenceRef hw;
    {
      absl::MutexLock l(&mu_);
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (it->hw == static_cast<KernelJob&>(job).hw_) {
          hw = std::move(it->hw);
          queue_.erase(it);
          break;
        }
      }
    }
    if (hw != nullptr) {
      hw->SetError(absl::CancelledError("toy engine: cancelled at teardown"));
      hw->Signal();
    }
  }

  int freed() const { return freed_.load(); }

 private:
  struct Work {
    Kernel kernel;
    fence::FenceRef hw;
  };

  void Hardware() {
    for (;;) {
      Work w;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(
            +[](ToyEngine* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) {
              return e->exit_ || !e->queue_.empty();
            },
            this));
        if (queue_.empty()) return;
        w = std::move(queue_.front());
        queue_.pop_front();
      }
      absl::Status s = w.kernel();
      if (!s.ok()) w.hw->SetError(std::move(s));
      w.hw->Signal();  // the scheduler's callback runs here, on the "hardware" thread
    }
  }

  fence::FenceContext ring_;
  absl::Mutex mu_;
  std::deque<Work> queue_ ABSL_GUARDED_BY(mu_);
  bool exit_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> freed_{0};
  std::thread hw_;  // last: starts once the rest is constructed
};

int failures = 0;

void Expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// Job::Init, the dependencies, then Entity::Submit (arm + push). Returns the finished fence, or
// exits: Init and AddDependency fail only on bad input, which this program does not make.
fence::FenceRef Submit(sched::Entity& entity, std::string name, Kernel kernel,
                       std::vector<fence::FenceRef> deps) {
  auto job = std::make_unique<KernelJob>(std::move(name), std::move(kernel));
  absl::Status s = job->Init(&entity, /*credits=*/1);
  for (fence::FenceRef& dep : deps) {
    if (s.ok()) s = job->AddDependency(std::move(dep));
  }
  if (!s.ok()) {
    std::fprintf(stderr, "toy_gpu: cannot submit %s: %s\n", job->name().c_str(),
                 s.ToString().c_str());
    std::exit(1);
  }
  return entity.Submit(std::move(job));
}

int Run() {
  // udrm's log messages go to the embedder's logger (here: stderr with a prefix).
  sched::log::SetSink([](sched::log::Level, std::string_view logger, std::string_view message) {
    std::fprintf(stderr, "[%.*s] %.*s\n", static_cast<int>(logger.size()), logger.data(),
                 static_cast<int>(message.size()), message.data());
  });

  // Declared before the schedulers that use them, so they are destroyed after them.
  sched::ChromeTraceSink trace;
  ToyEngine compute_hw("compute"), copy_hw("copy");

  sched::SchedulerOptions options;
  options.credit_limit = 4;
  options.timeout = absl::Seconds(10);  // TDR: a kernel that hangs this long is blamed
  options.trace = &trace;
  options.name = "compute";
  auto compute = sched::Scheduler::Create(&compute_hw, options);
  options.name = "copy";
  auto copy = sched::Scheduler::Create(&copy_hw, options);
  if (!compute.ok() || !copy.ok()) {
    std::fprintf(stderr, "Scheduler::Create failed\n");
    return 1;
  }

  // Context A uses both engines, context B only compute.
  auto a_compute = sched::Entity::Create({compute->get()});
  auto a_copy = sched::Entity::Create({copy->get()});
  auto b_compute = sched::Entity::Create({compute->get()});
  if (!a_compute.ok() || !a_copy.ok() || !b_compute.ok()) {
    std::fprintf(stderr, "Entity::Create failed\n");
    return 1;
  }

  constexpr uint64_t kN = 1 << 16;
  std::vector<uint64_t> x(kN), y(kN);
  uint64_t sum = 0;

  // fill and saxpy run on one scheduler: saxpy is handed to the engine once fill is *scheduled*
  // (pipelining), which is correct because the engine executes in order. checksum, on another
  // scheduler, waits for saxpy's finished fence.
  auto fill = Submit(**a_compute, "fill", [&] {
    for (uint64_t i = 0; i < kN; ++i) x[i] = i;
    return absl::OkStatus();
  }, {});
  auto saxpy = Submit(**b_compute, "saxpy", [&] {
    for (uint64_t i = 0; i < kN; ++i) y[i] = 2 * x[i] + 1;
    return absl::OkStatus();
  }, {fill});
  auto checksum = Submit(**a_copy, "checksum", [&] {
    for (uint64_t v : y) sum += v;
    return absl::OkStatus();
  }, {saxpy});
  auto fault = Submit(**b_compute, "fault", [] {
    return absl::InternalError("toy engine: page fault at 0xdead000");
  }, {});

  // A job's failure travels on its finished fence; Wait reports only the wait itself.
  for (const fence::FenceRef& f : {fill, saxpy, checksum, fault}) {
    absl::StatusOr<absl::Duration> left = f->Wait(absl::Seconds(30));
    Expect(left.ok(), "finished fence " + std::to_string(f->context()) + ":" +
                          std::to_string(f->seqno()) + " signalled");
  }
  Expect(fill->error().ok() && saxpy->error().ok() && checksum->error().ok(),
         "fill, saxpy and checksum succeeded");
  Expect(sum == kN * kN, "checksum " + std::to_string(sum) + " == n^2 = " +
                             std::to_string(kN * kN));
  Expect(absl::IsInternal(fault->error()),
         "fault job's fence carries its error: " + fault->error().ToString());
  Expect(trace.size() > 0, std::to_string(trace.size()) + " trace events recorded");

  // Teardown order: entities, then schedulers (FreeJob of every finished job), then engines.
  a_compute->reset();
  a_copy->reset();
  b_compute->reset();
  compute->reset();
  copy->reset();
  Expect(compute_hw.freed() == 3 && copy_hw.freed() == 1,
         "every job freed (" + std::to_string(compute_hw.freed()) + " + " +
             std::to_string(copy_hw.freed()) + ")");
  sched::log::SetSink(nullptr);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  int rc = Run();
  std::printf("toy_gpu: %s\n", rc == 0 ? "PASS" : "FAIL");
  return rc;
}
