// vm::BindVm — a GPU VM with asynchronous VM_BIND (msm's msm_gem_vm in VM_BIND mode): the VA
// tree (vm::Gpuvm), the lock-free page table that emulated GPU threads translate through
// (vm::PageTable), the scheduler bind jobs run on, and the cleanup worker that frees what
// readers can no longer see.
//
// The path of a bind (BindQueue::Submit → BindVm::Submit; every step is a function in
// vm/bind_steps.h):
//   Validate → Lock and Prealloc, in one exec::Exec: the VM resv (the lock of the VA tree), the
//   tree-side pre-allocation under it (PreallocBindTree: the exact needs of the whole list), then
//   the BOs (LockBindBos) and their VmBos (PreallocBindBos) — so the BOs' resvs, which binds of
//   other VMs sharing the BOs need too, are not held during the pre-allocation; after a back-off
//   the job is kept unless the tree or the range tracker changed meanwhile (tree_changes()) →
//   Apply (the tree changes; one op list) → Push (the job, with
//   the in-fences and the pending bind jobs on overlapping ranges as dependencies) → RunJob (the
//   page table, in order; a run of adjacent unmap entries is one Unmap call) → FreeJob (unused
//   page-table reservations back) → cleanup worker (one grace period per batch of jobs, then BO
//   references, removed Gpuvas and their device-address slots).
// The CPU fast path (xe_migrate_update_pgtables applies page-table updates with the CPU when a
// bind has nothing to wait for): when every dependency of the bind (its in-fences, and the bind
// jobs on overlapping ranges) has signalled without error and no bind job of this VM is
// unfinished (pushed and not yet through FreeJob — so none is queued, running, or about to be
// caught up), and its ops cover at most kInlineMaxBytes of VA (a bigger bind, such as a 1 GiB
// sparse range, stays on the queued path so that Submit does not do its page-table work on the
// caller's thread), Submit executes the op list itself, on the caller's thread, under the VM resv
// and pt_mu_ exactly as RunJob would (same ExecuteLocked: injected faults, unusable-skips-maps;
// the BOs' resvs, which guarded the tree's VmBo links, are unlocked first: the page-table work
// needs none of them, and another VM's bind on the same BOs need not wait for it),
// and returns an out-fence of the VM's own context that has already signalled (with
// InternalError on an injected fault). No job is pushed: the scheduler never sees the bind, and
// the out-fence is not added to any resv or to the range tracker (a signalled fence is nothing to
// wait for). Cleanup is the queued path's: once Submit's exec has unlocked, the job goes to the
// cleanup worker (grace period, then references), counted in jobs_in_flight() from its
// execution until then. Ordering holds: a later bind locks
// the VM resv after this one released it, so it sees the page table already updated; an earlier
// one that is unfinished disables the fast path. The out-fence is allocated (and its failslab
// site asked) before the tree changes, so nothing can fail after Apply on either path.
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
// HostAddress() turns a translation into host memory, for emulated GPU readers. A slot is
// referenced by every Gpuva whose target lies in it (a remap's pieces share their VA's slot) and
// by the bind job that assigned it; it is reused once the last reference is gone — a Gpuva's
// reference is dropped when the Gpuva is freed, which is after the grace period of the bind job
// that unmapped it (the cleanup worker's PageTable::Release), so no reader can still translate
// to a slot that is handed out again. The window (BindVmOptions::device_slots) bounds the slots
// referenced at once, not the maps a VM makes in its life.
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
#include "absl/time/time.h"
#include "fence/fence.h"
#include "fence/fence_context.h"
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
  // Device-address slots (slot 0 is never used): 0 means BindVm::kSlots, the most there can be;
  // tests use fewer to reach slot reuse quickly. InvalidArgument if 1 or above kSlots.
  size_t device_slots = 0;
};

class BindVm {
 public:
  static constexpr int kSlotShift = 32;  // a mapped BindOp's device-address slot: 4 GiB
  static constexpr size_t kSlots = size_t{1} << 18;  // the largest device-address window
  // The CPU fast path's bound on the VA a bind's ops cover (16384 4-KiB pages; see the top).
  static constexpr uint64_t kInlineMaxBytes = uint64_t{64} << 20;

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

  // The bind: see the top. Returns the job's finished fence (the out-fence), or — on the CPU fast
  // path (see the top) — an already signalled fence of the VM's own context. Errors, with nothing
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

  // Bind jobs pushed (or run on the CPU fast path) and not yet cleaned up. Memory ordering:
  // acquire.
  int64_t jobs_in_flight() const { return in_flight_.load(std::memory_order_acquire); }
  // Binds that took the CPU fast path so far (tests, benches). Memory ordering: relaxed.
  int64_t binds_run_inline() const { return inline_runs_.load(std::memory_order_relaxed); }
  // Blocks until jobs_in_flight() == 0.
  void WaitIdle() ABSL_LOCKS_EXCLUDED(cleanup_mu_);

  // Fault injection: the next job to execute fails at op-list entry `entry` (a simulated
  // page-table fault): it stops mapping, still unmaps, the VM becomes unusable, and its finished
  // fence carries InternalError.
  void InjectRunFault(int entry) { fault_at_entry_.store(entry, std::memory_order_relaxed); }

  // --- for the bind steps and BindBackend ---
  // Assigns a free device-address slot (a freed one first) to host memory, with one reference
  // for the caller. ResourceExhausted when every slot is referenced. Lock-free for readers.
  absl::StatusOr<uint64_t> AssignDeviceAddress(std::byte* host) ABSL_LOCKS_EXCLUDED(slot_mu_);
  // AssignDeviceAddress for each of `hosts`, into targets[i], under one lock. On
  // ResourceExhausted the first ones may be assigned (non-zero targets, each with its reference).
  absl::Status AssignDeviceAddresses(std::span<std::byte* const> hosts,
                                     std::span<uint64_t> targets) ABSL_LOCKS_EXCLUDED(slot_mu_);
  // One more reference to the slot of `target` (a device address; 0, sparse: nothing).
  void RefDeviceAddress(uint64_t target);
  // Drops one reference; at zero the slot is free. Contract: no page-table entry the reference
  // stood for can still be seen by a reader — it was never written, or the grace period of its
  // unmap (PageTable::Release) has passed.
  void UnrefDeviceAddress(uint64_t target) ABSL_LOCKS_EXCLUDED(slot_mu_);
  // UnrefDeviceAddress for each target (0s skipped), the freed slots listed under one lock per
  // 64.
  void UnrefDeviceAddresses(std::span<const uint64_t> targets) ABSL_LOCKS_EXCLUDED(slot_mu_);
  // Slots referenced now (tests). Memory ordering: relaxed.
  size_t device_slots_in_use() const { return slots_in_use_.load(std::memory_order_relaxed); }
  // Frees a Gpuva of this VM that no tree and no reader can reach any more (after the grace
  // period of its unmap): drops its slot reference.
  void DestroyVa(BindVa* va);
  // The prealloc step's Gpuva nodes: moves up to `n` nodes from the VM's cache of free ones to
  // `out` (one lock). The cache holds nodes RecycleVas kept (none in sanitizer builds, so that
  // ASan sees every node freed). Allocation-free.
  void TakeVas(size_t n, BindVaList& out) ABSL_LOCKS_EXCLUDED(va_cache_mu_);
  // DestroyVa for every node of `vas` (which ends empty), keeping up to kVaCacheMax nodes in
  // the cache, reset, for later binds (one lock).
  void RecycleVas(BindVaList& vas) ABSL_LOCKS_EXCLUDED(va_cache_mu_, slot_mu_);
  // A new job's lists get the capacity of an earlier job's (if the cache has one); a job being
  // destroyed clears its lists (dropping what they reference) and leaves their capacity in the
  // cache (up to kBuffersMax sets, none with lists longer than kBufferKeepMax). One lock each;
  // never allocate.
  void TakeBuffers(BindJob& job) ABSL_LOCKS_EXCLUDED(buffers_mu_);
  void ReturnBuffers(BindJob& job) ABSL_LOCKS_EXCLUDED(buffers_mu_);
  // Frees what the Gpuva and buffer caches hold (Close, the destructor).
  void DrainCaches() ABSL_LOCKS_EXCLUDED(buffers_mu_, va_cache_mu_);
  // The range tracker. Contract: the caller holds the VM resv, which is its lock.
  BindRanges& ranges() { return ranges_; }
  // Counts the changes of the VA tree and the range tracker (ApplyBind, PushLocked, Close), so
  // that a bind whose tree-side pre-allocation was made before a back-off can tell whether it
  // still holds (vm/bind_steps.h: PreallocBindTree). Contract: the caller holds the VM resv.
  uint64_t tree_changes() const { return tree_changes_; }
  void NoteTreeChange() { ++tree_changes_; }
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
  // The CPU fast path's test (see the top). Caller holds the VM resv.
  bool CanRunInlineLocked(BindJob& job);
  // The CPU fast path: executes the applied `job`, signals `out`, and returns the job, which
  // the caller retires (Retire) once it unlocked. Caller holds the VM resv. Allocation-free.
  std::unique_ptr<BindJob> RunInlineLocked(std::unique_ptr<BindJob> job,
                                           const fence::FenceRef& out) ABSL_LOCKS_EXCLUDED(pt_mu_);
  // Drops one reference of `target`'s slot (0: nothing); true if it was the last.
  bool DropDeviceAddressRef(uint64_t target);
  // Puts slots whose last reference went back on the free list (one lock).
  void FreeSlots(std::span<const uint64_t> targets) ABSL_LOCKS_EXCLUDED(slot_mu_);
  // Hands an executed job's unused page-table reservations back and queues it for cleanup.
  void Retire(std::unique_ptr<BindJob> job) ABSL_LOCKS_EXCLUDED(cleanup_mu_);
  void LinkPendingLocked(BindJob* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  void UnlinkPendingLocked(BindJob* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  // Executes (unmaps only, marking the VM unusable) a pushed job that will never run.
  void CatchUpLocked(BindJob* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  // Catches up every pending job whose finished fence signalled without running (killed).
  void CatchUpKilledLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pt_mu_);
  void CleanupLoop() ABSL_LOCKS_EXCLUDED(cleanup_mu_);
  bool CleanupReadyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(cleanup_mu_);
  bool CleanupDueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(cleanup_mu_);
  // Frees a batch of executed jobs (linked through cleanup_next_): one grace period for all.
  void Cleanup(BindJob* batch);

  Ref<Gpuvm> gpuvm_;
  std::unique_ptr<PageTable> pt_;
  std::unique_ptr<BindBackend> own_backend_;
  std::unique_ptr<sched::Scheduler> own_scheduler_;
  sched::Scheduler* scheduler_ = nullptr;
  std::atomic<bool> unusable_{false};
  std::atomic<bool> closed_{false};
  std::atomic<int> fault_at_entry_{-1};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> unfinished_{0};   // pushed, not yet through FreeJob
  std::atomic<int64_t> inline_runs_{0};  // binds_run_inline()
  fence::FenceContext inline_fences_{"vm-bind-cpu"};  // the CPU fast path's out-fences

  // The device-address window: each slot's host base (read by HostAddress through
  // std::atomic_ref) and reference count (atomic_ref), and the free list's links (under
  // slot_mu_). calloc'd: the OS supplies zero pages as they are first touched, so creating a VM
  // does not write the whole window.
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  size_t slot_count_ = kSlots;
  std::unique_ptr<std::byte*[], FreeDeleter> slot_host_;
  std::unique_ptr<uint32_t[], FreeDeleter> slot_refs_;
  std::unique_ptr<uint32_t[], FreeDeleter> slot_next_;
  std::atomic<size_t> slots_in_use_{0};
  absl::Mutex slot_mu_;
  uint32_t free_slot_ ABSL_GUARDED_BY(slot_mu_) = 0;   // head of the free list; 0: empty
  size_t fresh_slot_ ABSL_GUARDED_BY(slot_mu_) = 1;    // slots from here on were never used

  // Free Gpuva nodes (TakeVas / RecycleVas).
  static constexpr size_t kVaCacheMax = 2048;
  absl::Mutex va_cache_mu_;
  BindVaList va_cache_ ABSL_GUARDED_BY(va_cache_mu_);

  // TakeBuffers / ReturnBuffers (capacity reserved at construction: pushing never allocates).
  static constexpr size_t kBuffersMax = 32;
  static constexpr size_t kBufferKeepMax = 1024;
  absl::Mutex buffers_mu_;
  std::vector<BindJobBuffers> buffers_ ABSL_GUARDED_BY(buffers_mu_);

  // Guarded by the VM resv (gpuvm_->resv()), which no annotation can name: see ranges().
  BindRanges ranges_;
  uint64_t tree_changes_ = 0;

  // The page-table writer lock: RunJob, catch-up and Close. Never held while waiting for
  // anything else.
  absl::Mutex pt_mu_;
  BindJob* pending_head_ ABSL_GUARDED_BY(pt_mu_) = nullptr;  // pushed, not executed, in order
  BindJob* pending_tail_ ABSL_GUARDED_BY(pt_mu_) = nullptr;

  // Executed jobs wait here for the cleanup worker, which takes them in batches (one grace
  // period per batch): when kCleanupBatch jobs are queued, kCleanupDelay after the first one
  // was, or at once when someone waits (WaitIdle) — fewer wake-ups and grace periods competing
  // for the CPU with the bind path; memory is freed at most kCleanupDelay later. After a batch
  // the worker sleeps up to kCleanupDelay by the clock, so jobs queued meanwhile do not wake it
  // (no wake-up on the bind path while binds keep coming).
  static constexpr int kCleanupBatch = 32;
  static constexpr absl::Duration kCleanupDelay = absl::Microseconds(500);
  absl::Mutex cleanup_mu_;
  BindJob* cleanup_head_ ABSL_GUARDED_BY(cleanup_mu_) = nullptr;
  BindJob* cleanup_tail_ ABSL_GUARDED_BY(cleanup_mu_) = nullptr;
  int cleanup_queued_ ABSL_GUARDED_BY(cleanup_mu_) = 0;
  absl::Time cleanup_first_ ABSL_GUARDED_BY(cleanup_mu_);  // when the oldest queued job came
  int idle_waiters_ ABSL_GUARDED_BY(cleanup_mu_) = 0;      // in WaitIdle: clean up at once
  bool stop_cleanup_ ABSL_GUARDED_BY(cleanup_mu_) = false;
  std::thread cleanup_thread_;
};

}  // namespace vm

#endif  // UDRM_VM_BIND_VM_H_
