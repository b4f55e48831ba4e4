#include "vm/bind_job.h"

#include <utility>

#include "base/check.h"

#include "vm/bind_steps.h"
#include "vm/bind_vm.h"

namespace vm {

BindVaList::~BindVaList() { UDRM_CHECK(head_ == nullptr, "BindVaList destroyed with nodes"); }

BindJob::~BindJob() {
  // Error paths of the bind call (before Push) and cleaned-up jobs: hand back what is left.
  UnreservePageTables(vm_->page_table(), tables_);
  vm_->RecycleVas(removed_vas_);
  vm_->RecycleVas(free_vas_);  // never in the tree: no slot reference
  // The job's own references to the slots it assigned: a cleaned-up job ran and its grace
  // period passed; a job that never reached Push wrote no page-table entry.
  vm_->UnrefDeviceAddresses(targets_);
  vm_->ReturnBuffers(*this);
}

void BindJob::SwapBuffers(BindJobBuffers& b) {
  entries_.swap(b.entries);
  plan_.swap(b.plan);
  vm_bos_.swap(b.vm_bos);
  targets_.swap(b.targets);
  ranges_.swap(b.ranges);
  extobj_resvs_.swap(b.extobj_resvs);
}

absl::StatusOr<fence::FenceRef> BindBackend::RunJob(sched::Job& job) {
  auto& bind = static_cast<BindJob&>(job);
  return bind.vm()->RunJob(bind);
}

void BindBackend::FreeJob(std::unique_ptr<sched::Job> job) {
  std::unique_ptr<BindJob> bind(static_cast<BindJob*>(job.release()));
  BindVm* vm = bind->vm();
  vm->FreeJob(std::move(bind));
}

absl::StatusOr<std::unique_ptr<sched::Scheduler>> CreateBindScheduler(sched::Backend* backend,
                                                                      std::string name) {
  sched::SchedulerOptions o;
  o.name = std::move(name);
  o.credit_limit = 1;
  o.policy = sched::Policy::kFifo;
  o.timeout = absl::InfiniteDuration();
  return sched::Scheduler::Create(backend, std::move(o));
}

}  // namespace vm
