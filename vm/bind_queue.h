// vm::BindQueue — a VM_BIND submit queue (msm's MSM_SUBMITQUEUE_VM_BIND): a sched::Entity on
// the scheduler of a BindVm, with a priority.
//
// Submit() runs a bind (see vm/bind_vm.h and vm/bind_steps.h) and returns its out-fence, the bind
// job's finished fence, which signals once the page table reflects the bind (with an error if
// the job failed: the VM is then unusable). Bind() is Submit() and a wait.
//
// Lifetime: destroy every BindQueue of a BindVm before the BindVm. Destroying a queue kills its
// queued jobs (sched::Entity), which makes the VM unusable if any was still queued.
// Thread-safety: Submit/Bind from any number of threads at once.
#ifndef UDRM_VM_BIND_QUEUE_H_
#define UDRM_VM_BIND_QUEUE_H_

#include <memory>
#include <span>
#include <stop_token>

#include "absl/status/statusor.h"
#include "fence/fence.h"
#include "sched/entity.h"
#include "vm/bind_op.h"
#include "vm/bind_vm.h"

namespace vm {

class BindQueue {
 public:
  static absl::StatusOr<std::unique_ptr<BindQueue>> Create(
      BindVm& vm, sched::Priority priority = sched::Priority::kNormal);

  // The out-fence, or an error with nothing changed (see BindVm::Submit). Blocks on resv locks
  // only (interruptible by `cancel`).
  absl::StatusOr<fence::FenceRef> Submit(std::span<const BindOp> ops,
                                         std::span<const fence::FenceRef> in_fences = {},
                                         std::stop_token cancel = {}) {
    return vm_.Submit(*entity_, ops, in_fences, cancel);
  }
  // Submit, then waits for the out-fence (not interruptible once submitted); returns the
  // submit error or the out-fence's error. Memory ordering: after OK, every translation made
  // from then on reflects the bind.
  absl::Status Bind(std::span<const BindOp> ops, std::span<const fence::FenceRef> in_fences = {},
                    std::stop_token cancel = {});

  sched::Entity& entity() const { return *entity_; }
  BindVm& vm() const { return vm_; }

 private:
  BindQueue(BindVm& vm, std::unique_ptr<sched::Entity> entity)
      : vm_(vm), entity_(std::move(entity)) {}
  BindVm& vm_;
  std::unique_ptr<sched::Entity> entity_;
};

}  // namespace vm

#endif  // UDRM_VM_BIND_QUEUE_H_
