// vm::BindVm — a GPU VM with asynchronous VM_BIND (msm's msm_gem_vm in VM_BIND mode): the VA
// tree (vm::Gpuvm), the lock-free page table that emulated GPU threads translate through
// (vm::PageTable), the scheduler bind jobs run on, and the cleanup worker that frees what
// readers can no longer see.
//
// The path of a bind (BindQueue::Submit → BindVm::Submit; every step is a function in
// vm/bind_steps.h):
//   Validate → Lock (one exec::Exec; the VM resv is the lock of the VA tree) → Prealloc (the
//   exact needs of the whole list) → Apply (the tree changes; one op list) → Push (the job, with
//   the in-fences and the pending bind jobs on overlapping ranges as dependencies) → RunJob (the
//   page table, in order) → cleanup worker (grace period, unused reservations, BO references).
// Every error before Apply returns a status and changes nothing. Apply and everything after it
// cannot fail for lack of memory; a failure that can still happen (a simulated page-table fault
// in RunJob, a bind job killed with its entity or cancelled, an in-fence with an error) makes
// the VM unusable: Submit then returns FailedPrecondition("VM unusable"); bind jobs already
// queued still execute their unmaps (dropping their references) but skip their maps. msm does
// the same for run_job failures and GPU hangs; for an in-fence error msm's scheduler skips
// run_job and the job's unmaps are lost with it — we execute them (catch-up, below).
//
// Order: per VA range. A bind job depends on the unfinished bind jobs whose ops overlap its
// ops' ranges (vm/bind_ranges.h, kept under the VM resv), so for every page the jobs touching it
// execute on the page table in the order their binds applied to the tree, whatever queue they
// came from and whatever order the in-fences signal in; jobs on disjoint ranges run in any
// order (one at a time: the page-table writer lock pt_mu_). A job that never ran (killed with
// its queue, or cancelled by teardown) is caught up — its unmaps executed, its maps skipped, the
// VM marked unusable — by its own FreeJob, or earlier by the first job that runs with an error
// among its dependencies (a job depending on a killed one sees the killed job's error, so it
// never executes before the killed job's unmaps). A bind whose ranges overlap a failed or killed
// job's fails with FailedPrecondition("VM unusable") and marks the VM unusable.
//
// Device addresses: a BO mapping's page-table target is a device address from a window owned
// by the VM (one 4 GiB slot per mapped BindOp, so a map's range is at most 4 GiB);
// HostAddress() turns a translation into host memory, for emulated GPU readers.
//
// Lifetime: Create(); BindQueues made on it must be destroyed before it. Close() (or the
// destructor) waits for every bind job, unmaps everything and drops every reference (msm's
// vm_close, through one exec transaction).
// Thread-safety: Submit from any number of threads (serialised by the VM resv inside one exec
// transaction each). Readers: PageTable::Translate + HostAddress inside an RcuReadSection.
#ifndef UDRM_VM_BIND_VM_H_
#define UDRM_VM_BIND_VM_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "fence/fence.h"
#include "sched/entity.h"
#include "sched/scheduler.h"
#include "vm/bind_job.h"
#include "vm/bind_op.h"
#include "vm/bind_ranges.h"
#include "vm/gpuvm.h"
#include "vm/page_table.h"

namespace vm {

struct BindVmOptions {
  int va_bits = 48;          // of the page table; the VA space is [0, 2^va_bits)
  uint32_t gpuvm_flags = 0;  // Gpuvm::Flags (not kImmediateMode)
  // Null: the VM makes its own (CreateBindScheduler). Else a scheduler created with a
  // BindBackend, which must outlive the VM.
  sched::Scheduler* scheduler = nullptr;
};

class BindVm {
 public:
  static constexpr int kSlotShift = 32;  // a mapped BindOp's device-address slot: 4 GiB
  static constexpr size_t kSlots = size_t{1} << 18;

  static absl::StatusOr<std::unique_ptr<BindVm>> Create(std::string name, BindVmOptions options);
  // Close(), then stops the cleanup worker and the own scheduler.
  ~BindVm();
  BindVm(const BindVm&) = delete;
  BindVm& operator=(const BindVm&) = delete;

  Gpuvm& gpuvm() const { return *gpuvm_; }
  PageTable& page_table() const { return *pt_; }
  sched::Scheduler& scheduler() const { return *scheduler_; }

  // Gpuvm::unusable(): set once, never cleared. Memory ordering: acquire.
  bool unusable() const { return unusable_.load(std::memory_order_acquire); }
  void MarkUnusable() { unusable_.store(true, std::memory_order_release); }
  bool closed() const { return closed_.load(std::memory_order_acquire); }

  // The bind: see the top. Returns the job's finished fence (the out-fence). Errors, with nothing
  // changed: InvalidArgument (bad op or in-fence), FailedPrecondition (unusable or closed),
  // CancelledError (`cancel` raised while locking), ResourceExhausted (pre-allocation failed).
  // Blocks on resv locks (interruptible by `cancel`); never on fences. `entity` must be on a
  // scheduler with a BindBackend.
  absl::StatusOr<fence::FenceRef> Submit(sched::Entity& entity, std::span<const BindOp> ops,
                                         std::span<const fence::FenceRef> in_fences,
                                         std::stop_token cancel = {});

  // msm_gem_vm_close: marks the VM closed (later Submits fail), waits for every bind job to be
  // cleaned up (blocks: a bind waiting for an in-fence that never signals blocks it), then in
  // one exec transaction unmaps everything from the page table and removes every VA, and drops
  // every reference once a grace period has passed. Idempotent.
  void Close();

  // For emulated GPU readers: the host memory a valid, non-sparse translation points at, or null
  // (fault or sparse). Contract: inside the RcuReadSection of the Translate. Lock-free.
  const std::byte* HostAddress(const Translation& t) const;

  // Bind jobs pushed and not yet cleaned up. Memory ordering: acquire.
  int64_t jobs_in_flight() const { return in_flight_.load(std::memory_order_acquire); }
  // Blocks until jobs_in_flight() == 0.
  void WaitIdle() ABSL_LOCKS_EXCLUDED(cleanup_mu_);

  // Fault injection: the next job to execute fails at op-list entry `entry` (a simulated
  // page-table fault): it stops mapping, still unmaps, the VM becomes unusable, and its finished
  // fence carries InternalError.
  void InjectRunFault(int entry) { fault_at_entry_.store(entry, std::memory_order_relaxed); }

  // --- for the bind steps and BindBackend ---
  // Assigns a device-address slot to host memory. ResourceExhausted when the window is full.
  absl::StatusOr<uint64_t> AssignDeviceAddress(std::byte* host);
  // The range tracker. Contract: the caller holds the VM resv, which is its lock.
  BindRanges& ranges() { return ranges_; }
  // Push step: arms and pushes `job` on `entity` (its dependencies are already added), adds its
  // finished fence to the resvs (see vm/bind_steps.h) and records it in the range tracker as the
  // last job of its ops' ranges. Caller holds the VM resv. Allocation-free.
  fence::FenceRef PushLocked(sched::Entity& entity, std::unique_ptr<BindJob> job,
                             std::span<const BindOp> ops);
  absl::StatusOr<fence::FenceRef> RunJob(BindJob& job) ABSL_LOCKS_EXCLUDED(pt_mu_);
  void FreeJob(std::unique_ptr<BindJob> job) ABSL_LOCKS_EXCLUDED(pt_mu_, cleanup_mu_);

 private:
  BindVm(std::string name, BindVmOptions options);
  // Executes `job`'s op list (maps skipped when unusable or failed at the injected entry).
  // Returns false on the injected fault.
  bool ExecuteLocked(BindJob& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  void LinkPendingLocked(BindJob* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  void UnlinkPendingLocked(BindJob* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  // Executes (unmaps only, marking the VM unusable) a pushed job that will never run.
  void CatchUpLocked(BindJob* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  // Catches up every pending job whose finished fence signalled without running (killed).
  void CatchUpKilledLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  void CleanupLoop() ABSL_LOCKS_EXCLUDED(cleanup_mu_);
  bool CleanupReadyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(cleanup_mu_);
  void Cleanup(std::unique_ptr<BindJob> job);

  Ref<Gpuvm> gpuvm_;
  std::unique_ptr<PageTable> pt_;
  std::unique_ptr<BindBackend> own_backend_;
  std::unique_ptr<sched::Scheduler> own_scheduler_;
  sched::Scheduler* scheduler_ = nullptr;
  std::atomic<bool> unusable_{false};
  std::atomic<bool> closed_{false};
  std::atomic<int> fault_at_entry_{-1};
  std::atomic<int64_t> in_flight_{0};

  std::unique_ptr<std::atomic<std::byte*>[]> slots_;  // device-address window
  std::atomic<uint64_t> next_slot_{1};

  // Guarded by the VM resv (gpuvm_->resv()), which no annotation can name: see ranges().
  BindRanges ranges_;

  // The page-table writer lock: RunJob, catch-up and Close. Never held while waiting for
  // anything else.
  absl::Mutex pt_mu_;
  BindJob* pending_head_ ABSL_GUARDED_BY(pt_mu_) = nullptr;  // pushed, not executed, in order
  BindJob* pending_tail_ ABSL_GUARDED_BY(pt_mu_) = nullptr;

  absl::Mutex cleanup_mu_;
  BindJob* cleanup_head_ ABSL_GUARDED_BY(cleanup_mu_) = nullptr;
  BindJob* cleanup_tail_ ABSL_GUARDED_BY(cleanup_mu_) = nullptr;
  bool stop_cleanup_ ABSL_GUARDED_BY(cleanup_mu_) = false;
  std::thread cleanup_thread_;
};

}  // namespace vm

#endif  // UDRM_VM_BIND_VM_H_
