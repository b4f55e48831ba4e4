// The gpuvm exec helpers: what each locks and prepares, the seed's sm_{map,unmap}_exec_lock
// including both documented multi-op cases, validate, and resv_add_fence's usages.
#include "vm/gpuvm_exec.h"

#include <gtest/gtest.h>

#include <set>

#include "fence/fence_context.h"
#include "tests/vm/gpuvm_test_util.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

std::set<fence::Resv*> LockedResvs(exec::Exec& exec) {
  std::set<fence::Resv*> out;
  for (exec::Object* o : exec.objects()) out.insert(&o->resv());
  return out;
}

class GpuvmExecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vm_ = *Gpuvm::Create("exec", 0, 1000, 900, 100);
    for (auto& b : ext_) b = Bo::Create(1000);
    priv_ = Bo::CreateSharingResv(1000, vm_->r_obj());
  }
  void TearDown() override {
    VaPool::Clear(*vm_);
    vm_.reset();
    for (auto& b : ext_) b.reset();
    priv_.reset();
    EXPECT_EQ(Gpuvm::live_count(), 0);
    EXPECT_EQ(Bo::live_count(), 0);
    EXPECT_EQ(VmBo::live_count(), 0);
  }
  Gpuva* Add(uint64_t addr, uint64_t end, Bo* bo) {
    Gpuva* va = pool_.New(addr, end - addr, bo, addr);
    EXPECT_TRUE(vm_->Insert(va).ok());
    return va;
  }
  // Runs `body` in a fresh IGNORE_DUPLICATES Exec and returns the locked resvs.
  template <typename F>
  std::set<fence::Resv*> Locked(F body, std::map<fence::Resv*, size_t>* reserved = nullptr) {
    exec::Exec exec(exec::Exec::kIgnoreDuplicates);
    EXPECT_TRUE(exec.UntilAllLocked(body).ok());
    if (reserved != nullptr) {
      for (exec::Object* o : exec.objects()) (*reserved)[&o->resv()] = o->resv().reserved();
    }
    return LockedResvs(exec);
  }

  Ref<Gpuvm> vm_;
  Ref<Bo> ext_[4];
  Ref<Bo> priv_;
  VaPool pool_;
};

// sm_map_exec_lock: the new BO prepared with N slots, the BOs of remapped/unmapped VAs locked
// (not prepared), untouched and merely adjacent VAs' BOs not locked, sparse VAs skipped.
TEST_F(GpuvmExecTest, SmMapExecLockLocksExactlyTheRightSet) {
  Add(0, 10, ext_[3].get());     // adjacent: not visited
  Add(10, 20, ext_[0].get());    // remapped
  Add(20, 30, nullptr);          // sparse, unmapped
  Add(30, 40, ext_[1].get());    // unmapped
  Add(40, 50, ext_[3].get());    // remapped (next)
  std::map<fence::Resv*, size_t> reserved;
  auto locked = Locked(
      [&](exec::Exec& e) { return SmMapExecLock(*vm_, e, 3, {{15, 30, ext_[2].get(), 0}}); },
      &reserved);
  EXPECT_EQ(locked, (std::set<fence::Resv*>{&ext_[0]->resv(), &ext_[1]->resv(),
                                            &ext_[2]->resv(), &ext_[3]->resv()}));
  EXPECT_EQ(reserved[&ext_[2]->resv()], 3u);
  EXPECT_EQ(reserved[&ext_[0]->resv()], 0u);
  EXPECT_EQ(vm_->va_count(), 6u);  // the tree is unchanged
  // The adjacent VA alone: not locked.
  locked = Locked([&](exec::Exec& e) { return SmMapExecLock(*vm_, e, 1, {{50, 10, nullptr, 0}}); });
  EXPECT_TRUE(locked.empty());
}

// sm_unmap_exec_lock: only the BOs of the VAs the unmap touches.
TEST_F(GpuvmExecTest, SmUnmapExecLock) {
  Add(10, 20, ext_[0].get());
  Add(20, 30, ext_[1].get());
  Add(30, 40, ext_[2].get());
  auto locked = Locked([&](exec::Exec& e) { return SmUnmapExecLock(*vm_, e, 15, 10); });
  EXPECT_EQ(locked, (std::set<fence::Resv*>{&ext_[0]->resv(), &ext_[1]->resv()}));
  exec::Exec exec(exec::Exec::kIgnoreDuplicates);
  EXPECT_EQ(exec.UntilAllLocked([&](exec::Exec& e) { return SmUnmapExecLock(*vm_, e, 950, 10); })
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Private BOs share the VM resv: with the VM prepared first, they add nothing (duplicates
// ignored) and the fence goes to the VM resv with the private usage.
TEST_F(GpuvmExecTest, PrivateBosShareTheVmResv) {
  Add(10, 20, priv_.get());
  GpuvmExec ve(*vm_, exec::Exec::kIgnoreDuplicates, 1);
  ASSERT_TRUE(ve.ExecLock([&](GpuvmExec& g) {
                  absl::Status s = SmMapExecLock(*vm_, g.exec(), 1, {{10, 20, priv_.get(), 0}});
                  return s.ok() ? SmMapExecLock(*vm_, g.exec(), 1, {{30, 10, ext_[0].get(), 0}})
                                : s;
                }).ok());
  EXPECT_EQ(LockedResvs(ve.exec()),
            (std::set<fence::Resv*>{&vm_->resv(), &ext_[0]->resv()}));
  fence::FenceContext ctx;
  fence::FenceRef f = ctx.NewFence();
  ResvAddFence(*vm_, ve.exec(), f, fence::ResvUsage::kBookkeep, fence::ResvUsage::kWrite);
  auto priv_fences = vm_->resv().GetFences(fence::ResvUsage::kBookkeep);
  ASSERT_EQ(priv_fences.size(), 1u);
  EXPECT_EQ(priv_fences[0].usage, fence::ResvUsage::kBookkeep);
  auto ext_fences = ext_[0]->resv().GetFences(fence::ResvUsage::kBookkeep);
  ASSERT_EQ(ext_fences.size(), 1u);
  EXPECT_EQ(ext_fences[0].usage, fence::ResvUsage::kWrite);
  f->Signal();
}

// The BOs a sequence of ops needs when each is applied before the next is locked.
std::set<fence::Resv*> NeededSequentially(Gpuvm& vm, VaPool& pool,
                                          const std::vector<std::pair<bool, OpMap>>& ops) {
  std::set<fence::Resv*> need;
  for (const auto& [is_map, r] : ops) {
    auto list = is_map ? SmMapOpsCreate(vm, {r}) : SmUnmapOpsCreate(vm, r.addr, r.range);
    EXPECT_TRUE(list.ok());
    for (const Op& op : *list) {
      const Gpuva* va = nullptr;
      if (auto* u = std::get_if<OpUnmap>(&op)) va = u->va;
      if (auto* rm = std::get_if<OpRemap>(&op)) va = rm->unmap.va;
      if (auto* m = std::get_if<OpMap>(&op); m && m->bo) need.insert(&m->bo->resv());
      if (va != nullptr && va->bo != nullptr) need.insert(&va->bo->resv());
    }
    ApplyOps(vm, *list, pool);
  }
  return need;
}

// The two documented multi-op cases: locking all ops on the unmodified tree covers every BO the
// ops need when applied one after the other (case 1: an earlier unmap removes a later step;
// case 2: an earlier map adds one — the reference's example).
TEST_F(GpuvmExecTest, MultiOpLockingCoversSequentialNeeds) {
  const std::vector<std::vector<std::pair<bool, OpMap>>> cases = {
      // case 1: unmap [10,30), then map over [15,25) where ext0's VA was.
      {{false, {10, 20, nullptr, 0}}, {true, {15, 10, ext_[1].get(), 0}}},
      // case 2: map ext2 at [100,300), then unmap [200,400) (the header's example).
      {{true, {100, 200, ext_[2].get(), 0}}, {false, {200, 200, nullptr, 0}}},
      // both, interleaved with an existing VA.
      {{true, {5, 20, ext_[2].get(), 0}}, {false, {0, 12, nullptr, 0}},
       {true, {8, 30, ext_[3].get(), 0}}},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE(c);
    Add(10, 30, ext_[0].get());
    auto locked = Locked([&](exec::Exec& e) -> absl::Status {
      for (const auto& [is_map, r] : cases[c]) {
        absl::Status s = is_map ? SmMapExecLock(*vm_, e, 1, {r})
                                : SmUnmapExecLock(*vm_, e, r.addr, r.range);
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    });
    auto need = NeededSequentially(*vm_, pool_, cases[c]);
    for (fence::Resv* r : need) EXPECT_TRUE(locked.count(r)) << "a needed BO was not locked";
    VaPool::Clear(*vm_);
  }
}

// exec_lock: VM resv + extobjs + the hook; _array and _range variants; prepare_range skips
// sparse VAs; bad ranges are refused before anything is locked.
TEST_F(GpuvmExecTest, ExecLockVariants) {
  ASSERT_TRUE(ext_[0]->resv().TryLock());
  Ref<VmBo> vb = VmBo::Obtain(*vm_, *ext_[0]);
  vb->ExtobjAdd();
  ext_[0]->resv().Unlock();
  Add(100, 110, ext_[1].get());
  Add(110, 120, nullptr);
  {
    GpuvmExec ve(*vm_, 0, 2);
    ASSERT_TRUE(ve.ExecLock().ok());
    EXPECT_EQ(LockedResvs(ve.exec()), (std::set<fence::Resv*>{&vm_->resv(), &ext_[0]->resv()}));
    EXPECT_EQ(ext_[0]->resv().reserved(), 2u);
  }
  {
    GpuvmExec ve(*vm_, exec::Exec::kIgnoreDuplicates, 1);
    exec::Object* objs[] = {ext_[2].get(), ext_[0].get()};
    ASSERT_TRUE(ve.ExecLockArray(objs).ok());
    EXPECT_EQ(LockedResvs(ve.exec()).size(), 3u);
  }
  {
    GpuvmExec ve(*vm_, exec::Exec::kIgnoreDuplicates, 1);
    ASSERT_TRUE(ve.ExecLockRange(100, 30).ok());
    EXPECT_EQ(LockedResvs(ve.exec()), (std::set<fence::Resv*>{&vm_->resv(), &ext_[0]->resv(),
                                                              &ext_[1]->resv()}));
  }
  {
    GpuvmExec ve(*vm_, 0, 1);
    EXPECT_EQ(ve.ExecLockRange(890, 20).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(ve.exec().objects().empty());
  }
  ASSERT_TRUE(ext_[0]->resv().TryLock());
  vb.reset();
  ext_[0]->resv().Unlock();
}

// validate: the hook runs for evicted VmBos; without a hook, Unimplemented. In RESV_PROTECTED
// mode prepare_objects moves evicted extobjs onto the list and validate drops revalidated ones.
TEST_F(GpuvmExecTest, ValidateEvictList) {
  std::vector<Bo*> validated;
  Gpuvm::Options o;
  o.flags = Gpuvm::kResvProtected;
  o.vm_bo_validate = [&](VmBo& vb, exec::Exec&) {
    validated.push_back(&vb.bo());
    vb.Evict(false);
    return absl::OkStatus();
  };
  Ref<Gpuvm> vm = *Gpuvm::Create("p", 0, 100, 0, 0, std::move(o));
  Ref<Bo> ext = Bo::Create(10);
  ASSERT_TRUE(ext->resv().TryLock());
  Ref<VmBo> vb = VmBo::Obtain(*vm, *ext);
  vb->ExtobjAdd();
  vb->Evict(true);
  EXPECT_FALSE(vb->in_evict_list());
  ext->resv().Unlock();
  {
    GpuvmExec ve(*vm, 0, 1);
    ASSERT_TRUE(ve.ExecLock().ok());
    EXPECT_TRUE(vb->in_evict_list());  // moved by prepare_objects
    ASSERT_TRUE(Validate(*vm, ve.exec()).ok());
    EXPECT_EQ(validated, std::vector<Bo*>{ext.get()});
    EXPECT_FALSE(vb->in_evict_list());
    ASSERT_TRUE(ext->resv().lock().IsLocked());
    vb.reset();  // last put, gpuva lock (ext's resv) held by the exec
  }
  GpuvmExec none(*vm_, 0, 0);
  EXPECT_EQ(Validate(*vm_, none.exec()).code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace vm
