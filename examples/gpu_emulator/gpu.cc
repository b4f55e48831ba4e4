#include "examples/gpu_emulator/gpu.h"

#include <algorithm>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "vm/rcu.h"
#include "vm/translation_cache.h"

namespace gpu_emulator {

Gpu::Gpu(int threads, int contexts) {
  tlbs_.resize(threads);
  for (auto& t : tlbs_) t.resize(contexts);
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this, i] { Worker(i); });
}

void Gpu::ForgetContexts() {
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(
      +[](Gpu* g) ABSL_NO_THREAD_SAFETY_ANALYSIS { return g->busy_ == 0 && g->queue_.empty(); },
      this));
  for (auto& per_worker : tlbs_) {
    for (auto& tlb : per_worker) tlb.reset();
  }
}

Gpu::~Gpu() {
  {
    absl::MutexLock l(&mu_);
    exit_ = true;
  }
  for (auto& t : threads_) t.join();
}

void Gpu::Submit(std::shared_ptr<Launch> launch) {
  const uint64_t groups = launch->remaining.load(std::memory_order_relaxed);
  absl::MutexLock l(&mu_);
  for (uint64_t g = 0; g < groups; ++g) queue_.emplace_back(launch, g);
}

void Gpu::Worker(int index) {
  vm::RcuReaderThread rcu;
  // One software TLB per context: a context's VM never changes.
  std::vector<std::unique_ptr<vm::TranslationCache>>& tlbs = tlbs_[index];
  bool was_busy = false;
  for (;;) {
    std::shared_ptr<Launch> launch;
    uint64_t group;
    {
      absl::MutexLock l(&mu_);
      if (std::exchange(was_busy, false)) --busy_;  // the previous workgroup is done
      mu_.Await(absl::Condition(
          +[](Gpu* g) ABSL_NO_THREAD_SAFETY_ANALYSIS { return g->exit_ || !g->queue_.empty(); },
          this));
      if (queue_.empty()) return;
      std::tie(launch, group) = std::move(queue_.front());
      queue_.pop_front();
      ++busy_;
      was_busy = true;
    }
    if (!launch->faulted.load(std::memory_order_relaxed)) {
      auto& tlb = tlbs[launch->ctx];
      if (tlb == nullptr) tlb = std::make_unique<vm::TranslationCache>(&launch->vm->page_table());
      const Dispatch& d = launch->dispatch;
      const uint64_t begin = group * kWorkgroupSize;
      std::optional<uint64_t> fault;
      {
        // One read-side section per workgroup: the TLB is checked for removals once, here.
        vm::TranslationCache::Section section(*tlb);
        GpuMemory mem(section, *launch->vm);
        fault = RunWorkgroup(d, begin, std::min(d.count, begin + kWorkgroupSize), mem);
      }
      bool first = false;
      if (fault && launch->faulted.compare_exchange_strong(first, true)) {
        launch->fault_va.store(*fault, std::memory_order_relaxed);
      }
    }
    // acq_rel: the thread that finishes the last workgroup sees every other one's writes.
    if (launch->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      launch->engine->Complete(*launch);
    }
  }
}

Engine::Engine(std::string name, Gpu& gpu, Timeline& timeline, int lane)
    : name_(std::move(name)), gpu_(gpu), timeline_(timeline), lane_(lane), hw_context_(name_) {}

absl::StatusOr<fence::FenceRef> Engine::RunJob(sched::Job& job) {
  auto& j = static_cast<GpuJob&>(job);
  // A guilty context's job (its finished fence already carries CancelledError): skip it, as
  // amdgpu skips the IB. It completes at once with that error.
  if (!job.finished()->error().ok()) return fence::FenceRef(nullptr);
  auto launch = std::make_shared<Launch>();
  launch->dispatch = j.dispatch;
  launch->vm = &j.vm;
  launch->ctx = j.ctx;
  launch->engine = this;
  launch->remaining.store(
      std::max<int64_t>(1, (j.dispatch.count + kWorkgroupSize - 1) / kWorkgroupSize),
      std::memory_order_relaxed);
  j.hw = hw_context_.NewFence();
  std::shared_ptr<Launch> start;
  {
    absl::MutexLock l(&mu_);
    launch->id = next_id_++;
    ring_.push_back({launch->id, j.hw, launch, j.hang});
    if (!head_started_) start = StartHeadLocked();
  }
  if (start != nullptr) gpu_.Submit(std::move(start));
  return j.hw;
}

std::shared_ptr<Launch> Engine::StartHeadLocked() {
  head_started_ = true;
  const Entry& head = ring_.front();
  if (head.hang) {
    hung_ = true;  // the command processor never gets past it
    timeline_.AddMark({lane_, "job hangs", absl::Now(), true});
    return nullptr;
  }
  ++on_cores_;
  return head.launch;
}

void Engine::Complete(Launch& launch) {
  fence::FenceRef hw;
  std::shared_ptr<Launch> next;
  {
    absl::MutexLock l(&mu_);
    --on_cores_;
    if (!ring_.empty() && ring_.front().id == launch.id) {
      hw = std::move(ring_.front().hw);
      ring_.pop_front();
      head_started_ = false;
      if (!ring_.empty()) next = StartHeadLocked();
    }
  }
  if (next != nullptr) gpu_.Submit(std::move(next));
  if (hw == nullptr) return;  // forgotten by a reset meanwhile
  if (launch.faulted.load(std::memory_order_relaxed)) {
    hw->SetError(absl::InternalError(absl::StrCat(
        "GPU page fault at VA 0x", absl::Hex(launch.fault_va.load(std::memory_order_relaxed)),
        " (", KernelName(launch.dispatch.kind), ", ctx", launch.ctx, ")")));
  }
  hw->Signal();
}

sched::TimeoutStatus Engine::TimedOutJob(sched::Job& job) {
  auto& bad = static_cast<GpuJob&>(job);
  timeouts_.fetch_add(1, std::memory_order_relaxed);
  bool hung;
  {
    absl::MutexLock l(&mu_);
    hung = hung_;
  }
  timeline_.AddMark({lane_, absl::StrCat("timeout: ", bad.label), absl::Now(), true});
  // Slow (a sanitizer build), not hung: let it run on; the timer re-arms.
  if (!hung) return sched::TimeoutStatus::kNoHang;
  // The kernel's recipe for a hardware scheduler (sched/scheduler.h).
  scheduler_->Stop(&job);
  sched::Scheduler::IncreaseKarma(job);
  Reset();
  timeline_.AddMark({lane_, absl::StrCat("reset (", bad.label, " guilty)"), absl::Now(), true});
  scheduler_->ResubmitJobs();
  scheduler_->Start(absl::OkStatus());
  recoveries_.fetch_add(1, std::memory_order_relaxed);
  return sched::TimeoutStatus::kReset;
}

void Engine::Reset() {
  absl::MutexLock l(&mu_);
  ring_.clear();  // their hardware fences never signal: Stop detached the jobs from them
  head_started_ = false;
  hung_ = false;
  mu_.Await(absl::Condition(
      +[](Engine* e) ABSL_NO_THREAD_SAFETY_ANALYSIS { return e->on_cores_ == 0; }, this));
}

void Engine::CancelJob(sched::Job& job) {
  fence::FenceRef hw = static_cast<GpuJob&>(job).hw;
  {
    absl::MutexLock l(&mu_);
    // Let a running dispatch finish first: its workgroups use the context's memory.
    mu_.Await(absl::Condition(
        +[](Engine* e) ABSL_NO_THREAD_SAFETY_ANALYSIS { return e->on_cores_ == 0; }, this));
    const auto it = std::find_if(ring_.begin(), ring_.end(),
                                 [&](const Entry& e) { return e.hw == hw; });
    if (hw == nullptr || it == ring_.end()) return;
    if (it == ring_.begin()) head_started_ = true;  // nothing more starts during teardown
    ring_.erase(it);
  }
  hw->SetError(absl::CancelledError("ECANCELED: engine torn down"));
  hw->Signal();
}

}  // namespace gpu_emulator
