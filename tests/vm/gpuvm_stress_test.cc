// Concurrency: 8 threads binding on two VMs that share external BOs. Each bind takes the VM's
// driver lock, locks everything through GpuvmExec + SmMapExecLock/SmUnmapExecLock (with
// ww slow-path injection on), applies the ops to the tree and the VmBos, and adds a fence with
// ResvAddFence. Checks: no deadlock, every fence in every resv its exec locked, the trees are
// consistent, and every VmBo/BO/VM is freed at the end. Knob: GPUVM_STRESS_ITERS per thread.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <set>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "base/sanitizers.h"
#include "ww/ww_mutex.h"
#include "fence/fence_context.h"
#include "tests/vm/gpuvm_test_util.h"
#include "vm/gpuvm_exec.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

constexpr uint64_t kVaSize = 256;
constexpr uint64_t kBoSize = 256;

struct Vm {
  absl::Mutex mu;  // the driver's VM lock: serialises the tree
  Ref<Gpuvm> vm;
  Ref<Bo> priv;
  VaPool pool ABSL_GUARDED_BY(mu);
};

// Applies one op list, keeping the VmBo links (the gpuva locks are held by the exec).
void Apply(Vm& v, const Ops& ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(v.mu) {
  Gpuvm& vm = *v.vm;
  auto link = [&](Gpuva* va) {
    if (va->bo == nullptr) return;
    Ref<VmBo> vb = VmBo::Obtain(vm, *va->bo);
    vb->Link(va);
    vb->ExtobjAdd();
  };
  for (const Op& op : ops) {
    if (auto* m = std::get_if<OpMap>(&op)) {
      Gpuva* va = v.pool.New();
      ApplyMap(vm, va, *m);
      link(va);
    } else if (auto* r = std::get_if<OpRemap>(&op)) {
      Gpuva* prev = r->prev ? v.pool.New() : nullptr;
      Gpuva* next = r->next ? v.pool.New() : nullptr;
      Gpuva* old = r->unmap.va;
      Ref<VmBo> keep_alive = old->vm_bo ? Ref<VmBo>::Share(old->vm_bo) : Ref<VmBo>();
      VmBo::Unlink(old);
      ApplyRemap(vm, prev, next, *r);
      if (prev) link(prev);
      if (next) link(next);
    } else {
      const OpUnmap& u = std::get<OpUnmap>(op);
      VmBo::Unlink(u.va);
      ApplyUnmap(vm, u);
    }
  }
  v.pool.FreeUnused();
}

struct Record {
  fence::FenceRef fence;
  std::vector<fence::Resv*> resvs;
};

TEST(GpuvmStressTest, ConcurrentBindsOnVmsSharingBos) {
  const char* env = std::getenv("GPUVM_STRESS_ITERS");
  const int iters = env ? std::atoi(env) : (UDRM_SANITIZER ? 60 : 200);
  const bool was = ww::SlowpathInjection();
  ww::SetSlowpathInjection(true);
  {
    Ref<Bo> shared[4];
    for (auto& b : shared) b = Bo::Create(kBoSize);
    Vm vms[2];
    for (Vm& v : vms) {
      v.vm = *Gpuvm::Create("stress", 0, kVaSize, 0, 0);
      v.priv = Bo::CreateSharingResv(kBoSize, v.vm->r_obj());
    }
    std::vector<std::vector<Record>> records(8);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(1000 + t);
        Vm& v = vms[t % 2];
        for (int i = 0; i < iters; ++i) {
          const uint64_t addr = rng() % (kVaSize - 16);
          const uint64_t range = 1 + rng() % 16;
          const int which = static_cast<int>(rng() % 6);
          Bo* bo = which < 4 ? shared[which].get() : which == 4 ? v.priv.get() : nullptr;
          const bool is_map = rng() % 3 != 0;
          const OpMap req{addr, range, bo, bo ? addr : 0};
          absl::MutexLock l(&v.mu);
          GpuvmExec ve(*v.vm, exec::Exec::kIgnoreDuplicates, 1);
          absl::Status s = ve.ExecLock([&](GpuvmExec& g) -> absl::Status {
            if (is_map) return SmMapExecLock(*v.vm, g.exec(), 1, {req});
            absl::Status st = SmUnmapExecLock(*v.vm, g.exec(), addr, range);
            return st;
          });
          ASSERT_TRUE(s.ok()) << s;
          auto ops = is_map ? SmMapOpsCreate(*v.vm, {req}) : SmUnmapOpsCreate(*v.vm, addr, range);
          ASSERT_TRUE(ops.ok());
          Apply(v, *ops);
          Record rec{fence::Fence::Create(fence::FenceContext::Allocate(), 1), {}};
          for (exec::Object* o : ve.exec().objects()) rec.resvs.push_back(&o->resv());
          // Unmapped VAs' BOs are locked but have no slot: give every locked resv one.
          for (fence::Resv* r : rec.resvs) ASSERT_TRUE(r->Reserve(1).ok());
          ResvAddFence(*v.vm, ve.exec(), rec.fence, fence::ResvUsage::kBookkeep,
                       fence::ResvUsage::kBookkeep);
          records[t].push_back(std::move(rec));
        }
      });
    }
    for (auto& th : threads) th.join();

    // Every fence is in every resv its exec locked.
    size_t checked = 0;
    for (const auto& per_thread : records) {
      for (const Record& rec : per_thread) {
        for (fence::Resv* r : rec.resvs) {
          bool found = false;
          for (const auto& e : r->GetFences(fence::ResvUsage::kBookkeep)) found |= e.fence == rec.fence;
          EXPECT_TRUE(found);
          ++checked;
        }
        rec.fence->Signal();
      }
    }
    EXPECT_GT(checked, 8u * iters);

    // Tear down: lock everything, unlink and remove every VA.
    for (Vm& v : vms) {
      absl::MutexLock l(&v.mu);
      GpuvmExec ve(*v.vm, exec::Exec::kIgnoreDuplicates, 0);
      ASSERT_TRUE(ve.ExecLockRange(0, kVaSize).ok());
      std::vector<Gpuva*> all;
      for (Gpuva* va : v.vm->All()) all.push_back(va);
      for (Gpuva* va : all) {
        VmBo::Unlink(va);
        v.vm->Remove(va);
      }
      EXPECT_TRUE(v.vm->ExtobjsForTesting().empty());
      v.pool.FreeUnused();
    }
  }
  ww::SetSlowpathInjection(was);
  EXPECT_EQ(Gpuvm::live_count(), 0);
  EXPECT_EQ(Bo::live_count(), 0);
  EXPECT_EQ(VmBo::live_count(), 0);
}

}  // namespace
}  // namespace vm
