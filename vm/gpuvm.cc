#include "vm/gpuvm.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace vm {
namespace {

std::atomic<int64_t> g_live_vms{0};

bool AddOverflows(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum);
}

bool IsPowerOfTwo(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

}  // namespace

int64_t Gpuvm::live_count() { return g_live_vms.load(std::memory_order_relaxed); }

Gpuvm::Gpuvm(std::string name, uint64_t start, uint64_t range, Options options)
    : name_(std::move(name)),
      start_(start),
      range_(range),
      flags_(options.flags),
      granule_(options.granule),
      r_obj_(options.r_obj ? std::move(options.r_obj) : Bo::Create(0)),
      vm_bo_validate_(std::move(options.vm_bo_validate)) {
  g_live_vms.fetch_add(1, std::memory_order_relaxed);
}

absl::StatusOr<Ref<Gpuvm>> Gpuvm::Create(std::string name, uint64_t start, uint64_t range,
                                         uint64_t reserve_offset, uint64_t reserve_range,
                                         Options options) {
  const uint64_t g = options.granule;
  if (!IsPowerOfTwo(g)) return absl::InvalidArgumentError("Gpuvm: granule not a power of two");
  if (range == 0 || AddOverflows(start, range)) {
    return absl::InvalidArgumentError("Gpuvm: empty VA space or start+range overflows");
  }
  if (((start | range | reserve_offset | reserve_range) & (g - 1)) != 0) {
    return absl::InvalidArgumentError("Gpuvm: start, range or reserved range misaligned");
  }
  if (reserve_range != 0 &&
      (AddOverflows(reserve_offset, reserve_range) || reserve_offset < start ||
       reserve_offset + reserve_range > start + range)) {
    return absl::InvalidArgumentError("Gpuvm: kernel node outside the VA space");
  }
  auto* vm = new Gpuvm(std::move(name), start, range, std::move(options));
  if (reserve_range != 0) {
    vm->kernel_node_.addr = reserve_offset;
    vm->kernel_node_.range = reserve_range;
    vm->InsertUnchecked(&vm->kernel_node_);  // takes no VM reference (as the kernel's)
  }
  return Ref<Gpuvm>::Adopt(vm);
}

absl::StatusOr<Ref<Gpuvm>> Gpuvm::Create(std::string name, uint64_t start, uint64_t range,
                                         uint64_t reserve_offset, uint64_t reserve_range) {
  return Create(std::move(name), start, range, reserve_offset, reserve_range, Options());
}

Gpuvm::~Gpuvm() { g_live_vms.fetch_sub(1, std::memory_order_relaxed); }

void Gpuvm::Put() {
  const int before = refs_.fetch_sub(1, std::memory_order_acq_rel);
  UDRM_CHECK(before > 0, "vm::Gpuvm::Put without a reference");
  if (before != 1) return;
  // drm_gpuvm_fini.
  if (kernel_node_.range != 0) {
    tree_.erase(kernel_node_.addr);
    kernel_node_.vm = nullptr;
  }
  UDRM_CHECK(tree_.empty(), "vm::Gpuvm freed with VAs still in its tree");
  {
    absl::MutexLock l(&lists_mu_);
    UDRM_CHECK(extobjs_.empty(), "vm::Gpuvm freed with a non-empty extobj list");
    UDRM_CHECK(evicted_.empty(), "vm::Gpuvm freed with a non-empty evict list");
    UDRM_CHECK(deferred_.empty(), "vm::Gpuvm freed with VmBos awaiting DeferredCleanup");
  }
  delete this;
}

bool Gpuvm::RangeValid(uint64_t addr, uint64_t range) const {
  if (AddOverflows(addr, range)) return false;
  const uint64_t end = addr + range;
  if (addr < start_ || end > start_ + range_) return false;
  const uint64_t kstart = kernel_node_.addr;
  const uint64_t krange = kernel_node_.range;
  return !(krange != 0 && addr < kstart + krange && kstart < end);
}

absl::Status Gpuvm::CheckRange(uint64_t addr, uint64_t range) const {
  if (range == 0) return absl::InvalidArgumentError("vm: range of size 0");
  if (((addr | range) & (granule_ - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vm: range not aligned to the VM granule ", granule_));
  }
  if (!RangeValid(addr, range)) {
    return absl::InvalidArgumentError(
        "vm: range overflows, lies outside the VM or overlaps the kernel node");
  }
  return absl::OkStatus();
}

absl::Status Gpuvm::CheckMapping(uint64_t addr, uint64_t range, const Bo* bo,
                                 uint64_t offset) const {
  if (absl::Status s = CheckRange(addr, range); !s.ok()) return s;
  if (bo == nullptr) return absl::OkStatus();
  if ((offset & (granule_ - 1)) != 0) {
    return absl::InvalidArgumentError("vm: BO offset not aligned to the VM granule");
  }
  if (offset > bo->size() || range > bo->size() - offset) {
    return absl::InvalidArgumentError("vm: BO range beyond the BO's size");
  }
  return absl::OkStatus();
}

void Gpuvm::InsertUnchecked(Gpuva* va) {
  tree_.emplace(va->addr, va);
  va->vm = this;
}

absl::Status Gpuvm::Insert(Gpuva* va) {
  UDRM_CHECK(va->vm == nullptr, "vm::Gpuvm::Insert of a VA already in a tree");
  if (absl::Status s = CheckMapping(va->addr, va->range, va->bo, va->offset); !s.ok()) return s;
  if (FindFirst(va->addr, va->range) != nullptr) {
    return absl::AlreadyExistsError("vm: the VA overlaps an existing mapping");
  }
  Get();
  InsertUnchecked(va);
  return absl::OkStatus();
}

void Gpuvm::Remove(Gpuva* va) {
  UDRM_CHECK(va != &kernel_node_, "vm::Gpuvm::Remove of the kernel node");
  UDRM_CHECK(va->vm == this, "vm::Gpuvm::Remove of a VA not in this VM");
  auto it = tree_.find(va->addr);
  UDRM_CHECK(it != tree_.end() && it->second == va, "vm::Gpuvm::Remove: VA not in the tree");
  tree_.erase(it);
  va->vm = nullptr;
  Put();
}

Gpuva* Gpuvm::FindFirst(uint64_t addr, uint64_t range) const {
  if (range == 0) return nullptr;
  const uint64_t last = addr + (range - 1) < addr ? UINT64_MAX : addr + (range - 1);
  auto it = tree_.upper_bound(addr);
  if (it != tree_.begin()) {
    auto prev = std::prev(it);
    if (prev->second->end() > addr) return prev->second;
  }
  if (it != tree_.end() && it->first <= last) return it->second;
  return nullptr;
}

Gpuva* Gpuvm::Find(uint64_t addr, uint64_t range) const {
  Gpuva* va = FindFirst(addr, range);
  return va != nullptr && va->addr == addr && va->range == range ? va : nullptr;
}

Gpuva* Gpuvm::FindPrev(uint64_t start) const {
  if (start == 0 || !RangeValid(start - 1, 1)) return nullptr;
  return FindFirst(start - 1, 1);
}

Gpuva* Gpuvm::FindNext(uint64_t end) const {
  if (!RangeValid(end, 1)) return nullptr;
  return FindFirst(end, 1);
}

Gpuva* Gpuvm::FirstAtOrAfter(uint64_t key, uint64_t end) const {
  auto it = tree_.lower_bound(key);
  return it != tree_.end() && it->first < end ? it->second : nullptr;
}

Gpuvm::VaRange Gpuvm::Range(uint64_t start, uint64_t end) const {
  Gpuva* first = end > start ? FindFirst(start, end - start) : nullptr;
  return VaRange(this, first, end);
}

Gpuvm::VaRange Gpuvm::All() const {
  return VaRange(this, tree_.empty() ? nullptr : tree_.begin()->second, UINT64_MAX);
}

}  // namespace vm

namespace vm {

size_t Gpuvm::NodesForInserts(size_t height, size_t n) {
  // Insert i (from 0) needs at most height + growths(i) + 1 blocks, where growths(i), the root
  // splits possible before it, is 0 for i = 0 and 1 + (i-1)/k after (k = kTreeNodeSlots - 1).
  // Closed form of the sum; the callers bound n (ReserveInserts: <= kMaxReservedInserts).
  constexpr size_t k = internal::NodePool::kTreeNodeSlots - 1;
  if (n == 0) return 0;
  const size_t m = n - 1;  // inserts after the first: sum of 1 + j/k for j in [0, m)
  const size_t q = m / k;
  const size_t r = m % k;
  return n * (height + 1) + m + k * q * (q - 1) / 2 * (q != 0) + q * r;
}

absl::StatusOr<Gpuvm::InsertReservation> Gpuvm::ReserveInserts(size_t n) {
  if (n > kMaxReservedInserts) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "vm::Gpuvm::ReserveInserts: ", n, " inserts is more than one reservation covers"));
  }
  const size_t blocks = NodesForInserts(tree_.height(), n);
  if (absl::Status s = pool_.Reserve(blocks); !s.ok()) return s;
  Get();
  return InsertReservation(Ref<Gpuvm>::Adopt(this), blocks);
}

void Gpuvm::InsertReservation::Release() {
  if (!vm_) return;
  vm_->pool_.Unreserve(std::exchange(blocks_, 0));
  vm_.reset();
}

}  // namespace vm
