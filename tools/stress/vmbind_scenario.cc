// Scenario "vmbind": asynchronous VM_BIND under load — binders vs readers vs BO release.
//
// Half the threads bind (each with its own vm::BindQueue, sometimes through a shared one): lists
// of 1-3 maps, sparse maps and unmaps, 4K or 64K pages, some waiting on an in-fence the binder
// signals right after submitting, some mapping a fresh BO it releases at once (the VM holds the
// last reference). Each binder owns a window of the VA space, where it keeps a per-page model,
// and all of them race in a shared window. The other threads translate random addresses through
// the page table and read the BO memory behind them. Periodically every thread parks (a quiescent
// point): once the VM is idle, the page table is compared with the VA tree, page by page over the
// whole space, and with each binder's model over its window.
// Invariants: every bind is accepted and its out-fence signals without error; readers only ever
// see BO memory holding the BO's fill pattern (never freed or foreign memory; ASan checks the
// rest); page table == VA tree == model at quiescent points; the VM never becomes unusable; no
// BO leaks after teardown.
//
// A VM hands out one device-address slot per mapped BindOp and never reuses them
// (BindVm::kSlots); the scenario replaces the VM at a quiescent point before it runs out.
#include <array>
#include <cstring>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "fence/fence_context.h"
#include "tools/stress/stress.h"
#include "vm/bind_queue.h"
#include "vm/bind_vm.h"
#include "vm/bo.h"
#include "vm/rcu.h"

namespace stress {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kWindowPages = 128;  // a multiple of 16 (64K pages stay aligned)
constexpr uint64_t kBoPages = 64;
constexpr std::byte kFill{0x5a};
constexpr int64_t kMapsPerVm = vm::BindVm::kSlots * 3 / 4;

struct ModelPage {
  enum Kind { kNone, kSparse, kBo } kind = kNone;
  const std::byte* host = nullptr;  // kBo: the memory the page must map (never dereferenced)
};

// Parks every thread at a quiescent point.
struct Gate {
  absl::Mutex mu;
  bool pause ABSL_GUARDED_BY(mu) = false;
  int parked ABSL_GUARDED_BY(mu) = 0;
  int alive ABSL_GUARDED_BY(mu) = 0;

  void MaybePark() {
    absl::MutexLock l(&mu);
    if (!pause) return;
    ++parked;
    mu.Await(absl::Condition(+[](bool* p) { return !*p; }, &pause));
    --parked;
  }
  void Leave() {
    absl::MutexLock l(&mu);
    --alive;
  }
  void PauseAll() {
    absl::MutexLock l(&mu);
    pause = true;
    mu.Await(absl::Condition(
        +[](Gate* g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(g->mu) { return g->parked == g->alive; },
        this));
  }
  void Resume() {
    absl::MutexLock l(&mu);
    pause = false;
  }
};

// The VM and its queues; replaced only while every thread is parked.
struct World {
  std::unique_ptr<vm::BindVm> vm;
  std::unique_ptr<vm::BindQueue> shared_queue;
  std::vector<std::unique_ptr<vm::BindQueue>> queues;  // one per binder
};

vm::Ref<vm::Bo> FilledBo() {
  vm::Ref<vm::Bo> bo = vm::Bo::Create(kBoPages * kPage);
  std::memset(bo->memory().data(), static_cast<int>(kFill), bo->memory().size());
  return bo;
}

class Binder {
 public:
  Binder(const Options& o, int id, World& world, Gate& gate, uint64_t window, uint64_t shared)
      : rng_(o.Rng(id)), id_(id), world_(world), gate_(gate), window_(window), shared_(shared) {
    for (auto& b : bos_) b = FilledBo();
  }

  void Loop() {
    while (Running()) {
      gate_.MaybePark();
      Bind();
      Progress::Add();
      Retire(16);
    }
    Retire(0);
    gate_.Leave();
  }

  // At a quiescent point: the page table matches the model over this binder's window.
  void CheckModel() {
    for (uint64_t p = 0; p < kWindowPages; ++p) {
      const uint64_t va = window_ + p * kPage;
      vm::RcuReadSection section;
      const vm::Translation t = world_.vm->page_table().Translate(va);
      const ModelPage& m = model_[p];
      const std::string at = absl::StrFormat("vmbind: binder %d page 0x%x: ", id_, va);
      Check(t.valid == (m.kind != ModelPage::kNone), at + "mapped state differs from the model");
      if (m.kind == ModelPage::kSparse) Check(t.flags & vm::kPteSparse, at + "not sparse");
      if (m.kind == ModelPage::kBo) {
        Check(world_.vm->HostAddress(t) == m.host, at + "maps other memory than the model");
      }
    }
  }
  // A new VM starts empty.
  void ResetModel() { model_ = {}; }
  int64_t maps() const { return maps_; }

 private:
  void Bind() {
    std::vector<vm::BindOp> ops;
    std::vector<vm::Ref<vm::Bo>> fresh;  // released right after Submit
    const int n = 1 + static_cast<int>(Below(rng_, 3));
    for (int i = 0; i < n; ++i) {
      const bool in_shared = OneIn(rng_, 4);
      const bool big = OneIn(rng_, 4);
      const uint64_t unit = big ? 16 : 1;
      const uint64_t len = unit * (1 + Below(rng_, big ? 3 : 24));
      const uint64_t first = unit * Below(rng_, (kWindowPages - len) / unit + 1);
      const uint64_t va = (in_shared ? shared_ : window_) + first * kPage;
      const vm::PageSize ps = big ? vm::PageSize::k64K : vm::PageSize::k4K;
      const uint64_t kind = Below(rng_, 3);
      ModelPage page;
      if (kind == 0) {
        ops.push_back(vm::BindOp::Unmap(va, len * kPage));
      } else if (kind == 1) {
        ops.push_back(vm::BindOp::MapNull(va, len * kPage, ps));
        page.kind = ModelPage::kSparse;
      } else {
        vm::Bo* bo;
        if (OneIn(rng_, 3)) {
          fresh.push_back(FilledBo());
          bo = fresh.back().get();
        } else {
          bo = bos_[Below(rng_, bos_.size())].get();
        }
        const uint64_t off = unit * Below(rng_, (kBoPages - len) / unit + 1);
        ops.push_back(vm::BindOp::Map(va, len * kPage, bo, off * kPage, ps));
        page.kind = ModelPage::kBo;
        page.host = bo->memory().data() + off * kPage;
        ++maps_;
      }
      if (in_shared) continue;
      for (uint64_t p = 0; p < len; ++p) {
        model_[first + p] = page;
        if (page.kind == ModelPage::kBo) page.host += kPage;
      }
    }
    fence::FenceRef in;
    if (OneIn(rng_, 6)) in = timeline_.NewFence();
    std::vector<fence::FenceRef> in_fences;
    if (in) in_fences.push_back(in);
    vm::BindQueue& q = OneIn(rng_, 4) ? *world_.shared_queue : *world_.queues[id_];
    absl::StatusOr<fence::FenceRef> out = q.Submit(ops, in_fences);
    Check(out.ok(), "vmbind: a valid bind was refused: " + out.status().ToString());
    fresh.clear();  // the VM holds the only references now
    if (in) {
      if (OneIn(rng_, 2)) std::this_thread::yield();
      Check(in->Signal(), "vmbind: our in-fence was signalled by someone else");
    }
    out_.push_back(*std::move(out));
  }

  void Retire(size_t keep) {
    while (!out_.empty() && (out_.size() > keep || out_.front()->IsSignaledFlag())) {
      Check(out_.front()->Wait(absl::Seconds(30)).ok(),
            "vmbind: an out-fence did not signal within 30 s");
      Check(out_.front()->error().ok(),
            "vmbind: a bind failed: " + out_.front()->error().ToString());
      out_.pop_front();
    }
  }

  std::mt19937_64 rng_;
  const int id_;
  World& world_;
  Gate& gate_;
  const uint64_t window_, shared_;
  std::array<vm::Ref<vm::Bo>, 2> bos_;
  std::array<ModelPage, kWindowPages> model_{};
  fence::FenceContext timeline_{"stress_bind_in"};
  std::deque<fence::FenceRef> out_;
  int64_t maps_ = 0;
};

void ReaderLoop(const World& world, Gate& gate, uint64_t pages, std::mt19937_64 rng,
                std::atomic<int64_t>& reads) {
  vm::RcuReaderThread rcu;
  while (Running()) {
    gate.MaybePark();
    {
      vm::RcuReadSection section;
      for (int i = 0; i < 64; ++i) {
        const uint64_t va = Below(rng, pages) * kPage + Below(rng, kPage);
        const vm::Translation t = world.vm->page_table().Translate(va);
        const std::byte* host = world.vm->HostAddress(t);
        if (host == nullptr) continue;
        Check(*host == kFill, "vmbind: a reader saw memory that is not the mapped BO's");
        reads.fetch_add(1, std::memory_order_relaxed);
      }
    }
    Progress::Add();
  }
  gate.Leave();
}

// Page table == VA tree over [0, pages), page by page. The caller is an RCU reader.
void CheckTreeEqualsPageTable(const vm::BindVm& v, uint64_t pages) {
  for (uint64_t p = 0; p < pages; ++p) {
    const uint64_t addr = p * kPage;
    const vm::Gpuva* va = v.gpuvm().FindFirst(addr, kPage);
    vm::RcuReadSection section;
    const vm::Translation t = v.page_table().Translate(addr);
    const std::string at = absl::StrFormat("vmbind: page 0x%x: ", addr);
    if (va == nullptr) {
      Check(!t.valid, at + "mapped in the page table, not in the VA tree");
      continue;
    }
    Check(t.valid, at + "in the VA tree, not in the page table");
    if (va->bo == nullptr) {
      Check(t.flags & vm::kPteSparse, at + "sparse in the tree, not in the page table");
      continue;
    }
    const std::byte* want =
        const_cast<vm::Bo*>(va->bo)->memory().data() + va->offset + (addr - va->addr);
    Check(v.HostAddress(t) == want, at + "the page table maps other memory than the tree");
  }
}

void NewWorld(World& w, int binders) {
  w.queues.clear();
  w.shared_queue.reset();
  w.vm.reset();
  auto v = vm::BindVm::Create("stress", {});
  Check(v.ok(), "vmbind: BindVm::Create failed: " + v.status().ToString());
  w.vm = *std::move(v);
  w.shared_queue = *vm::BindQueue::Create(*w.vm);
  for (int i = 0; i < binders; ++i) w.queues.push_back(*vm::BindQueue::Create(*w.vm));
}

}  // namespace

void RunVmBind(const Options& options) {
  const int64_t bos_before = vm::Bo::live_count();
  const int binders = std::max(1, options.threads / 2);
  const int readers = std::max(1, options.threads - binders);
  const uint64_t pages = kWindowPages * (binders + 1);  // the shared window comes last
  vm::RcuReaderThread rcu;
  std::atomic<int64_t> reads{0};
  int quiescent = 0, vms = 1;
  {
    World world;
    NewWorld(world, binders);
    Gate gate;
    {
      absl::MutexLock l(&gate.mu);  // no other thread yet; the lock keeps the annotation honest
      gate.alive = binders + readers;
    }
    std::vector<std::unique_ptr<Binder>> bs;
    for (int i = 0; i < binders; ++i) {
      bs.push_back(std::make_unique<Binder>(options, i, world, gate, i * kWindowPages * kPage,
                                            binders * kWindowPages * kPage));
    }
    std::vector<std::thread> threads;
    for (auto& b : bs) threads.emplace_back([&b] { b->Loop(); });
    for (int r = 0; r < readers; ++r) {
      threads.emplace_back(ReaderLoop, std::cref(world), std::ref(gate), pages,
                           options.Rng(1000 + r), std::ref(reads));
    }
    bool last = false;
    while (!last) {
      last = !Running();
      if (!last) absl::SleepFor(absl::Milliseconds(200));
      gate.PauseAll();  // every thread parked (or gone, at the end)
      world.vm->WaitIdle();
      CheckTreeEqualsPageTable(*world.vm, pages);
      for (auto& b : bs) b->CheckModel();
      Check(!world.vm->unusable(), "vmbind: the VM became unusable");
      ++quiescent;
      int64_t maps = 0;
      for (auto& b : bs) maps += b->maps();
      if (!last && maps > kMapsPerVm * vms) {
        NewWorld(world, binders);
        for (auto& b : bs) b->ResetModel();
        ++vms;
      }
      gate.Resume();
    }
    for (std::thread& t : threads) t.join();
    bs.clear();
    world.queues.clear();
    world.shared_queue.reset();
    world.vm.reset();
  }
  Check(vm::Bo::live_count() == bos_before,
        absl::StrFormat("vmbind: leak: %d BOs alive after teardown, %d before",
                        vm::Bo::live_count(), bos_before));
  std::printf("udrm_stress: vmbind: %d quiescent checks, %lld reads, %d VMs\n", quiescent,
              static_cast<long long>(reads.load()), vms);
}

}  // namespace stress
