// vm_bind_walkthrough: the scenario of the seed thread ("drm/gpuvm: Add locking helpers", Rob
// Clark and Danilo Krummrich, June 2025) run step by step on udrm's asynchronous VM_BIND.
//
// One VM_BIND with two overlapping operations: MAP BO B over the second half of an existing
// mapping of BO A, then UNMAP a piece of what that MAP just mapped. The thread's point: the bind
// applies each operation to the VA tree at once (drm_gpuvm_sm_map / sm_unmap with callbacks), so
// the second operation sees the first, and records ONE list of page-table ops (msm_vm_op) that
// run_job later executes; every lock is taken and every allocation made before the tree changes,
// so nothing can fail half-way. The program prints the VA tree, the op list and the page table
// before and after each phase. It uses the bind steps of vm/bind_steps.h one by one (what
// BindQueue::Submit does in one call) so that the op list can be shown before the job runs, and
// an in-fence it signals by hand so that the page table can be shown before run_job.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "exec/exec.h"
#include "fence/fence_context.h"
#include "vm/bind_queue.h"
#include "vm/bind_steps.h"
#include "vm/bind_vm.h"
#include "vm/rcu.h"

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kLo = 0x100000;  // the part of the VA space the walkthrough shows
constexpr uint64_t kHi = 0x11a000;

struct Names {
  const vm::Bo* a;
  const vm::Bo* b;
  const vm::Bo* r_obj;
  std::string operator()(const vm::Bo* bo) const {
    if (bo == nullptr) return "(none)";
    if (bo == a) return "BO A";
    if (bo == b) return "BO B";
    if (bo == r_obj) return "VM resv object";
    return "another BO";
  }
};

std::string Range(uint64_t va, uint64_t range) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "[0x%06llx, 0x%06llx)", static_cast<unsigned long long>(va),
                static_cast<unsigned long long>(va + range));
  return buf;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

void PrintTree(const vm::BindVm& vm, const Names& names, const char* title) {
  std::printf("VA tree (drm_gpuvm) %s:\n", title);
  for (const vm::Gpuva* va : vm.gpuvm().All()) {
    std::printf("  va %s -> %s offset %s\n", Range(va->addr, va->range).c_str(),
                va->bo == nullptr ? "sparse" : names(va->bo).c_str(), Hex(va->offset).c_str());
  }
  if (vm.gpuvm().va_count() == 0) std::printf("  (empty)\n");
}

void PrintOps(std::span<const vm::BindOp> ops, const Names& names) {
  std::printf("VM_BIND ops, in order:\n");
  for (size_t i = 0; i < ops.size(); ++i) {
    const vm::BindOp& op = ops[i];
    const char* kind = op.kind == vm::BindOpKind::kMap       ? "MAP"
                       : op.kind == vm::BindOpKind::kMapNull ? "MAP_NULL"
                                                             : "UNMAP";
    std::printf("  op %zu: %-5s %s", i, kind, Range(op.va, op.range).c_str());
    if (op.bo != nullptr) {
      std::printf(" <- %s offset %s", names(op.bo).c_str(), Hex(op.bo_offset).c_str());
    }
    std::printf("\n");
  }
}

void PrintOpList(const vm::BindJob& job, const Names& names) {
  std::printf("op list of the job (msm_vm_op list, ONE for the whole bind), for run_job:\n");
  for (size_t i = 0; i < job.entries().size(); ++i) {
    const vm::BindEntry& e = job.entries()[i];
    if (e.kind == vm::BindEntry::Kind::kMap) {
      std::printf("  [%zu] MAP   %s (from op %zu)\n", i, Range(e.va, e.range).c_str(), e.op);
    } else {
      std::printf("  [%zu] UNMAP %s (from op %zu; holds a reference on %s until cleanup)\n", i,
                  Range(e.va, e.range).c_str(), e.op, names(e.bo.get()).c_str());
    }
  }
}

// The page table over [kLo, kHi), page by page, runs of pages that continue each other on one
// line. The caller is a registered RCU reader.
void PrintPageTable(const vm::BindVm& vm, vm::Bo& a, vm::Bo& b, const char* title) {
  std::printf("page table %s:\n", title);
  auto describe = [&](uint64_t p, std::string& what, uint64_t& off) {
    vm::RcuReadSection section;
    const vm::Translation t = vm.page_table().Translate(p);
    const std::byte* host = vm.HostAddress(t);
    off = 0;
    if (!t.valid) {
      what = "fault";
    } else if (host == nullptr) {
      what = "sparse (reads zero)";
    } else if (host >= a.memory().data() && host < a.memory().data() + a.size()) {
      what = "BO A";
      off = static_cast<uint64_t>(host - a.memory().data());
    } else if (host >= b.memory().data() && host < b.memory().data() + b.size()) {
      what = "BO B";
      off = static_cast<uint64_t>(host - b.memory().data());
    } else {
      what = "unknown memory";
    }
  };
  uint64_t start = kLo;
  std::string what;
  uint64_t off = 0;
  describe(kLo, what, off);
  const uint64_t first_off = off;
  uint64_t run_off = first_off;
  for (uint64_t p = kLo + kPage; p <= kHi; p += kPage) {
    std::string w;
    uint64_t o = 0;
    if (p < kHi) describe(p, w, o);
    const bool continues = p < kHi && w == what && (w.rfind("BO", 0) != 0 || o == off + kPage);
    if (continues) {
      off = o;
      continue;
    }
    std::printf("  pages %s: %s", Range(start, p - start).c_str(), what.c_str());
    if (what.rfind("BO", 0) == 0) std::printf(" offset %s", Hex(run_off).c_str());
    std::printf("\n");
    start = p;
    what = w;
    off = run_off = o;
  }
}

}  // namespace

int main() {
  vm::RcuReaderThread rcu;
  std::unique_ptr<vm::BindVm> vm = *vm::BindVm::Create("walkthrough", {});
  std::unique_ptr<vm::BindQueue> queue = *vm::BindQueue::Create(*vm);
  vm::Ref<vm::Bo> a = vm::Bo::Create(16 * kPage);
  vm::Ref<vm::Bo> b = vm::Bo::Create(16 * kPage);
  const Names names{a.get(), b.get(), &vm->gpuvm().r_obj()};

  std::printf("== Setup: an earlier VM_BIND mapped BO A ==\n");
  const vm::BindOp setup = vm::BindOp::Map(0x100000, 16 * kPage, a.get(), 0);
  if (absl::Status s = queue->Bind({&setup, 1}); !s.ok()) {
    std::printf("setup bind failed: %s\n", s.ToString().c_str());
    return 1;
  }
  PrintTree(*vm, names, "before the bind");
  PrintPageTable(*vm, *a, *b, "before the bind");

  std::printf("\n== The bind: a MAP, then an UNMAP overlapping what the MAP maps ==\n");
  const vm::BindOp ops[] = {vm::BindOp::Map(0x108000, 16 * kPage, b.get(), 0),
                            vm::BindOp::Unmap(0x110000, 4 * kPage)};
  PrintOps(ops, names);
  // An in-fence we signal by hand: the job waits for it, so the page table can be shown while
  // the VA tree has already changed.
  fence::FenceContext ctx("walkthrough");
  fence::FenceRef in_fence = ctx.NewFence();

  std::printf("\nvm_bind {\n");
  if (absl::Status s = vm::ValidateBind(*vm, ops, {&in_fence, 1}); !s.ok()) {
    std::printf("validate failed: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("  validate every op (bad input returns an error here, nothing changed): OK\n");
  std::optional<exec::Exec> exec;
  exec.emplace(exec::Exec::kIgnoreDuplicates | exec::Exec::kInterruptibleWait);
  if (absl::Status s = vm::LockBind(*vm, *exec, ops); !s.ok()) {
    std::printf("lock failed: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf(
      "  for_each_vm_bind_operation: drm_gpuvm_sm_xyz_exec_lock() — locked, before any "
      "change:");
  for (exec::Object* o : exec->objects()) {
    std::printf(" [%s]", names(static_cast<vm::Bo*>(o)).c_str());
  }
  std::printf("\n");
  absl::StatusOr<vm::BindPlan> plan = vm::PlanBind(vm->gpuvm(), ops);
  if (!plan.ok()) {
    std::printf("planning failed: %s\n", plan.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<vm::BindJob>> job =
      vm::PreallocBind(*vm, queue->entity(), ops, {&in_fence, 1});
  if (!job.ok()) {
    std::printf("pre-allocation failed: %s\n", job.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "  pre-allocate exactly what the list needs (planned before the tree changes): %zu Gpuva "
      "nodes, %zu op-list entries, one page-table reservation for the whole list\n",
      plan->vas, plan->entries.size());
  vm::ApplyBind(*vm, ops, **job);
  std::printf(
      "  for_each_vm_bind_operation: drm_gpuvm_sm_xyz() — modify the VA tree at once, "
      "append custom ops\n");
  PrintOpList(**job, names);
  fence::FenceRef out = vm->PushLocked(queue->entity(), *std::move(job), ops);
  exec.reset();  // unlocks every object
  std::printf("  drm_sched_entity_push_job() — out-fence %s\n}\n",
              out->IsSignaled() ? "signalled" : "not signalled yet");
  PrintTree(*vm, names, "after vm_bind returned (already final)");
  PrintPageTable(*vm, *a, *b, "after vm_bind returned, before run_job (unchanged)");

  std::printf("\n== The in-fence signals: run_job executes the op list on the page table ==\n");
  in_fence->Signal();
  if (absl::Status s = out->Wait(); !s.ok() || !out->error().ok()) {
    std::printf("bind job failed\n");
    return 1;
  }
  std::printf("run_job { for_each_custom_op() { modify page tables } } — out-fence signalled\n");
  PrintPageTable(*vm, *a, *b, "after run_job");
  vm->WaitIdle();
  std::printf(
      "cleanup (free_job): one grace period for the whole job, then unused "
      "pre-allocations freed and the unmap ops' BO references dropped (%lld jobs in "
      "flight)\n",
      static_cast<long long>(vm->jobs_in_flight()));
  queue.reset();
  return 0;
}
