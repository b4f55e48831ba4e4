// The emulated GPU: shader cores (a pool of GPU threads that run workgroups) and engines (in-order
// rings), each engine being the sched::Backend of one sched::Scheduler.
//
// A job (GpuJob) is one kernel dispatch of one context. Engine::RunJob puts it on the engine's
// ring and returns its hardware fence at once; the ring executes its jobs one after another, in
// the order the scheduler handed them over (so a dependency on a job of the same scheduler may be
// pipelined: sched/scheduler.h), and launches each one's workgroups on the shared GPU threads.
// Every GPU thread is an RCU reader with one vm::TranslationCache per context, and runs each
// workgroup inside one vm::RcuReadSection, translating every access through the context's page
// table (kernels.h). When the last workgroup of a dispatch finishes, the hardware fence signals —
// with InternalError if a workgroup faulted.
//
// A job made with `hang` never completes: the ring stalls on it, the scheduler's timeout fires
// and Engine::TimedOutJob recovers as a driver does: Stop(bad), IncreaseKarma(bad), reset the
// ring (forget every job on it), ResubmitJobs() (the guilty context's jobs get CancelledError and
// are skipped; the others run again), Start().
//
// Threads: RunJob, TimedOutJob and FreeJob run on the scheduler's executor thread (never
// overlapping, sched/backend.h); Complete on the GPU thread that finished a dispatch; CancelJob on
// the thread destroying the scheduler. Engine::mu_ guards the ring; it is never held while a
// fence is signalled or the scheduler is called.
// Lifetime: the Gpu outlives its engines, an engine outlives its scheduler, and every context's
// VM outlives the jobs that use it.
#ifndef UDRM_EXAMPLES_GPU_EMULATOR_GPU_H_
#define UDRM_EXAMPLES_GPU_EMULATOR_GPU_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "examples/gpu_emulator/kernels.h"
#include "examples/gpu_emulator/timeline.h"
#include "fence/fence.h"
#include "fence/fence_context.h"
#include "sched/backend.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "vm/bind_vm.h"
#include "vm/translation_cache.h"

namespace gpu_emulator {

class Engine;

// One kernel dispatch of context `ctx`, whose addresses are in `vm`.
class GpuJob final : public sched::Job {
 public:
  GpuJob(const vm::BindVm& vm, int ctx, Dispatch dispatch, std::string label, bool hang)
      : vm(vm), ctx(ctx), dispatch(dispatch), label(std::move(label)), hang(hang) {}

  const vm::BindVm& vm;
  const int ctx;
  const Dispatch dispatch;
  const std::string label;  // "ctx1 saxpy #3"
  const bool hang;          // never completes (--hang)
  fence::FenceRef hw;       // the engine's: the hardware fence of the last RunJob
};

// A dispatch on the shader cores.
struct Launch {
  Dispatch dispatch;
  const vm::BindVm* vm;
  int ctx;
  Engine* engine;
  uint64_t id;                      // the engine's ring entry
  std::atomic<int64_t> remaining;   // workgroups not finished
  std::atomic<bool> faulted{false};
  std::atomic<uint64_t> fault_va{0};
};

class Gpu {
 public:
  // `contexts`: the context ids launches use are 0..contexts-1, each always with the same VM.
  Gpu(int threads, int contexts);
  // Contract: no launch in flight (the engines are idle).
  ~Gpu();
  Gpu(const Gpu&) = delete;
  Gpu& operator=(const Gpu&) = delete;

  // Queues the launch's workgroups. Does not block beyond a short critical section.
  void Submit(std::shared_ptr<Launch> launch) ABSL_LOCKS_EXCLUDED(mu_);
  int threads() const { return static_cast<int>(threads_.size()); }

  // Drops every GPU thread's software TLBs: a vm::PageTable must outlive the TranslationCaches
  // built on it, so call this before the contexts' VMs go, once no more launches come. Blocks
  // until no workgroup is queued or running.
  void ForgetContexts() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Worker(int index) ABSL_LOCKS_EXCLUDED(mu_);

  // tlbs_[worker][ctx]: used by that worker only while it runs a workgroup of ctx (busy_ counts
  // it), created lazily; ForgetContexts resets them when busy_ is 0 and nothing is queued.
  std::vector<std::vector<std::unique_ptr<vm::TranslationCache>>> tlbs_;
  absl::Mutex mu_;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;  // workers running a workgroup
  std::deque<std::pair<std::shared_ptr<Launch>, uint64_t>> queue_ ABSL_GUARDED_BY(mu_);
  bool exit_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

class Engine final : public sched::Backend {
 public:
  // `lane`: the engine's scheduler lane in `timeline`, for timeout and reset marks.
  Engine(std::string name, Gpu& gpu, Timeline& timeline, int lane);
  // The scheduler this engine is the backend of; before its first job.
  void set_scheduler(sched::Scheduler* s) { scheduler_ = s; }

  absl::StatusOr<fence::FenceRef> RunJob(sched::Job& job) override ABSL_LOCKS_EXCLUDED(mu_);
  sched::TimeoutStatus TimedOutJob(sched::Job& job) override ABSL_LOCKS_EXCLUDED(mu_);
  void CancelJob(sched::Job& job) override ABSL_LOCKS_EXCLUDED(mu_);

  // The GPU thread that finished `launch`'s last workgroup.
  void Complete(Launch& launch) ABSL_LOCKS_EXCLUDED(mu_);

  // Timeout handler calls, and the resets (recoveries) among them. Relaxed.
  int timeouts() const { return timeouts_.load(std::memory_order_relaxed); }
  int recoveries() const { return recoveries_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    uint64_t id;
    fence::FenceRef hw;
    std::shared_ptr<Launch> launch;
    bool hang;
  };
  // Starts the ring's head: returns the launch to submit (outside mu_), or null if it hangs.
  std::shared_ptr<Launch> StartHeadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The "GPU reset": forgets every job on the ring and waits until none runs on the cores.
  void Reset() ABSL_LOCKS_EXCLUDED(mu_);

  const std::string name_;
  Gpu& gpu_;
  Timeline& timeline_;
  const int lane_;
  sched::Scheduler* scheduler_ = nullptr;
  fence::FenceContext hw_context_;
  std::atomic<int> timeouts_{0}, recoveries_{0};

  absl::Mutex mu_;
  std::deque<Entry> ring_ ABSL_GUARDED_BY(mu_);  // the head is running (or hung) once started
  bool head_started_ ABSL_GUARDED_BY(mu_) = false;
  bool hung_ ABSL_GUARDED_BY(mu_) = false;
  int on_cores_ ABSL_GUARDED_BY(mu_) = 0;  // launches with workgroups on the GPU threads
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace gpu_emulator

#endif  // UDRM_EXAMPLES_GPU_EMULATOR_GPU_H_
