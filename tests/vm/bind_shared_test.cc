// VM_BIND on two VMs that share external BOs (issue 12's seed case "binds racing on two VMs that
// share external BOs"), and what a reader sees once a bind's out-fence has signalled.
//
// Run under TSan and ASan, and with --test_env=UDRM_WW_SLOWPATH_INJECTION=1 (every contended
// ww-mutex lock takes the back-off path), as CI does.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "base/sanitizers.h"
#include "fence/fence_context.h"
#include "fence/resv.h"
#include "tests/vm/bind_test_util.h"

namespace vm {
namespace {

using testing::kPage;

constexpr int kSharedBos = 6;
constexpr uint64_t kBoPages = 16;
constexpr uint64_t kSlotPages = 16;
constexpr int kSlotsPerThread = 4;

// True if `resv` holds `f` with exactly `usage`. `f` must not have signalled (a signalled fence
// may be dropped from a resv by a later AddFence).
bool HasFence(const fence::Resv& resv, const fence::FenceRef& f, fence::ResvUsage usage) {
  for (const fence::Resv::Entry& e : resv.GetFences(fence::ResvUsage::kBookkeep)) {
    if (e.fence.get() == f.get()) return e.usage == usage;
  }
  return false;
}

// The BOs every thread maps: the pool holds one reference to each, and the binders replace
// them while they are mapped (the old BO then lives on through the VMs' references only).
class BoPool {
 public:
  BoPool() {
    for (int i = 0; i < kSharedBos; ++i) bos_.push_back(Bo::Create(kBoPages * kPage));
  }
  Ref<Bo> Pick(std::mt19937& rng) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    return bos_[rng() % bos_.size()];
  }
  void Replace(int i) ABSL_LOCKS_EXCLUDED(mu_) {
    Ref<Bo> fresh = Bo::Create(kBoPages * kPage);
    Ref<Bo> old;
    {
      absl::MutexLock l(&mu_);
      old = std::exchange(bos_[i], std::move(fresh));
    }
  }  // `old` dropped here, outside the lock: maybe the last reference
  std::vector<Ref<Bo>> Take() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    return std::move(bos_);
  }

 private:
  absl::Mutex mu_;
  std::vector<Ref<Bo>> bos_ ABSL_GUARDED_BY(mu_);
};

// One binder thread: random binds (1-3 ops: maps of shared BOs, unmaps) on its own slots of
// `vm` through its own queue, releasing a pool BO now and then. Each bind is held back by an
// in-fence until the test has checked that the out-fence sits in the VM resv (kBookkeep) and in
// each mapped BO's resv (kKernel), as vm/bind_steps.h documents; one bind in four is not held back,
// to race for real.
void Binder(BindVm& vm, int thread, int iterations, BoPool& pool, std::atomic<int>& errors) {
  std::unique_ptr<BindQueue> queue = *BindQueue::Create(vm);
  fence::FenceContext ctx("gate");
  std::mt19937 rng(thread * 7919);
  const uint64_t base = thread * kSlotsPerThread * kSlotPages * kPage;
  fence::FenceRef last;
  for (int i = 0; i < iterations; ++i) {
    std::vector<BindOp> ops;
    std::vector<Ref<Bo>> keep;  // alive until Submit returns (BindOp's contract)
    const int n = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < n; ++k) {
      const uint64_t va = base + (rng() % kSlotsPerThread) * kSlotPages * kPage;
      if (rng() % 3 == 0) {
        ops.push_back(BindOp::Unmap(va, kSlotPages * kPage));
      } else {
        keep.push_back(pool.Pick(rng));
        const uint64_t pages = 1 + rng() % kSlotPages;
        ops.push_back(BindOp::Map(va, pages * kPage, keep.back().get(),
                                  (rng() % (kBoPages - pages + 1)) * kPage));
      }
    }
    const bool gated = rng() % 4 != 0;
    fence::FenceRef gate = ctx.NewFence();
    absl::StatusOr<fence::FenceRef> out =
        gated ? queue->Submit(ops, {&gate, 1}) : queue->Submit(ops);
    if (!out.ok()) {
      ADD_FAILURE() << "thread " << thread << " bind " << i << ": " << out.status();
      errors.fetch_add(1);
      gate->Signal();
      break;
    }
    if (gated) {
      if (!HasFence(vm.gpuvm().resv(), *out, fence::ResvUsage::kBookkeep)) {
        ADD_FAILURE() << "out-fence not in the VM resv as kBookkeep";
        errors.fetch_add(1);
      }
      for (const Ref<Bo>& bo : keep) {
        if (!HasFence(bo->resv(), *out, fence::ResvUsage::kKernel)) {
          ADD_FAILURE() << "out-fence not in a mapped external BO's resv as kKernel";
          errors.fetch_add(1);
        }
      }
      gate->Signal();
    }
    // A BO release while it may be mapped: the VMs' references keep it alive from here.
    if (rng() % 4 == 0) pool.Replace(static_cast<int>(rng() % kSharedBos));
    last = *out;
    if (i % 8 == 7 && !last->Wait().ok()) errors.fetch_add(1);
  }
  // Destroying the queue would kill its queued jobs: wait for the last (jobs run in order).
  if (last && !last->Wait().ok()) errors.fetch_add(1);
}

// Binds racing on two VMs that share external BOs, with BO releases: no deadlock, every
// out-fence in the right resvs, and each BO freed exactly when its last reference goes (none
// early: ASan; none late: the live count once everything is unmapped).
TEST(BindSharedTest, RacingBindsOnTwoVmsSharingBos) {
  RcuReaderThread rcu;
  const int64_t bos_before = Bo::live_count();
  {
    std::unique_ptr<BindVm> vms[2] = {*BindVm::Create("vm0", {}), *BindVm::Create("vm1", {})};
    const int64_t bos_with_vms = Bo::live_count();  // + each VM's resv object
    BoPool pool;
    std::atomic<int> errors{0};
    const int iterations = UDRM_SANITIZER ? 30 : 250;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] { Binder(*vms[t % 2], t, iterations, pool, errors); });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(errors.load(), 0);
    for (auto& vm : vms) {
      std::unique_ptr<BindQueue> q = *BindQueue::Create(*vm);
      const BindOp all = BindOp::Unmap(0, 4 * kSlotsPerThread * kSlotPages * kPage);
      ASSERT_TRUE(q->Bind({&all, 1}).ok());
      vm->WaitIdle();
      EXPECT_FALSE(vm->unusable());
      EXPECT_EQ(vm->gpuvm().va_count(), 0u);
    }
    // Nothing maps a BO any more and every bind job is cleaned up: only the pool's BOs are left,
    // each with the pool's reference only.
    EXPECT_EQ(Bo::live_count(), bos_with_vms + kSharedBos);
    std::vector<Ref<Bo>> last = pool.Take();
    for (const Ref<Bo>& bo : last) EXPECT_EQ(bo->refs_for_testing(), 1);
    last.clear();
    EXPECT_EQ(Bo::live_count(), bos_with_vms);
  }
  EXPECT_EQ(Bo::live_count(), bos_before);
}

// ---- (b) After a bind's out-fence signals, every translation of its range reflects it. ----

constexpr int kRegions = 6;  // per VM
constexpr uint64_t kRegionPages = 32;

std::byte Pattern(int bo, uint64_t page) { return std::byte((bo * 37 + page * 11 + 1) & 0xff); }

// What one bind should leave in its region, page by page: null bo = fault.
struct Expected {
  int vm = 0;
  int region = 0;
  fence::FenceRef out;
  std::vector<const Bo*> bo;     // per page
  std::vector<int> bo_id;        // per page
  std::vector<uint64_t> offset;  // per page, in the BO
};

class Checked {
 public:
  void Push(Expected e) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    busy_[e.vm][e.region] = true;
    queue_.push_back(std::move(e));
  }
  // The reader: the next bind to check, or false once the binder is done and all are checked.
  bool Pop(Expected& e) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](Checked* c)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return !c->queue_.empty() || c->finished_; },
        this));
    if (queue_.empty()) return false;
    e = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  void DoneChecking(int vm, int region) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    busy_[vm][region] = false;
  }
  // The binder: a region is bound again only once the reader has checked its last bind.
  void AwaitChecked(int vm, int region) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    const bool* busy = &busy_[vm][region];
    mu_.Await(absl::Condition(
        +[](const bool* b) { return !*b; }, busy));
  }
  void Finish() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    finished_ = true;
  }

 private:
  absl::Mutex mu_;
  std::deque<Expected> queue_ ABSL_GUARDED_BY(mu_);
  bool busy_[2][kRegions] ABSL_GUARDED_BY(mu_) = {};
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// The reader thread waits for each out-fence and only then translates every page of the bind's
// region: a map must translate to the right BO bytes (read them), an unmap must fault.
TEST(BindSharedTest, TranslationsReflectABindOnceItsOutFenceSignalled) {
  std::unique_ptr<BindVm> vms[2] = {*BindVm::Create("vm0", {}), *BindVm::Create("vm1", {})};
  std::vector<Ref<Bo>> bos;
  for (int i = 0; i < 4; ++i) {
    bos.push_back(Bo::Create(kRegionPages * kPage));
    for (uint64_t p = 0; p < kRegionPages; ++p) {
      std::memset(bos[i]->memory().data() + p * kPage, static_cast<int>(Pattern(i, p)), kPage);
    }
  }
  Checked checked;
  std::atomic<int64_t> pages_checked{0};
  std::atomic<int> bad{0};
  std::thread reader([&] {
    RcuReaderThread rcu;
    Expected e;
    while (checked.Pop(e)) {
      if (!e.out->Wait().ok() || !e.out->error().ok()) bad.fetch_add(1);
      const BindVm& vm = *vms[e.vm];
      for (uint64_t p = 0; p < kRegionPages; ++p) {
        const uint64_t va = (e.region * kRegionPages + p) * kPage;
        RcuReadSection section;
        const Translation t = vm.page_table().Translate(va + 8);
        if (e.bo[p] == nullptr) {
          if (t.valid) {
            ADD_FAILURE() << "vm " << e.vm << " page 0x" << std::hex << va << ": not a fault";
            bad.fetch_add(1);
          }
          continue;
        }
        const std::byte* host = vm.HostAddress(t);
        const std::byte* want = const_cast<Bo*>(e.bo[p])->memory().data() + e.offset[p] + 8;
        if (host != want || *host != Pattern(e.bo_id[p], e.offset[p] / kPage)) {
          ADD_FAILURE() << "vm " << e.vm << " page 0x" << std::hex << va << ": wrong translation";
          bad.fetch_add(1);
        }
      }
      pages_checked.fetch_add(kRegionPages);
      checked.DoneChecking(e.vm, e.region);
    }
  });
  {
    std::unique_ptr<BindQueue> queues[2] = {*BindQueue::Create(*vms[0]),
                                            *BindQueue::Create(*vms[1])};
    std::mt19937 rng(5);
    const int binds = UDRM_SANITIZER ? 120 : 600;
    for (int i = 0; i < binds; ++i) {
      const int v = static_cast<int>(rng() % 2);
      const int region = static_cast<int>(rng() % kRegions);
      checked.AwaitChecked(v, region);
      Expected e{v,
                 region,
                 {},
                 std::vector<const Bo*>(kRegionPages, nullptr),
                 std::vector<int>(kRegionPages, 0),
                 std::vector<uint64_t>(kRegionPages, 0)};
      const uint64_t base = region * kRegionPages * kPage;
      std::vector<BindOp> ops;
      if (rng() % 4 == 0) {
        ops.push_back(BindOp::Unmap(base, kRegionPages * kPage));
      } else {
        // Map the whole region (4 KiB or 64 KiB pages), then maybe unmap a hole in the same bind.
        const int b = static_cast<int>(rng() % bos.size());
        ops.push_back(BindOp::Map(base, kRegionPages * kPage, bos[b].get(), 0,
                                  rng() % 2 ? PageSize::k64K : PageSize::k4K));
        for (uint64_t p = 0; p < kRegionPages; ++p) {
          e.bo[p] = bos[b].get();
          e.bo_id[p] = b;
          e.offset[p] = p * kPage;
        }
        if (rng() % 2) {
          const uint64_t first = rng() % kRegionPages;
          const uint64_t count = 1 + rng() % (kRegionPages - first);
          ops.push_back(BindOp::Unmap(base + first * kPage, count * kPage));
          for (uint64_t p = first; p < first + count; ++p) e.bo[p] = nullptr;
        }
      }
      absl::StatusOr<fence::FenceRef> out = queues[v]->Submit(ops);
      if (!out.ok()) {
        ADD_FAILURE() << out.status();
        break;
      }
      e.out = *out;
      checked.Push(std::move(e));
    }
    checked.Finish();
    reader.join();
  }
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(pages_checked.load(), 0);
}

}  // namespace
}  // namespace vm
