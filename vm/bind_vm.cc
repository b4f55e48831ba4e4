#include "vm/bind_vm.h"

#include <cstdlib>
#include <iterator>
#include <new>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/time/clock.h"

#include "base/check.h"
#include "base/sanitizers.h"
#include "exec/exec.h"
#include "vm/bind_steps.h"
#include "vm/gpuvm_exec.h"
#include "vm/internal/failslab.h"
#include "vm/vm_bo.h"

namespace vm {

namespace {

template <typename T>
T* CallocArray(size_t n) {
  void* p = std::calloc(n, sizeof(T));
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<T*>(p);
}

}  // namespace

void BindVm::FreeDeleter::operator()(void* p) const { std::free(p); }

absl::StatusOr<std::unique_ptr<BindVm>> BindVm::Create(std::string name, BindVmOptions options) {
  if (options.gpuvm_flags & Gpuvm::kImmediateMode) {
    return absl::InvalidArgumentError("BindVm: kImmediateMode is not supported");
  }
  if (options.device_slots == 0) options.device_slots = kSlots;
  if (options.device_slots < 2 || options.device_slots > kSlots) {
    return absl::InvalidArgumentError("BindVm: device_slots must be in [2, kSlots]");
  }
  absl::StatusOr<std::unique_ptr<PageTable>> pt = PageTable::Create(options.va_bits);
  if (!pt.ok()) return pt.status();
  Gpuvm::Options go;
  go.flags = options.gpuvm_flags;
  go.granule = PageBytes(PageSize::k4K);
  absl::StatusOr<Ref<Gpuvm>> g = Gpuvm::Create(name, 0, (*pt)->va_limit(), 0, 0, std::move(go));
  if (!g.ok()) return g.status();
  std::unique_ptr<BindVm> vm(new BindVm(std::move(name), options));
  vm->pt_ = *std::move(pt);
  vm->gpuvm_ = *std::move(g);
  if (options.scheduler == nullptr) {
    vm->own_backend_ = std::make_unique<BindBackend>();
    absl::StatusOr<std::unique_ptr<sched::Scheduler>> s =
        CreateBindScheduler(vm->own_backend_.get(), "vm-bind");
    if (!s.ok()) return s.status();
    vm->own_scheduler_ = *std::move(s);
    vm->scheduler_ = vm->own_scheduler_.get();
  }
  return vm;
}

BindVm::BindVm(std::string name, BindVmOptions options)
    : scheduler_(options.scheduler),
      slot_count_(options.device_slots),
      slot_host_(CallocArray<std::byte*>(options.device_slots)),
      slot_refs_(CallocArray<uint32_t>(options.device_slots)),
      slot_next_(CallocArray<uint32_t>(options.device_slots)) {
  (void)name;
  {
    absl::MutexLock l(&buffers_mu_);
    buffers_.reserve(kBuffersMax);
  }
  cleanup_thread_ = std::thread([this] { CleanupLoop(); });
}

BindVm::~BindVm() {
  if (gpuvm_) Close();
  {
    absl::MutexLock l(&cleanup_mu_);
    stop_cleanup_ = true;
  }
  cleanup_thread_.join();
  own_scheduler_.reset();
  DrainCaches();
}

absl::StatusOr<fence::FenceRef> BindVm::Submit(sched::Entity& entity, std::span<const BindOp> ops,
                                               std::span<const fence::FenceRef> in_fences,
                                               std::stop_token cancel) {
  if (absl::Status s = ValidateBind(*this, ops, in_fences); !s.ok()) return s;
  // References to every locked BO, released after the exec unlocks (declared first): the job may
  // run and drop the last reference to a BO it unmapped before this call unlocks it (drm_exec
  // holds an object reference for the same reason).
  absl::InlinedVector<Ref<Bo>, 16> locked;
  // A job run on the CPU fast path is retired (its unused reservation handed back, the job queued
  // for cleanup) after the exec unlocks (declared before it): that work needs no lock, and the
  // resvs of BOs shared with other VMs are held for less time.
  struct RetireAfterUnlock {
    BindVm* vm;
    std::unique_ptr<BindJob> job;
    ~RetireAfterUnlock() {
      if (job != nullptr) vm->Retire(std::move(job));
    }
  } retire{this, nullptr};
  exec::Exec exec(exec::Exec::kIgnoreDuplicates | exec::Exec::kInterruptibleWait, cancel);
  // The VM resv first; under it the tree-side pre-allocation (the plan, the page tables, the
  // nodes: most of the work), and only then the BOs — their resvs, which binds of other VMs
  // sharing the BOs need too, are held for the VmBo lookups and ApplyBind, not for the
  // pre-allocation. A back-off unlocks everything: the job is kept if the tree and the range
  // tracker did not change meanwhile (another bind of this VM), else made again.
  std::unique_ptr<BindJob> job;
  uint64_t job_changes = 0;
  absl::Status locked_status = exec.UntilAllLocked([&](exec::Exec& e) -> absl::Status {
    if (absl::Status s = PrepareVm(*gpuvm_, e, 1); !s.ok()) return s;
    // Under the VM resv from here: unusable/closed cannot change our decision half-way.
    if (closed()) return absl::FailedPreconditionError("VM closed");
    if (unusable()) return absl::FailedPreconditionError("VM unusable");
    if (job == nullptr || job_changes != tree_changes()) {
      job.reset();
      absl::StatusOr<std::unique_ptr<BindJob>> j = PreallocBindTree(*this, entity, ops, in_fences);
      if (!j.ok()) return j.status();
      job = *std::move(j);
      job_changes = tree_changes();
    }
    return LockBindBos(*this, e, ops);
  });
  if (!locked_status.ok()) return locked_status;
  if (absl::Status s = PreallocBindBos(*this, ops, *job); !s.ok()) return s;
  if (internal::ShouldFailAlloc("locked BO list")) {
    return absl::ResourceExhaustedError("bind: allocating the locked-BO list failed");
  }
  locked.reserve(exec.objects().size());
  for (exec::Object* o : exec.objects()) locked.push_back(Ref<Bo>::Share(static_cast<Bo*>(o)));
  // The CPU fast path (xe_migrate_update_pgtables' CPU update): decided, and its out-fence
  // allocated, before the tree changes, so nothing can fail after ApplyBind on either path.
  fence::FenceRef inline_out;
  if (CanRunInlineLocked(*job)) {
    if (internal::ShouldFailAlloc("inline out-fence")) {
      return absl::ResourceExhaustedError("bind: allocating the out-fence failed");
    }
    inline_out = fence::Fence::Create(inline_fences_.context(), inline_fences_.NextSeqno());
  } else if (absl::Status s = PreallocPush(*this, *job); !s.ok()) {
    return s;
  }
  ApplyBind(*this, ops, *job);
  if (inline_out == nullptr) return PushLocked(entity, std::move(job), ops);
  // The BOs' resvs guarded the VmBo links ApplyBind changed; the fast path adds no fence to
  // them, and its page-table work needs only the VM resv (as RunJob needs none): another VM's
  // bind on the same BOs need not wait for it.
  for (size_t i = exec.objects().size(); i-- > 0;) {
    exec::Object* o = exec.objects()[i];
    if (&o->resv() != &gpuvm_->resv()) exec.UnlockObj(o);
  }
  retire.job = RunInlineLocked(std::move(job), inline_out);
  return inline_out;
}

bool BindVm::CanRunInlineLocked(BindJob& job) {
  // Pushes happen under the VM resv, which the caller holds: no job can appear until it unlocks.
  // A job counts until its FreeJob (after its finished fence signalled and any catch-up ran).
  if (unfinished_.load(std::memory_order_acquire) != 0) return false;
  uint64_t bytes = 0;
  for (const AddrRange& r : job.ranges_) bytes += r.range;  // merged: no byte counted twice
  if (bytes > kInlineMaxBytes) return false;
  for (const fence::FenceRef& dep : job.dependencies()) {
    if (dep == nullptr) continue;
    if (!dep->IsSignaled() || !dep->error().ok()) return false;  // errors: the queued path
  }
  return true;
}

std::unique_ptr<BindJob> BindVm::RunInlineLocked(std::unique_ptr<BindJob> job,
                                                 const fence::FenceRef& out) {
  bool ok;
  {
    absl::MutexLock l(&pt_mu_);
    ok = ExecuteLocked(*job);
  }
  inline_runs_.fetch_add(1, std::memory_order_relaxed);
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
  if (!ok) out->SetError(absl::InternalError("simulated page-table fault"));
  out->Signal();
  return job;
}

fence::FenceRef BindVm::PushLocked(sched::Entity& entity, std::unique_ptr<BindJob> job,
                                   std::span<const BindOp> ops) {
  (void)entity;
  BindJob* bind = job.get();
  sched::ArmedJob armed = sched::Job::Arm(std::move(job));
  fence::FenceRef out = armed.finished();
  {
    absl::MutexLock l(&pt_mu_);
    bind->finished_ = out;
    LinkPendingLocked(bind);
  }
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
  unfinished_.fetch_add(1, std::memory_order_acq_rel);
  NoteTreeChange();  // the range tracker
  gpuvm_->resv().AddFence(out, fence::ResvUsage::kBookkeep);
  for (fence::Resv* resv : bind->extobj_resvs_) resv->AddFence(out, fence::ResvUsage::kKernel);
  ranges_.Record(bind->ranges_, out, bind->range_nodes_);
  std::move(armed).Push();  // `bind` may be freed from here on
  return out;
}

void BindVm::LinkPendingLocked(BindJob* job) {
  job->pending_prev_ = pending_tail_;
  job->pending_next_ = nullptr;
  (pending_tail_ == nullptr ? pending_head_ : pending_tail_->pending_next_) = job;
  pending_tail_ = job;
}

void BindVm::UnlinkPendingLocked(BindJob* job) {
  (job->pending_prev_ == nullptr ? pending_head_ : job->pending_prev_->pending_next_) =
      job->pending_next_;
  (job->pending_next_ == nullptr ? pending_tail_ : job->pending_next_->pending_prev_) =
      job->pending_prev_;
  job->pending_prev_ = job->pending_next_ = nullptr;
}

absl::StatusOr<uint64_t> BindVm::AssignDeviceAddress(std::byte* host) {
  uint64_t target = 0;
  if (absl::Status s = AssignDeviceAddresses({&host, 1}, {&target, 1}); !s.ok()) return s;
  return target;
}

absl::Status BindVm::AssignDeviceAddresses(std::span<std::byte* const> hosts,
                                           std::span<uint64_t> targets) {
  size_t n = 0;
  {
    absl::MutexLock l(&slot_mu_);  // once for the list
    for (; n < hosts.size(); ++n) {
      size_t slot;
      if (free_slot_ != 0) {
        slot = free_slot_;
        free_slot_ = slot_next_[slot];
      } else if (fresh_slot_ < slot_count_) {
        slot = fresh_slot_++;
      } else {
        break;
      }
      targets[n] = uint64_t{slot} << kSlotShift;
    }
  }
  slots_in_use_.fetch_add(n, std::memory_order_relaxed);
  for (size_t i = 0; i < n; ++i) {
    const size_t slot = targets[i] >> kSlotShift;
    std::atomic_ref<uint32_t>(slot_refs_[slot]).store(1, std::memory_order_relaxed);
    // Published to readers by the release stores that link the mapping's PTEs (Map, in RunJob).
    std::atomic_ref<std::byte*>(slot_host_[slot]).store(hosts[i], std::memory_order_release);
  }
  if (n < hosts.size()) return absl::ResourceExhaustedError("device-address window exhausted");
  return absl::OkStatus();
}

void BindVm::RefDeviceAddress(uint64_t target) {
  if (target == 0) return;
  std::atomic_ref<uint32_t>(slot_refs_[target >> kSlotShift])
      .fetch_add(1, std::memory_order_relaxed);
}

void BindVm::UnrefDeviceAddress(uint64_t target) {
  if (DropDeviceAddressRef(target)) FreeSlots({&target, 1});
}

bool BindVm::DropDeviceAddressRef(uint64_t target) {
  if (target == 0) return false;
  const uint32_t was = std::atomic_ref<uint32_t>(slot_refs_[target >> kSlotShift])
                           .fetch_sub(1, std::memory_order_acq_rel);
  UDRM_CHECK(was != 0, "BindVm: device-address slot reference underflow");
  return was == 1;
}

void BindVm::FreeSlots(std::span<const uint64_t> targets) {
  if (targets.empty()) return;
  slots_in_use_.fetch_sub(targets.size(), std::memory_order_relaxed);
  absl::MutexLock l(&slot_mu_);
  for (uint64_t target : targets) {
    const size_t slot = target >> kSlotShift;
    slot_next_[slot] = free_slot_;
    free_slot_ = static_cast<uint32_t>(slot);
  }
}

void BindVm::UnrefDeviceAddresses(std::span<const uint64_t> targets) {
  uint64_t freed[64];
  size_t n = 0;
  for (uint64_t t : targets) {
    if (!DropDeviceAddressRef(t)) continue;
    freed[n++] = t;
    if (n == std::size(freed)) {
      FreeSlots({freed, n});
      n = 0;
    }
  }
  FreeSlots({freed, n});
}

void BindVm::DestroyVa(BindVa* va) {
  UnrefDeviceAddress(va->target);
  delete va;
}

namespace {
#if UDRM_SANITIZER
constexpr bool kCacheVas = false;  // every node really freed: ASan sees a use after DestroyVa
#else
constexpr bool kCacheVas = true;
#endif
}  // namespace

void BindVm::TakeVas(size_t n, BindVaList& out) {
  if (!kCacheVas) return;
  absl::MutexLock l(&va_cache_mu_);
  while (out.size() < n && !va_cache_.empty()) out.Push(va_cache_.Pop());
}

void BindVm::TakeBuffers(BindJob& job) {
  absl::MutexLock l(&buffers_mu_);
  if (buffers_.empty()) return;
  job.SwapBuffers(buffers_.back());
  buffers_.pop_back();  // the job's lists were new: nothing to free
}

void BindVm::ReturnBuffers(BindJob& job) {
  job.entries_.clear();
  job.plan_.clear();
  job.vm_bos_.clear();
  job.targets_.clear();
  job.ranges_.clear();
  job.extobj_resvs_.clear();
  if (job.entries_.capacity() > 2 * kBufferKeepMax || job.plan_.capacity() > 2 * kBufferKeepMax ||
      job.vm_bos_.capacity() > kBufferKeepMax || job.targets_.capacity() > kBufferKeepMax ||
      job.ranges_.capacity() > kBufferKeepMax || job.extobj_resvs_.capacity() > kBufferKeepMax) {
    return;  // a rare long list (or a failed bind's): its memory goes with the job
  }
  absl::MutexLock l(&buffers_mu_);
  if (buffers_.size() == kBuffersMax) return;
  job.SwapBuffers(buffers_.emplace_back());
}

void BindVm::RecycleVas(BindVaList& vas) {
  if (vas.empty()) return;
  BindVaList keep;
  uint64_t freed[64];  // slots whose last reference went: freed under one lock per 64
  size_t n = 0;
  while (!vas.empty()) {
    BindVa* va = vas.Pop();
    if (DropDeviceAddressRef(va->target)) {
      freed[n++] = va->target;
      if (n == std::size(freed)) {
        FreeSlots({freed, n});
        n = 0;
      }
    }
    if (!kCacheVas) {
      delete va;
      continue;
    }
    *va = BindVa();
    keep.Push(va);
  }
  FreeSlots({freed, n});
  {
    absl::MutexLock l(&va_cache_mu_);
    while (!keep.empty() && va_cache_.size() < kVaCacheMax) va_cache_.Push(keep.Pop());
  }
  while (!keep.empty()) delete keep.Pop();
}

const std::byte* BindVm::HostAddress(const Translation& t) const {
  if (!t.valid || (t.flags & kPteSparse) != 0) return nullptr;
  const uint64_t slot = t.address >> kSlotShift;
  if (slot == 0 || slot >= slot_count_) return nullptr;
  const std::byte* base = std::atomic_ref<std::byte*>(slot_host_[slot]).load(std::memory_order_acquire);
  return base + (t.address & ((uint64_t{1} << kSlotShift) - 1));
}

bool BindVm::ExecuteLocked(BindJob& job) {
  const int fault = fault_at_entry_.exchange(-1, std::memory_order_relaxed);
  bool failed = false;
  const std::vector<BindEntry>& entries = job.entries_;
  for (size_t k = 0; k < entries.size();) {
    const BindEntry& e = entries[k];
    // One page-table call per map entry, or per run of adjacent unmap entries (reserved as one
    // call by ReservePageTables: the same grouping, PageTableCallEnd).
    const size_t end = PageTableCallEnd(entries, k);
    if (fault >= static_cast<int>(k) && fault < static_cast<int>(end)) {
      failed = true;
      MarkUnusable();
    }
    if (e.kind == BindEntry::Kind::kMap) {
      if (!failed && !unusable()) {  // msm: stop mapping new things, keep unmapping
        job.inv_.Absorb(pt_->Map(e.va, e.range, e.target, e.pte_flags, e.page_size, job.tables_));
      }
    } else {
      const BindEntry& last = entries[end - 1];
      job.inv_.Absorb(pt_->Unmap(e.va, last.va + last.range - e.va, job.tables_));
    }
    k = end;
  }
  job.ran_ = true;
  return !failed;
}

void BindVm::CatchUpLocked(BindJob* job) {
  UnlinkPendingLocked(job);
  MarkUnusable();  // a bind job that never ran: the tree and the page table disagree
  ExecuteLocked(*job);
}

void BindVm::CatchUpKilledLocked() {
  for (BindJob* j = pending_head_; j != nullptr;) {
    BindJob* next = j->pending_next_;
    // Only a job that will never run has a signalled finished fence while pending: a job that
    // runs leaves the list (under pt_mu_) before its fence can signal.
    if (j->finished_->IsSignaledFlag()) CatchUpLocked(j);
    j = next;
  }
}

absl::StatusOr<fence::FenceRef> BindVm::RunJob(BindJob& job) {
  absl::MutexLock l(&pt_mu_);
  UnlinkPendingLocked(&job);
  for (const fence::FenceRef& dep : job.dependencies()) {
    if (dep != nullptr && dep->IsSignaledFlag() && !dep->error().ok()) {
      // A failed producer, or a bind job that failed or was killed on our ranges: execute the
      // killed jobs' unmaps before ours (this job's maps are skipped: the VM is unusable).
      MarkUnusable();
      CatchUpKilledLocked();
    }
  }
  if (!ExecuteLocked(job)) return absl::InternalError("simulated page-table fault");
  return fence::FenceRef(nullptr);
}

void BindVm::FreeJob(std::unique_ptr<BindJob> job) {
  {
    absl::MutexLock l(&pt_mu_);
    if (!job->ran_) CatchUpLocked(job.get());  // killed or cancelled: still execute its unmaps
  }
  unfinished_.fetch_sub(1, std::memory_order_acq_rel);
  Retire(std::move(job));
}

void BindVm::Retire(std::unique_ptr<BindJob> job) {
  // What the op list did not use goes back now, not after the grace period: those pages were
  // never linked, and the next bind's reservation finds them in the page table's pool.
  UnreservePageTables(*pt_, job->tables_);
  absl::MutexLock l(&cleanup_mu_);
  BindJob* j = job.release();
  if (cleanup_tail_ == nullptr) {
    cleanup_head_ = j;
    cleanup_first_ = absl::Now();
  } else {
    cleanup_tail_->cleanup_next_ = j;
  }
  cleanup_tail_ = j;
  ++cleanup_queued_;
}

void BindVm::Cleanup(BindJob* batch) {
  Invalidation inv;
  for (BindJob* j = batch; j != nullptr; j = j->cleanup_next_) inv.Absorb(std::move(j->inv_));
  pt_->Release(std::move(inv));  // one grace period for the whole batch
  while (batch != nullptr) {
    std::unique_ptr<BindJob> job(batch);
    batch = batch->cleanup_next_;
    UnreservePageTables(*pt_, job->tables_);
    job->entries_.clear();  // drops the BO references: their PTEs are gone from every reader
    job.reset();            // frees the removed Gpuvas (and their device-address slots)
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void BindVm::CleanupLoop() {
  for (;;) {
    BindJob* batch = nullptr;
    {
      absl::MutexLock l(&cleanup_mu_);
      bool due = false;
      if (cleanup_head_ == nullptr && !stop_cleanup_) {
        // After a batch, wait up to kCleanupDelay for the next one without being woken by each
        // job that arrives (a stream of binds then pays no wake-up in Retire: the timer wakes
        // this thread); what arrived meanwhile is taken when it expires, at most kCleanupDelay
        // after it came. Only when nothing came does the next Retire wake us.
        cleanup_mu_.AwaitWithTimeout(absl::Condition(this, &BindVm::CleanupDueLocked),
                                     kCleanupDelay);
        due = cleanup_head_ != nullptr;
      }
      if (!due) {
        cleanup_mu_.Await(absl::Condition(this, &BindVm::CleanupReadyLocked));
        if (cleanup_head_ == nullptr) return;  // stopping
        cleanup_mu_.AwaitWithDeadline(absl::Condition(this, &BindVm::CleanupDueLocked),
                                      cleanup_first_ + kCleanupDelay);
      }
      batch = std::exchange(cleanup_head_, nullptr);
      cleanup_tail_ = nullptr;
      cleanup_queued_ = 0;
    }
    Cleanup(batch);
    absl::MutexLock l(&cleanup_mu_);  // wakes WaitIdle
  }
}

bool BindVm::CleanupReadyLocked() const { return cleanup_head_ != nullptr || stop_cleanup_; }

bool BindVm::CleanupDueLocked() const {
  return cleanup_queued_ >= kCleanupBatch || idle_waiters_ > 0 || stop_cleanup_;
}

void BindVm::WaitIdle() {
  absl::MutexLock l(&cleanup_mu_);
  ++idle_waiters_;
  cleanup_mu_.Await(absl::Condition(
      +[](BindVm* vm) { return vm->in_flight_.load(std::memory_order_acquire) == 0; }, this));
  --idle_waiters_;
}

void BindVm::Close() {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  WaitIdle();
  Gpuvm& g = *gpuvm_;
  std::vector<Ref<Bo>> refs;
  std::vector<BindVa*> vas;
  Invalidation inv;
  {
    exec::Exec exec(exec::Exec::kIgnoreDuplicates);
    absl::Status st = exec.UntilAllLocked([&](exec::Exec& e) -> absl::Status {
      if (absl::Status s = PrepareVm(g, e, 0); !s.ok()) return s;
      for (Gpuva* va : g.All()) {
        if (va == &g.kernel_node() || va->bo == nullptr) continue;
        if (absl::Status s = e.LockObj(va->bo); !s.ok()) return s;
      }
      return absl::OkStatus();
    });
    UDRM_CHECK(st.ok(), "BindVm::Close: locking failed");
    ranges_.Clear();
    NoteTreeChange();
    absl::StatusOr<Prealloc> pre = pt_->ReserveForUnmap(0, pt_->va_limit());
    UDRM_CHECK(pre.ok(), "BindVm::Close: reservation failed");
    {
      absl::MutexLock l(&pt_mu_);
      inv = pt_->Unmap(0, pt_->va_limit(), *pre);
    }
    pt_->Unreserve(*std::move(pre));
    for (Gpuva* va : g.All()) {
      if (va == &g.kernel_node()) continue;
      vas.push_back(static_cast<BindVa*>(va));
    }
    for (BindVa* va : vas) {
      refs.push_back(Ref<Bo>::Share(va->bo));
      if (va->vm_bo != nullptr) VmBo::Unlink(va);
      g.Remove(va);
    }
  }
  pt_->Release(std::move(inv));
  refs.clear();
  for (BindVa* va : vas) DestroyVa(va);
  DrainCaches();  // a closed VM binds no more
}

void BindVm::DrainCaches() {
  {
    absl::MutexLock l(&buffers_mu_);
    buffers_.clear();  // capacity kept: ReturnBuffers never allocates
  }
  absl::MutexLock l(&va_cache_mu_);
  while (!va_cache_.empty()) delete va_cache_.Pop();
}

}  // namespace vm
