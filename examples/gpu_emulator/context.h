// gpu_emulator::Context — one user context of the emulated GPU: its own VM (vm::BindVm: the VA
// tree and the page table its kernels translate through), a bind queue, and one entity on each
// engine's scheduler (compute, copy), sharing one guilty flag as amdgpu's context does.
//
// The workload, iteration i (all submitted ahead, up to kWindow iterations in flight):
//   fill X (compute), copy X → Z (copy engine), fill Y (compute), saxpy Y = a*Z + Y (compute),
//   checksum Y → R[i] (compute); then Z is unmapped and a fresh BO is bound at the other Z
//   address, with the saxpy's timeline point as the bind's in-fence.
// Each job is a point on the context's timeline (a fence::FenceChain); a job waits for the
// timeline point it needs (which implies every earlier point) and for the bind out-fences of the
// buffers it touches. The checksum of iteration i is checked against a CPU reference once
// iteration i + kWindow is about to be submitted, and at the end.
//
// A context stops early, and says why, when a result fails: its job was blamed for a hang
// (guilty: later jobs are cancelled), its VM became unusable (a bind faulted), or anything else
// (unexpected). A wrong checksum is a mismatch.
//
// Thread-safety: Run() on one thread; Finish() after Run() returned.
#ifndef UDRM_EXAMPLES_GPU_EMULATOR_CONTEXT_H_
#define UDRM_EXAMPLES_GPU_EMULATOR_CONTEXT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "examples/gpu_emulator/kernels.h"
#include "examples/gpu_emulator/timeline.h"
#include "fence/fence.h"
#include "sched/entity.h"
#include "sched/scheduler.h"
#include "vm/bind_queue.h"
#include "vm/bind_vm.h"
#include "vm/bo.h"

namespace gpu_emulator {

// What all contexts share.
struct Device {
  sched::Scheduler* compute;
  sched::Scheduler* copy;
  sched::Scheduler* bind;  // created with a vm::BindBackend; every context's VM binds through it
  Timeline* timeline;
};

struct ContextOptions {
  int id = 0;
  int lane = 0;                // in the timeline
  std::string color;           // of its jobs in the timeline
  uint64_t elements = 65536;   // floats per buffer
  int max_jobs = 1000;         // GPU jobs to submit at most
  absl::Time deadline;         // no new iteration starts after it
  uint32_t seed = 1;
  bool hang = false;   // the saxpy of iteration 1 never completes
  bool fault = false;  // the rebind after iteration 1 faults in the page table
};

struct ContextResult {
  int iterations = 0;  // submitted
  int verified = 0;    // checksums that matched
  int mismatches = 0;
  int jobs = 0;
  int binds = 0;
  enum class End { kOk, kGuilty, kVmUnusable, kUnexpected } end = End::kOk;
  std::string why;  // for anything but kOk
  std::vector<double> job_ms, bind_ms;  // submission → out-fence, of those that succeeded
};

class Context {
 public:
  static constexpr int kWindow = 2;
  static absl::StatusOr<std::unique_ptr<Context>> Create(const Device& device,
                                                         ContextOptions options);
  // Entities first, then the bind queue, then the VM (Close waits for its bind jobs).
  ~Context();

  // The workload, on the calling thread, until the deadline, max_jobs or an error; then waits for
  // everything it submitted.
  void Run();
  // Adds the context's spans and marks to the timeline and returns its numbers. After Run().
  ContextResult Finish();

 private:
  struct Submitted {
    std::string name;  // "saxpy", "bind"
    int iteration;
    bool is_bind;
    absl::Time at;
    fence::FenceRef done;  // the job's finished fence or the bind's out-fence
  };
  struct Iteration {
    uint32_t seed_x, seed_y;
    float a;
    std::vector<fence::FenceRef> jobs;  // finished fences; the checksum's is the last
    absl::Time begin;
  };
  Context(const Device& device, ContextOptions options) : dev_(device), o_(options) {}
  absl::Status Init();
  // Submits one kernel job on `entity` waiting for `deps`; appends it to the timeline.
  absl::Status SubmitKernel(sched::Entity& entity, const Dispatch& d,
                            std::vector<fence::FenceRef> deps, int iteration, bool hang);
  absl::Status SubmitIteration(int i);
  absl::Status Rebind(int i);
  // Waits for iteration i's jobs and compares its checksum with the CPU reference. A job error
  // (the scheduler runs a job whose dependency failed: each job's own fence tells) or a mismatch
  // ends the context (result_.end and result_.why say why).
  bool Verify(int i);
  void Stop(ContextResult::End end, std::string why);
  // " (after the rebind of iteration N failed: ...)" for the first bind that failed, or "".
  // Waits for the binds submitted so far.
  std::string FirstBindError() const;
  void WaitAll();
  uint64_t bytes() const { return o_.elements * 4; }

  const Device dev_;
  const ContextOptions o_;
  std::shared_ptr<std::atomic<bool>> guilty_ = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<vm::BindVm> vm_;
  std::unique_ptr<vm::BindQueue> bind_queue_;
  std::unique_ptr<sched::Entity> compute_, copy_;
  vm::Ref<vm::Bo> x_, y_, r_;
  uint64_t z_va_ = 0;
  fence::FenceRef setup_bind_, z_bind_;
  fence::FenceRef timeline_;       // the head of the timeline
  fence::FenceRef iteration_done_;  // the timeline point of the last iteration's checksum
  uint64_t point_ = 0;
  std::vector<Iteration> iterations_;
  std::vector<Submitted> submitted_;
  std::vector<Mark> marks_;
  ContextResult result_;
};

}  // namespace gpu_emulator

#endif  // UDRM_EXAMPLES_GPU_EMULATOR_CONTEXT_H_
