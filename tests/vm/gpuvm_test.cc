// vm::Gpuvm tree, range rules, reference counting and VmBo lifetime.
#include "vm/gpuvm.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "tests/vm/gpuvm_test_util.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

constexpr uint64_t kPage = 0x1000;

Ref<Gpuvm> MakeVm(uint32_t flags = 0) {
  Gpuvm::Options o;
  o.granule = kPage;
  o.flags = flags;
  // VA space [0x10000, 0x110000), kernel node [0x100000, 0x110000).
  auto vm = Gpuvm::Create("test", 0x10000, 0x100000, 0x100000, 0x10000, std::move(o));
  EXPECT_TRUE(vm.ok()) << vm.status();
  return *std::move(vm);
}

class GpuvmTest : public ::testing::Test {
 protected:
  void TearDown() override {
    EXPECT_EQ(Gpuvm::live_count(), 0);
    EXPECT_EQ(Bo::live_count(), 0);
    EXPECT_EQ(VmBo::live_count(), 0);
  }
};

// drm_gpuvm_init's argument checks.
TEST_F(GpuvmTest, CreateRejectsBadArguments) {
  EXPECT_EQ(Gpuvm::Create("x", UINT64_MAX - 10, 20, 0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Gpuvm::Create("x", 0, 0, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  Gpuvm::Options o;
  o.granule = 3;
  EXPECT_EQ(Gpuvm::Create("x", 0, 12, 0, 0, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.granule = kPage;
  EXPECT_EQ(Gpuvm::Create("x", 0, kPage * 4, 1, kPage, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Gpuvm::Create("x", kPage, kPage * 4, 0, kPage, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = Gpuvm::Create("x", 0, kPage * 4, 0, 0, o);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)->va_count(), 0u);  // no kernel node for reserve_range 0
}

// drm_gpuvm_range_valid, including the zero-range case the kernel lets through.
TEST_F(GpuvmTest, RangeValidMatchesKernel) {
  Ref<Gpuvm> vm = MakeVm();
  EXPECT_TRUE(vm->RangeValid(0x10000, kPage));
  EXPECT_TRUE(vm->RangeValid(0x10000, 0xF0000));
  EXPECT_FALSE(vm->RangeValid(0x10000, 0xF1000));  // overlaps the kernel node
  EXPECT_FALSE(vm->RangeValid(0xF000, kPage));     // below start
  EXPECT_FALSE(vm->RangeValid(0x100000, kPage));   // the kernel node
  EXPECT_FALSE(vm->RangeValid(UINT64_MAX - kPage + 1, kPage * 2));  // overflow
  EXPECT_TRUE(vm->RangeValid(0x20000, 0));
  EXPECT_EQ(vm->CheckRange(0x20000, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(vm->CheckRange(0x20001, kPage).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(vm->CheckRange(0x20000, kPage + 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(vm->CheckRange(0x20000, kPage).ok());
}

// drm_gpuva_insert's errors leave the tree as it was; find* answer like the interval tree.
TEST_F(GpuvmTest, InsertFindAndErrors) {
  Ref<Gpuvm> vm = MakeVm();
  Ref<Bo> bo = Bo::Create(4 * kPage);
  VaPool pool;
  Gpuva* a = pool.New(0x20000, 2 * kPage, bo.get(), 0);
  Gpuva* b = pool.New(0x23000, kPage, nullptr, 0);
  ASSERT_TRUE(vm->Insert(a).ok());
  ASSERT_TRUE(vm->Insert(b).ok());
  EXPECT_EQ(vm->va_count(), 3u);  // + kernel node
  EXPECT_EQ(vm->Insert(pool.New(0x21000, 2 * kPage)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(vm->Insert(pool.New(0xFF000, 2 * kPage)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(vm->Insert(pool.New(0x30000, 0)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(vm->Insert(pool.New(0x30000, kPage, bo.get(), 4 * kPage)).code(),
            absl::StatusCode::kInvalidArgument);  // beyond the BO
  EXPECT_EQ(vm->Insert(pool.New(0x30000, kPage, bo.get(), 0x10)).code(),
            absl::StatusCode::kInvalidArgument);  // misaligned offset
  EXPECT_EQ(vm->va_count(), 3u);

  EXPECT_EQ(vm->FindFirst(0x21000, kPage), a);
  EXPECT_EQ(vm->FindFirst(0x1F000, kPage), nullptr);
  EXPECT_EQ(vm->FindFirst(0x1F000, 0x5000), a);
  EXPECT_EQ(vm->FindFirst(0x22000, 0x2000), b);
  EXPECT_EQ(vm->FindFirst(0x21000, 0), nullptr);
  EXPECT_EQ(vm->Find(0x20000, 2 * kPage), a);
  EXPECT_EQ(vm->Find(0x20000, kPage), nullptr);
  EXPECT_EQ(vm->FindPrev(0x22000), a);
  EXPECT_EQ(vm->FindPrev(0x23000), nullptr);  // gap at 0x22000
  EXPECT_EQ(vm->FindPrev(0x10000), nullptr);  // start-1 outside the VM
  EXPECT_EQ(vm->FindNext(0x23000), b);
  EXPECT_EQ(vm->FindNext(0x100000), nullptr);  // the kernel node is not valid
  EXPECT_TRUE(vm->IntervalEmpty(0x24000, 0x10000));
  EXPECT_FALSE(vm->IntervalEmpty(0x10000, 0x11000));
  VaPool::Clear(*vm);
}

// for_each_va_range_safe: visits the overlapping VAs (kernel node included) and tolerates
// removing the current one.
TEST_F(GpuvmTest, RangeIterationToleratesRemoval) {
  Ref<Gpuvm> vm = MakeVm();
  VaPool pool;
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(vm->Insert(pool.New(0x20000 + 2 * i * kPage, kPage)).ok());
  std::vector<uint64_t> seen;
  for (Gpuva* va : vm->Range(0x22000, 0x2A000)) {
    seen.push_back(va->addr);
    vm->Remove(va);
  }
  EXPECT_EQ(seen, (std::vector<uint64_t>{0x22000, 0x24000, 0x26000, 0x28000}));
  EXPECT_EQ(vm->va_count(), 5u);
  std::vector<Gpuva*> all;
  for (Gpuva* va : vm->Range(0xFF000, 0x110000)) all.push_back(va);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], &vm->kernel_node());
  VaPool::Clear(*vm);
}

// Every inserted VA holds a VM reference: the VM lives until the last VA is removed.
TEST_F(GpuvmTest, VasHoldVmReferences) {
  VaPool pool;
  Gpuvm* raw;
  Gpuva* va = pool.New(0x20000, kPage);
  {
    Ref<Gpuvm> vm = MakeVm();
    raw = vm.get();
    ASSERT_TRUE(vm->Insert(va).ok());
  }
  EXPECT_EQ(Gpuvm::live_count(), 1);
  raw->Remove(va);  // the last reference: Fini
  EXPECT_EQ(Gpuvm::live_count(), 0);
  // RemoveRun drops the references of all its VAs, the last one freeing the VM.
  Gpuva* run[] = {pool.New(0x20000, kPage), pool.New(0x21000, kPage), pool.New(0x22000, kPage)};
  {
    Ref<Gpuvm> vm = MakeVm();
    raw = vm.get();
    for (Gpuva* v : run) ASSERT_TRUE(vm->Insert(v).ok());
  }
  EXPECT_EQ(Gpuvm::live_count(), 1);
  raw->RemoveRun(run);
  EXPECT_EQ(Gpuvm::live_count(), 0);
}

// drm_gpuva_remove(kernel node) and a VM freed with VAs left are contract crashes.
TEST_F(GpuvmTest, ContractCrashes) {
  EXPECT_DEATH(
      {
        Ref<Gpuvm> vm = MakeVm();
        vm->Remove(const_cast<Gpuva*>(&vm->kernel_node()));
      },
      "kernel node");
  EXPECT_DEATH(
      {
        Ref<Gpuvm> vm = MakeVm();
        Gpuva va;
        va.addr = 0x20000;
        va.range = kPage;
        (void)vm->Insert(&va);
        vm->Put();  // drops the VA's reference behind its back
        vm.reset();
      },
      "VAs still in its tree");
}

// RemoveRun: a run of consecutive VAs goes in one call, with their VM references; the VAs
// before and after stay; VAs that are not consecutive in the tree are a contract crash.
TEST_F(GpuvmTest, RemoveRunRemovesConsecutiveVas) {
  auto vm = *Gpuvm::Create("run", 0, 1 << 20, 0, 0);
  std::vector<std::unique_ptr<Gpuva>> vas;
  for (uint64_t i = 0; i < 200; ++i) {  // several btree leaves
    vas.push_back(std::make_unique<Gpuva>());
    vas.back()->addr = i * 16;
    vas.back()->range = 8 + (i % 3) * 4;
    ASSERT_TRUE(vm->Insert(vas.back().get()).ok());
  }
  const size_t height = vm->tree_height();
  EXPECT_GE(height, 2u);
  std::vector<Gpuva*> run;
  for (size_t i = 30; i < 170; ++i) run.push_back(vas[i].get());
  vm->RemoveRun(run);
  EXPECT_EQ(vm->va_count(), 60u);
  for (size_t i = 0; i < vas.size(); ++i) {
    const bool removed = i >= 30 && i < 170;
    EXPECT_EQ(vas[i]->vm, removed ? nullptr : vm.get()) << i;
    EXPECT_EQ(vm->Find(vas[i]->addr, vas[i]->range), removed ? nullptr : vas[i].get()) << i;
  }
  // The tree is still ordered and searchable: iteration, and inserts into the hole.
  uint64_t last = 0;
  size_t seen = 0;
  for (Gpuva* va : vm->All()) {
    EXPECT_TRUE(seen == 0 || va->addr > last);
    last = va->addr;
    ++seen;
  }
  EXPECT_EQ(seen, 60u);
  ASSERT_TRUE(vm->Insert(vas[100].get()).ok());
  EXPECT_EQ(vm->FindFirst(30 * 16, 140 * 16), vas[100].get());
  vm->RemoveRun({});  // nothing
  EXPECT_EQ(vm->va_count(), 61u);
  EXPECT_DEATH(vm->RemoveRun(std::vector<Gpuva*>{vas[10].get(), vas[12].get()}),
               "not consecutive");
  EXPECT_DEATH(vm->RemoveRun(std::vector<Gpuva*>{vas[100].get(), vas[171].get()}),
               "not consecutive");
  EXPECT_DEATH(vm->RemoveRun(std::vector<Gpuva*>{vas[40].get()}), "not in the tree");
  // The rest, the whole tree at once (btree's clear), and the VM references with it.
  run.clear();
  for (Gpuva* va : vm->All()) run.push_back(va);
  vm->RemoveRun(run);
  EXPECT_EQ(vm->va_count(), 0u);
  for (auto& va : vas) EXPECT_EQ(va->vm, nullptr);
}

// vm_bo: unique per (VM, BO), linked VAs hold it, the last put frees it and its references.
TEST_F(GpuvmTest, VmBoObtainLinkUnlinkPut) {
  Ref<Gpuvm> vm = MakeVm();
  Ref<Bo> bo = Bo::Create(4 * kPage);
  VaPool pool;
  ASSERT_TRUE(bo->resv().TryLock());
  Ref<VmBo> vb = VmBo::Obtain(*vm, *bo);
  EXPECT_EQ(VmBo::Obtain(*vm, *bo), vb);
  EXPECT_EQ(VmBo::Find(*vm, *bo), vb);
  Gpuva* va = pool.New(0x20000, kPage, bo.get(), 0);
  ASSERT_TRUE(vm->Insert(va).ok());
  vb->Link(va);
  EXPECT_EQ(va->vm_bo, vb.get());
  Ops ops = BoUnmapOpsCreate(*vb);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(std::get<OpUnmap>(ops[0]).va, va);
  vb.reset();  // the VA still holds it
  EXPECT_EQ(VmBo::live_count(), 1);
  vm->Remove(va);
  VmBo::Unlink(va);  // last reference
  EXPECT_EQ(VmBo::live_count(), 0);
  EXPECT_EQ(VmBo::Find(*vm, *bo), Ref<VmBo>());
  bo->resv().Unlock();
}

// ObtainPrealloc drops the preallocated VmBo when one exists; immediate mode takes gpuva_mu.
TEST_F(GpuvmTest, ObtainPreallocAndDeferredPut) {
  Ref<Gpuvm> vm = MakeVm(Gpuvm::kImmediateMode);
  Ref<Bo> bo = Bo::Create(kPage);
  Ref<VmBo> first = VmBo::ObtainPrealloc(VmBo::Create(*vm, *bo));
  Ref<VmBo> second = VmBo::ObtainPrealloc(VmBo::Create(*vm, *bo));
  EXPECT_EQ(first, second);
  EXPECT_EQ(VmBo::live_count(), 1);
  second.reset();
  first.release()->PutDeferred();  // last reference: queued, not freed
  EXPECT_EQ(VmBo::live_count(), 1);
  {
    absl::MutexLock l(&bo->gpuva_mu());
    EXPECT_EQ(VmBo::Find(*vm, *bo), Ref<VmBo>());  // already out of the BO's list
  }
  vm->DeferredCleanup();
  EXPECT_EQ(VmBo::live_count(), 0);
}

// A last VmBo put without the gpuva lock is a contract crash.
TEST_F(GpuvmTest, LastPutWithoutGpuvaLockCrashes) {
  EXPECT_DEATH(
      {
        Ref<Gpuvm> vm = MakeVm();
        Ref<Bo> bo = Bo::Create(kPage);
        bo->resv().TryLock();
        Ref<VmBo> vb = VmBo::Obtain(*vm, *bo);
        bo->resv().Unlock();
        vb.reset();
      },
      "gpuva lock");
}

// Private BOs share the VM's resv and are not extobjs; extobj_add is idempotent.
TEST_F(GpuvmTest, ExtobjAndEvictLists) {
  Ref<Gpuvm> vm = MakeVm();
  Ref<Bo> ext = Bo::Create(kPage);
  Ref<Bo> priv = Bo::CreateSharingResv(kPage, vm->r_obj());
  EXPECT_EQ(&priv->resv(), &vm->resv());
  EXPECT_TRUE(vm->IsExtobj(*ext));
  EXPECT_FALSE(vm->IsExtobj(*priv));
  ASSERT_TRUE(ext->resv().TryLock());
  ASSERT_TRUE(vm->resv().TryLock());
  Ref<VmBo> ve = VmBo::Obtain(*vm, *ext);
  Ref<VmBo> vp = VmBo::Obtain(*vm, *priv);
  ve->ExtobjAdd();
  ve->ExtobjAdd();
  vp->ExtobjAdd();
  EXPECT_EQ(vm->ExtobjsForTesting().size(), 1u);
  EXPECT_TRUE(ve->in_extobj_list());
  vp->Evict(true);
  ve->Evict(true);
  EXPECT_EQ(vm->EvictedForTesting().size(), 2u);
  ve->Evict(false);
  EXPECT_FALSE(ve->in_evict_list());
  EXPECT_TRUE(vp->evicted());
  ve.reset();  // leaves the extobj list
  vp.reset();
  EXPECT_TRUE(vm->ExtobjsForTesting().empty());
  EXPECT_TRUE(vm->EvictedForTesting().empty());
  vm->resv().Unlock();
  ext->resv().Unlock();
}

// RESV_PROTECTED: evicting an external BO only sets the flag.
TEST_F(GpuvmTest, ResvProtectedEvictOfExtobjOnlySetsFlag) {
  Ref<Gpuvm> vm = MakeVm(Gpuvm::kResvProtected);
  Ref<Bo> ext = Bo::Create(kPage);
  ASSERT_TRUE(ext->resv().TryLock());
  Ref<VmBo> ve = VmBo::Obtain(*vm, *ext);
  ve->Evict(true);
  EXPECT_TRUE(ve->evicted());
  EXPECT_FALSE(ve->in_evict_list());
  ve.reset();
  ext->resv().Unlock();
}

// A private BO keeps the resv owner alive; the backing memory is zeroed and sized.
TEST_F(GpuvmTest, BoLifetimeAndMemory) {
  Ref<Bo> priv;
  {
    Ref<Gpuvm> vm = MakeVm();
    priv = Bo::CreateSharingResv(2 * kPage, vm->r_obj());
  }
  EXPECT_EQ(Bo::live_count(), 2);  // priv + the VM's r_obj it shares the resv of
  auto mem = priv->memory();
  ASSERT_EQ(mem.size(), 2 * kPage);
  EXPECT_EQ(mem[kPage], std::byte{0});
  priv.reset();
  EXPECT_EQ(Bo::live_count(), 0);
}

// GpuvaCache: value-initialised Gpuvas, the last freed handed out first, distinct and aligned
// across its chunk sizes (4 KiB up to the 2 MiB huge-page ones), usable in a tree; everything
// freed with the cache (ASan: no leak, no overlap).
TEST_F(GpuvmTest, GpuvaCacheRecyclesLastFreedFirst) {
  Ref<Gpuvm> vm = MakeVm();
  GpuvaCache cache;
  std::vector<Gpuva*> vas;
  std::set<Gpuva*> seen;
  constexpr int kVas = 100000;  // > 2 MiB of Gpuvas: several chunks, the last ones huge
  for (int i = 0; i < kVas; ++i) {
    Gpuva* va = cache.Alloc();
    ASSERT_TRUE(seen.insert(va).second);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(va) % alignof(Gpuva), 0u);
    EXPECT_EQ(va->vm, nullptr);
    va->addr = static_cast<uint64_t>(i) * kPage;  // every byte of it is ours to write
    va->range = kPage;
    va->flags = 7;
    va->bo_next = va;
    vas.push_back(va);
  }
  Gpuva* a = vas[10];
  Gpuva* b = vas[20];
  cache.Free(a);
  cache.Free(b);
  Gpuva* again = cache.Alloc();
  EXPECT_EQ(again, b);  // the last freed first
  EXPECT_EQ(again->addr, 0u);
  EXPECT_EQ(again->range, 0u);
  EXPECT_EQ(again->flags, 0u);
  EXPECT_EQ(again->bo_next, nullptr);
  EXPECT_EQ(cache.Alloc(), a);
  again->addr = 0x10000;
  again->range = kPage;
  ASSERT_TRUE(vm->Insert(again).ok());
  EXPECT_EQ(vm->FindFirst(0x10000, 1), again);
  vm->Remove(again);
}

}  // namespace
}  // namespace vm
