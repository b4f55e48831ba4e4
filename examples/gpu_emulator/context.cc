#include "examples/gpu_emulator/context.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "examples/gpu_emulator/gpu.h"
#include "examples/gpu_emulator/kernels.h"
#include "fence/fence_chain.h"
#include "sched/job.h"

namespace gpu_emulator {
namespace {

// The context's GPU address map (every context has its own VM, so they may coincide).
constexpr uint64_t kXva = uint64_t{1} << 32, kYva = uint64_t{2} << 32, kRva = uint64_t{5} << 32;
constexpr uint64_t kZva[2] = {uint64_t{3} << 32, uint64_t{4} << 32};
constexpr uint64_t kPage = 4096;
constexpr uint64_t kResultSlots = kPage / 8;  // one page of checksum words
static_assert(kResultSlots > Context::kWindow);
constexpr absl::Duration kStuck = absl::Seconds(60);

uint32_t Mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {  // splitmix64 of the four
  uint64_t z = a * 0x9e3779b97f4a7c15ull ^ b * 0xbf58476d1ce4e5b9ull ^ c * 0x94d049bb133111ebull ^
               (d + 1) * 0x2545f4914f6cdd1dull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}

uint64_t RoundUp(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

// Buffers whose size allows it are mapped with 64 KiB pages.
vm::PageSize BufferPageSize(uint64_t bytes) {
  return bytes % (64 * 1024) == 0 ? vm::PageSize::k64K : vm::PageSize::k4K;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Context>> Context::Create(const Device& device,
                                                         ContextOptions options) {
  std::unique_ptr<Context> c(new Context(device, std::move(options)));
  if (absl::Status s = c->Init(); !s.ok()) return s;
  return c;
}

Context::~Context() {
  compute_.reset();
  copy_.reset();
  bind_queue_.reset();
  vm_.reset();
}

absl::Status Context::Init() {
  vm::BindVmOptions vo;
  vo.scheduler = dev_.bind;
  absl::StatusOr<std::unique_ptr<vm::BindVm>> vm = vm::BindVm::Create(absl::StrCat("ctx", o_.id), vo);
  if (!vm.ok()) return vm.status();
  vm_ = std::move(*vm);
  absl::StatusOr<std::unique_ptr<vm::BindQueue>> q = vm::BindQueue::Create(*vm_);
  if (!q.ok()) return q.status();
  bind_queue_ = std::move(*q);
  for (auto [entity, sched] : {std::pair{&compute_, dev_.compute}, {&copy_, dev_.copy}}) {
    absl::StatusOr<std::unique_ptr<sched::Entity>> e =
        sched::Entity::Create({sched}, sched::Priority::kNormal, guilty_);
    if (!e.ok()) return e.status();
    *entity = std::move(*e);
  }
  const uint64_t size = RoundUp(bytes(), kPage);
  const vm::PageSize ps = BufferPageSize(size);
  x_ = vm::Bo::Create(size);
  y_ = vm::Bo::Create(size);
  r_ = vm::Bo::Create(kPage);
  vm::Ref<vm::Bo> z = vm::Bo::Create(size);
  z_va_ = kZva[0];
  const vm::BindOp ops[] = {vm::BindOp::Map(kXva, size, x_.get(), 0, ps),
                            vm::BindOp::Map(kYva, size, y_.get(), 0, ps),
                            vm::BindOp::Map(z_va_, size, z.get(), 0, ps),
                            vm::BindOp::Map(kRva, kPage, r_.get(), 0)};
  const absl::Time at = absl::Now();
  absl::StatusOr<fence::FenceRef> f = bind_queue_->Submit(ops);
  if (!f.ok()) return f.status();
  setup_bind_ = z_bind_ = *f;
  submitted_.push_back({"bind", -1, true, at, *f});
  ++result_.binds;
  return absl::OkStatus();
}

absl::Status Context::SubmitKernel(sched::Entity& entity, const Dispatch& d,
                                   std::vector<fence::FenceRef> deps, int iteration, bool hang) {
  auto job = std::make_unique<GpuJob>(
      *vm_, o_.id, d, absl::StrCat("ctx", o_.id, " ", KernelName(d.kind), " #", iteration), hang);
  if (absl::Status s = job->Init(&entity, 1); !s.ok()) return s;
  for (auto& dep : deps) {
    if (absl::Status s = job->AddDependency(std::move(dep)); !s.ok()) return s;
  }
  const absl::Time at = absl::Now();
  fence::FenceRef done = entity.Submit(std::move(job));
  timeline_ = fence::FenceChain::Create(timeline_, done, ++point_);
  submitted_.push_back({std::string(KernelName(d.kind)), iteration, false, at, std::move(done)});
  ++result_.jobs;
  return absl::OkStatus();
}

absl::Status Context::SubmitIteration(int i) {
  Iteration it{Mix(o_.seed, o_.id, i, 0), Mix(o_.seed, o_.id, i, 1),
               SaxpyFactor(Mix(o_.seed, o_.id, i, 2)), {}, absl::Now()};
  const size_t first_job = submitted_.size();
  const uint64_t n = o_.elements;
  // Fills overwrite X and Y: they wait for the previous iteration (its checksum's timeline point
  // implies all of it) as well as for the setup bind.
  absl::Status s = SubmitKernel(*compute_, {KernelKind::kFill, kXva, 0, n, it.seed_x, 0},
                                {setup_bind_, iteration_done_}, i, false);
  if (s.ok()) {
    s = SubmitKernel(*copy_, {KernelKind::kCopy, z_va_, kXva, n, 0, 0}, {timeline_, z_bind_}, i,
                     false);
  }
  if (s.ok()) {
    s = SubmitKernel(*compute_, {KernelKind::kFill, kYva, 0, n, it.seed_y, 0},
                     {setup_bind_, iteration_done_}, i, false);
  }
  // The fill-Y point implies fill X and the copy before it.
  if (s.ok()) {
    s = SubmitKernel(*compute_, {KernelKind::kSaxpy, kYva, z_va_, n, 0, it.a}, {timeline_}, i,
                     o_.hang && i == 1);
  }
  fence::FenceRef saxpy_point = timeline_;
  if (s.ok()) {
    s = SubmitKernel(*compute_,
                     {KernelKind::kChecksum, kRva + 8 * (i % kResultSlots), kYva, n, 0, 0},
                     {timeline_}, i, false);
  }
  if (!s.ok()) return s;
  for (size_t k = first_job; k < submitted_.size(); ++k) it.jobs.push_back(submitted_[k].done);
  iteration_done_ = timeline_;
  iterations_.push_back(std::move(it));
  ++result_.iterations;
  // Move Z: unmap it once the saxpy has read it, map a fresh BO at the other address.
  const uint64_t size = RoundUp(bytes(), kPage), new_va = z_va_ == kZva[0] ? kZva[1] : kZva[0];
  vm::Ref<vm::Bo> z = vm::Bo::Create(size);
  const vm::BindOp ops[] = {vm::BindOp::Unmap(z_va_, size),
                            vm::BindOp::Map(new_va, size, z.get(), 0, BufferPageSize(size))};
  if (o_.fault && i == 1) {
    vm_->InjectRunFault(0);
    dev_.timeline->AddMark({o_.lane, "page-table fault injected", absl::Now(), true});
  }
  const absl::Time at = absl::Now();
  absl::StatusOr<fence::FenceRef> f = bind_queue_->Submit(ops, {&saxpy_point, 1});
  if (!f.ok()) return f.status();
  submitted_.push_back({"rebind", i, true, at, *f});
  ++result_.binds;
  z_bind_ = *f;
  z_va_ = new_va;
  return absl::OkStatus();
}

std::string Context::FirstBindError() const {
  for (const Submitted& s : submitted_) {
    // The VM is marked unusable while the failing bind job runs, before its out-fence signals.
    if (s.is_bind && s.done->Wait(kStuck).ok() && !s.done->error().ok()) {
      return absl::StrCat(" (after ", s.name, " of iteration ", s.iteration,
                          " failed: ", s.done->error().ToString(), ")");
    }
  }
  return "";
}

void Context::Stop(ContextResult::End end, std::string why) {
  if (result_.end != ContextResult::End::kOk) return;
  result_.end = end;
  result_.why = std::move(why);
}

bool Context::Verify(int i) {
  const Iteration& it = iterations_[i];
  absl::Status e;
  for (const fence::FenceRef& job : it.jobs) {
    if (!job->Wait(kStuck).ok()) {
      Stop(ContextResult::End::kUnexpected,
           absl::StrCat("iteration ", i, ": a job did not finish within ",
                        absl::FormatDuration(kStuck)));
      return false;
    }
    if (e.ok()) e = job->error();
  }
  if (!e.ok()) {
    if (guilty_->load(std::memory_order_acquire)) {
      Stop(ContextResult::End::kGuilty, absl::StrCat("blamed for a GPU hang; jobs from iteration ",
                                                     i, " on cancelled (", e.ToString(), ")"));
    } else if (vm_->unusable()) {
      Stop(ContextResult::End::kVmUnusable,
           absl::StrCat("iteration ", i, ": ", e.ToString(), FirstBindError()));
    } else {
      Stop(ContextResult::End::kUnexpected, absl::StrCat("iteration ", i, ": ", e.ToString()));
    }
    return false;
  }
  // The checksum job finished (Wait: acquire): its result word is visible. Read it through the
  // BO's CPU mapping, then clear the slot for the iteration that reuses it.
  std::byte* word = r_->memory().data() + 8 * (i % kResultSlots);
  uint64_t got;
  std::memcpy(&got, word, sizeof got);
  std::memset(word, 0, sizeof got);
  const uint64_t want = ReferenceChecksum(it.seed_x, it.seed_y, it.a, o_.elements);
  if (got != want) {
    ++result_.mismatches;
    Stop(ContextResult::End::kUnexpected,
         absl::StrCat("checksum mismatch in iteration ", i, ": GPU 0x", absl::Hex(got),
                      ", CPU reference 0x", absl::Hex(want)));
    return false;
  }
  ++result_.verified;
  return true;
}

void Context::Run() {
  int verified_below = 0;  // iterations [0, verified_below) have been checked
  for (int i = 0;; ++i) {
    if (i >= kWindow && !Verify(verified_below++)) break;
    // At least three iterations, so that --hang and --fault always take effect.
    if (i >= 3 && (absl::Now() >= o_.deadline || result_.jobs + 5 > o_.max_jobs)) break;
    if (absl::Status s = SubmitIteration(i); !s.ok()) {
      if (vm_->unusable()) {
        Stop(ContextResult::End::kVmUnusable,
             absl::StrCat("iteration ", i, ": ", s.ToString(), FirstBindError()));
      } else {
        Stop(ContextResult::End::kUnexpected, absl::StrCat("iteration ", i, ": ", s.ToString()));
      }
      break;
    }
  }
  while (result_.end == ContextResult::End::kOk && verified_below < result_.iterations) {
    Verify(verified_below++);
  }
  WaitAll();
}

void Context::WaitAll() {
  for (const Submitted& s : submitted_) {
    if (!s.done->Wait(kStuck).ok()) {
      Stop(ContextResult::End::kUnexpected,
           absl::StrCat(s.name, " of iteration ", s.iteration, " never finished"));
      return;
    }
  }
}

ContextResult Context::Finish() {
  Timeline& tl = *dev_.timeline;
  const std::string ctx = absl::StrCat("ctx", o_.id);
  bool alerted = false;
  for (const Submitted& s : submitted_) {
    if (!s.done->IsSignaledFlag()) continue;
    const absl::Time end = s.done->timestamp();
    const absl::Status error = s.done->error();
    const std::string detail = absl::StrCat(ctx, " iteration ", s.iteration, " ", s.name,
                                            error.ok() ? "" : ": ", error.ok() ? "" : error.message());
    tl.NameJob(*s.done, s.name, detail, o_.color, !error.ok());
    if (s.is_bind) {
      tl.AddSpan({o_.lane, s.name, detail, s.at, end, "#7f7f7f", !error.ok()});
    } else {
      tl.AddMark({o_.lane, absl::StrCat(ctx, " ", s.name, " #", s.iteration, " signalled"), end,
                  false});
    }
    if (!error.ok() && !alerted && result_.end != ContextResult::End::kOk) {
      alerted = true;
      tl.AddMark({o_.lane, absl::StrCat(s.name, " failed: ", error.message()), end, true});
    }
    if (error.ok()) (s.is_bind ? result_.bind_ms : result_.job_ms)
        .push_back(absl::ToDoubleMilliseconds(end - s.at));
  }
  for (size_t i = 0; i < iterations_.size(); ++i) {
    const Iteration& it = iterations_[i];
    if (!it.jobs.back()->IsSignaledFlag()) continue;
    bool failed = false;
    for (const fence::FenceRef& job : it.jobs) failed |= !job->error().ok();
    tl.AddSpan({o_.lane, absl::StrCat("iter ", i), absl::StrCat(ctx, " iteration ", i), it.begin,
                it.jobs.back()->timestamp(), o_.color, failed});
  }
  return result_;
}

}  // namespace gpu_emulator
