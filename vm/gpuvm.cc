#include "vm/gpuvm.h"

#include <cstddef>
#include <initializer_list>
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

// Fetches the whole of a VA (the two cache lines its 72 bytes span in most allocations): a
// split/merge step reads and writes addr .. vm, the driver's VmBo::Unlink of a removed VA its
// list links, and a driver that recycles the VA rewrites all of it — each of them would
// otherwise miss on the second line after the walk's own miss had been paid.
void PrefetchVa(const Gpuva* va) {
  const char* p = reinterpret_cast<const char*>(va);
  for (size_t off = 0; off < sizeof(Gpuva); off += 64) __builtin_prefetch(p + off);
  __builtin_prefetch(p + sizeof(Gpuva) - 1);
}

// The VAs starting inside a walk's window that FirstOverlapping fetches ahead (a request of
// the bench's sizes covers up to three).
constexpr int kPrefetchVas = 3;

// Fetches the cache lines of the slots after `slot` in its btree node. A node is a NodePool
// block of kBlockBytes whose slots start 16 bytes in and end kTargetNodeBytes in, so the
// kTargetNodeBytes/2 bytes after a slot lie inside its block whatever its position: the
// prefetch never touches another allocation (a prefetch does not fault anyway), and it covers
// the slots a shift at that position moves in a node that is up to about half full after it.
void PrefetchLeafTail(const void* slot) {
  static_assert(internal::NodePool::kBlockBytes >= internal::NodePool::kTargetNodeBytes * 3 / 2);
  const char* p = static_cast<const char*>(slot);
  for (size_t off = 64; off < internal::NodePool::kTargetNodeBytes / 2; off += 64) {
    __builtin_prefetch(p + off);
  }
}

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
    finger_valid_ = false;
    ++gen_;
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

Gpuvm::TreeIt Gpuvm::UpperBound(uint64_t addr) const {
  auto& tree = const_cast<Tree&>(tree_);  // iterators only read here
  if (finger_valid_) {
    // The answer is the finger or one of its two successors, or one of its two predecessors.
    TreeIt c = finger_;
    const TreeIt end = tree.end();
    int steps = 0;
    bool found = false;
    while (c != end && c->first <= addr && steps < 2) {
      ++c;
      ++steps;
    }
    if (c == end || c->first > addr) {
      found = steps != 0;  // went forward: the predecessor stepped over is <= addr
      const TreeIt begin = tree.begin();
      for (int back = 0; back < 3 && !found; ++back) {
        if (c == begin) {
          found = true;
          break;
        }
        const TreeIt p = std::prev(c);
        if (p->first <= addr) {
          found = true;
        } else {
          c = p;
          ++steps;
        }
      }
    }
    Count(finger_steps_, steps);
    if (found) return c;
  }
  Count(searches_, 1);
  return tree.upper_bound(addr);
}

// The first VA ending after `start` (the one containing it, or the next), for a walk of
// [start, end). A search: the walks it starts are at random places.
Gpuvm::TreeIt Gpuvm::FirstOverlapping(uint64_t start, uint64_t end) const {
  auto& tree = const_cast<Tree&>(tree_);  // iterators only read here
  Count(searches_, 1);
  TreeIt it = tree.upper_bound(start);
  // On a tree bigger than the caches the search ends with a leaf that came from memory, and
  // everything the request touches next is a miss too: the VAs it visits (the predecessor's end
  // decides whether it is the first) and the rest of the leaf, which erasing or inserting at
  // `it` shifts. Fetch them all now, in parallel with the predecessor's VA, rather than one
  // miss after the other (callgrind of gpuvm_bench's requests at 10^6 VAs: about one more
  // last-level miss per request in the leaf's shift, and 0.8 on VA lines the walk had not read;
  // A/B: ~3% less CPU per request at 10^5 and 10^6, the remaining misses being the leaf and the
  // VAs themselves).
  if (it != tree.end()) {
    PrefetchLeafTail(&*it);
    TreeIt next = it;
    for (int i = 0; i < kPrefetchVas && next != tree.end() && next->first < end; ++i, ++next) {
      PrefetchVa(next->second);
    }
  }
  if (it != tree.begin()) {
    TreeIt prev = std::prev(it);
    PrefetchVa(prev->second);
    // A walk that starts at a VA's start may replace it with a VA whose insert checks the VA
    // before (its end): fetch that one too.
    if (prev->first == start && prev != tree.begin()) PrefetchVa(std::prev(prev)->second);
    if (prev->second->end() > start) return prev;
  }
  return it;
}

void Gpuvm::InsertUnchecked(Gpuva* va) {
  Count(searches_, 1);
  SetFinger(tree_.emplace(va->addr, va).first);
  ++gen_;
  va->vm = this;
}

absl::Status Gpuvm::Insert(Gpuva* va) {
  UDRM_CHECK(va->vm == nullptr, "vm::Gpuvm::Insert of a VA already in a tree");
  if (absl::Status s = CheckMapping(va->addr, va->range, va->bo, va->offset); !s.ok()) return s;
  // One search (none near the finger): the insert position, whose neighbours decide overlap.
  const TreeIt it = UpperBound(va->addr);
  if ((it != tree_.begin() && std::prev(it)->second->end() > va->addr) ||
      (it != tree_.end() && it->first < va->end())) {
    return absl::AlreadyExistsError("vm: the VA overlaps an existing mapping");
  }
  Get();
  SetFinger(tree_.emplace_hint(it, va->addr, va));
  ++gen_;
  va->vm = this;
  return absl::OkStatus();
}

Gpuvm::TreeIt Gpuvm::Locate(const Gpuva* va) {
  if (finger_valid_ && finger_ != tree_.end() && finger_->second == va) return finger_;
  TreeIt it = UpperBound(va->addr);
  UDRM_CHECK(it != tree_.begin(), "vm::Gpuvm: VA not in the tree");
  --it;
  UDRM_CHECK(it->second == va, "vm::Gpuvm: VA not in the tree");
  return it;
}

void Gpuvm::Remap(Gpuva* old, Gpuva* prev, Gpuva* next) {
  UDRM_CHECK(old != &kernel_node_, "vm::Gpuvm::Remap of the kernel node");
  UDRM_CHECK(old->vm == this, "vm::Gpuvm::Remap of a VA not in this VM");
  const bool pieces_inside =
      (prev != nullptr || next != nullptr) &&
      (prev == nullptr ||
       (prev->addr == old->addr && prev->range != 0 && prev->range < old->range)) &&
      (next == nullptr ||
       (next->end() == old->end() && next->addr > old->addr && next->addr < old->end())) &&
      (prev == nullptr || next == nullptr || prev->end() <= next->addr);
  auto valid = [this](const Gpuva* va) {
    return va == nullptr || CheckMapping(va->addr, va->range, va->bo, va->offset).ok();
  };
  if (!pieces_inside || !valid(prev) || !valid(next)) {
    // Not the shape a split produces: remove and insert as separate calls (they check).
    Get();  // the removal must not free the VM half-way
    Remove(old);
    for (Gpuva* va : {prev, next}) {
      if (va == nullptr) continue;
      UDRM_CHECK(va->vm == nullptr && Insert(va).ok(),
                 "vm: applying an op to a tree that does not reflect the earlier ops");
    }
    Put();
    return;
  }
  UDRM_CHECK((prev == nullptr || prev->vm == nullptr) && (next == nullptr || next->vm == nullptr),
             "vm::Gpuvm::Remap of a piece already in a tree");
  // The pieces lie inside `old`, so nothing else can overlap them: `prev` takes old's slot (same
  // key), `next` goes right after it. The VM reference of `old` passes to the first piece.
  TreeIt it = Locate(old);
  old->vm = nullptr;
  if (prev != nullptr) {
    it->second = prev;
    prev->vm = this;
    ++it;
  } else {
    it = tree_.erase(it);
  }
  if (next != nullptr) {
    if (prev != nullptr) Get();
    it = tree_.emplace_hint(it, next->addr, next);
    next->vm = this;
  } else {
    --it;  // prev's slot
  }
  SetFinger(it);
  ++gen_;
}

void Gpuvm::Remove(Gpuva* va) {
  UDRM_CHECK(va != &kernel_node_, "vm::Gpuvm::Remove of the kernel node");
  UDRM_CHECK(va->vm == this, "vm::Gpuvm::Remove of a VA not in this VM");
  SetFinger(tree_.erase(Locate(va)));
  ++gen_;
  va->vm = nullptr;
  Put();
}

Gpuva* Gpuvm::FindFirst(uint64_t addr, uint64_t range) const {
  if (range == 0) return nullptr;
  const uint64_t last = addr + (range - 1) < addr ? UINT64_MAX : addr + (range - 1);
  Count(searches_, 1);
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

Gpuvm::VaRange Gpuvm::Range(uint64_t start, uint64_t end) const {
  auto& tree = const_cast<Tree&>(tree_);  // iterators only read through a const VM
  return VaRange(this, nullptr, end > start ? FirstOverlapping(start, end) : tree.end(), end);
}

Gpuvm::VaRange Gpuvm::RangeForUpdate(uint64_t start, uint64_t end) {
  return VaRange(this, this, end > start ? FirstOverlapping(start, end) : tree_.end(), end);
}

Gpuvm::VaRange Gpuvm::All() const {
  return VaRange(this, nullptr, const_cast<Tree&>(tree_).begin(), UINT64_MAX);
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
