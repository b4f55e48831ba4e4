// vm::BindJob — the sched::Job of one VM_BIND (msm_vm_bind_job), and vm::BindBackend, the
// sched::Backend that runs bind jobs (msm_vma_job_run / msm_vma_job_free).
//
// A BindJob carries everything its bind pre-allocated (see vm/bind_steps.h): the op list, the
// page-table reservation of the whole list, the Gpuva nodes and VmBos not used yet, the Gpuvas the
// bind removed from the tree (freed at cleanup), and, once run, the Invalidation of its page-table
// changes.
//
// BindBackend::RunJob executes the op list on the VM's page table in order (vm/bind_vm.h:
// BindVm::RunJob). FreeJob returns the page tables the op list did not use (never linked: no
// grace period needed) and hands the job to the VM's cleanup worker, which waits for one grace
// period per batch of jobs (PageTable::Release), then drops the BO references and frees the
// removed Gpuvas (and with them their device-address slots) — so the scheduler thread never
// blocks. One BindBackend may serve the bind jobs of several VMs.
// Thread-safety: a job belongs to its bind call until Push, then to the scheduler, then to the
// cleanup worker.
#ifndef UDRM_VM_BIND_JOB_H_
#define UDRM_VM_BIND_JOB_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fence/fence.h"
#include "fence/resv.h"
#include "sched/backend.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "vm/bind_op.h"
#include "vm/bind_plan.h"
#include "vm/bind_ranges.h"
#include "vm/gpuva.h"
#include "vm/page_table.h"
#include "vm/vm_bo.h"

namespace vm {

class BindVm;

// The driver's VA (msm_gem_vma): a Gpuva plus what the page table needs to re-create a piece of
// it (a remap keeps the surviving parts without page-table work, as msm).
struct BindVa : Gpuva {
  uint64_t target = 0;  // device address of addr (0: sparse)
  uint32_t pte_flags = 0;
  PageSize page_size = PageSize::k4K;
  BindVa* list_next = nullptr;  // BindVaList's link; a node in the tree is in no list
};

// A list of BindVa nodes linked through list_next (a job's spare nodes, the VAs it removed, the
// VM's cache of free nodes): adding and taking never allocate. Not thread-safe. It does not free
// its nodes: it must be empty when destroyed (whoever owns the nodes hands them on first).
class BindVaList {
 public:
  BindVaList() = default;
  BindVaList(const BindVaList&) = delete;
  BindVaList& operator=(const BindVaList&) = delete;
  ~BindVaList();

  bool empty() const { return head_ == nullptr; }
  size_t size() const { return size_; }
  void Push(BindVa* va) {
    va->list_next = head_;
    head_ = va;
    ++size_;
  }
  // The most recently pushed node. Contract: not empty.
  BindVa* Pop() {
    BindVa* va = head_;
    head_ = va->list_next;
    va->list_next = nullptr;
    --size_;
    return va;
  }

 private:
  BindVa* head_ = nullptr;
  size_t size_ = 0;
};

// The heap storage of a bind job's lists, kept across the jobs of a VM (BindVm::TakeBuffers /
// ReturnBuffers) so that a stream of binds does not allocate and free them every time.
struct BindJobBuffers {
  std::vector<BindEntry> entries;
  std::vector<PlannedEntry> plan;
  std::vector<Ref<VmBo>> vm_bos;
  std::vector<uint64_t> targets;
  std::vector<AddrRange> ranges;
  std::vector<fence::Resv*> extobj_resvs;
};

class BindJob final : public sched::Job {
 public:
  explicit BindJob(BindVm* vm) : vm_(vm) {}
  ~BindJob() override;

  BindVm* vm() const { return vm_; }
  // Exchanges the lists below with `b`'s (BindVm's buffer cache).
  void SwapBuffers(BindJobBuffers& b);
  // The op list (msm's job->vm_ops). Capacity reserved by the prealloc step.
  const std::vector<BindEntry>& entries() const { return entries_; }

  // The state below belongs to the bind steps (vm/bind_steps.h) and BindVm; drivers only read
  // entries().
  std::vector<BindEntry> entries_;
  // The page-table reservation of the whole op list: the planned Map/Unmap calls' ListBound,
  // reserved at once (vm/bind_steps.h: ReservePageTables). Every entry's Map/Unmap takes from it.
  Prealloc tables_;
  std::vector<PlannedEntry> plan_;                 // what ApplyBind must append, in order
  BindVaList free_vas_;                            // pre-allocated nodes (owned)
  BindVaList removed_vas_;                         // removed from the tree by ApplyBind (owned)
  size_t removed_planned_ = 0;                     // the plan's count of them (BindPlan::removed)
  std::vector<Ref<VmBo>> vm_bos_;                  // one per BindOp (null: no BO)
  std::vector<uint64_t> targets_;                  // one per BindOp (device address of bo_offset)
  // The tree nodes of ApplyBind's inserts (one per planned Gpuva); released when ApplyBind ends.
  std::optional<Gpuvm::InsertReservation> inserts_;
  std::vector<AddrRange> ranges_;                  // the ops' VA ranges (range tracker)
  // The resvs of the external BOs the ops map, each once: the push step adds the out-fence to
  // each (the exec reserved one fence slot per resv, however many ops map its BO).
  std::vector<fence::Resv*> extobj_resvs_;
  BindRanges::Nodes range_nodes_;                  // for BindRanges::Record at push
  Invalidation inv_;
  fence::FenceRef finished_;  // set at push, before the job is linked; under BindVm::pt_mu_
  bool ran_ = false;          // the op list was executed (RunJob or catch-up); under BindVm::pt_mu_
  // BindVm's list of pushed jobs not executed yet, in push order; under BindVm::pt_mu_.
  BindJob* pending_prev_ = nullptr;
  BindJob* pending_next_ = nullptr;
  BindJob* cleanup_next_ = nullptr;  // BindVm's cleanup list; under BindVm::cleanup_mu_

 private:
  BindVm* const vm_;
};

class BindBackend final : public sched::Backend {
 public:
  absl::StatusOr<fence::FenceRef> RunJob(sched::Job& job) override;
  void FreeJob(std::unique_ptr<sched::Job> job) override;
};

// A scheduler for bind jobs as msm makes one: credit limit 1, FIFO, no timeout. `backend` is a
// BindBackend, or one that forwards RunJob and FreeJob to one (tests wrap it to observe runs).
absl::StatusOr<std::unique_ptr<sched::Scheduler>> CreateBindScheduler(sched::Backend* backend,
                                                                      std::string name);

}  // namespace vm

#endif  // UDRM_VM_BIND_JOB_H_
