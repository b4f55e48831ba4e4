// vm::Gpuvm — the GPU VA manager (drm_gpuvm): the VA space [start, start+range) of one GPU VM,
// the tree of its mappings (Gpuva), the kernel-reserved node, the resv object whose resv every
// VM-private BO shares, and the lists of external and evicted BOs (VmBo).
//
// Ranges: [addr, addr+range), unit-agnostic, aligned to Options::granule. RangeValid() is the
// kernel's check (overflow, inside the VM, not overlapping the kernel node). Every entry point
// that takes a range from a driver validates it first and changes nothing on error:
// InvalidArgument for overflow, outside the VM, overlapping the kernel node, size 0, or
// misalignment (the kernel leaves zero and alignment to drivers; we reject them here).
//
// The tree is an absl::btree_map keyed by start address: the VAs of one VM never overlap, so the
// ordered map answers every query of the kernel's interval tree.
//
// Lifetime: reference counted. Create() returns the first reference; every inserted VA (not the
// kernel node) and every VmBo holds one. The last Put() runs Fini: it removes the kernel node and
// CRASHES (a contract check, the kernel WARNs) if a VA, an extobj, an evicted VmBo or a deferred
// VmBo is left — none can be, unless a reference was dropped without removing what held it.
// Because VAs hold references, tear VAs down in an explicit close path, never from a destructor.
//
// Thread-safety: the tree (Insert/Remove/Find*/iteration/split-merge/apply) is NOT synchronised:
// the driver serialises it (its VM lock). The extobj, evict and deferred lists have an internal
// mutex (lists_mu_), so VmBos may join or leave them from any thread.
//
// Allocation (VM_BIND updates the tree where it must not fail for lack of memory):
// - The tree's btree nodes come from a per-VM pool (vm/gpuvm_node_pool.h). ReserveInserts(n)
//   fills it for the worst case of n inserts; while that InsertReservation is alive, the next n
//   Insert calls (and ApplyMap / ApplyRemap, which insert through it) allocate nothing, whatever
//   Removes are interleaved (Remove never allocates: erasing frees or merges nodes, and freed
//   nodes go back to the pool).
// - Never allocating, reservation or not: Remove, ApplyUnmap, Find*/Range/iteration, the
//   split/merge walks in callback form (SmMap/SmUnmap; the steps themselves are the caller's),
//   and every VmBo list change — VmBo::Link/Unlink/UnlinkDefer, ExtobjAdd, Evict, Put,
//   PutDeferred, Obtain's and ObtainPrealloc's join of the BO's VmBo list, DeferredCleanup — all
//   lists are intrusive. (VmBo::Create / Obtain of a new VmBo allocate the VmBo itself: use
//   Create up front and ObtainPrealloc.) Error statuses allocate their message: the
//   allocation-free guarantee is for calls that succeed (Insert's contract under ApplyMap).
// - Allocating: Create, ReserveInserts, an Insert without a reservation, the *OpsCreate list
//   forms (the op vector), the *ForTesting snapshots.
#ifndef UDRM_VM_GPUVM_H_
#define UDRM_VM_GPUVM_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "exec/exec.h"
#include "vm/bo.h"
#include "vm/gpuva.h"
#include "vm/gpuvm_list.h"
#include "vm/gpuvm_node_pool.h"
#include "vm/gpuvm_ref.h"

namespace vm {

class VmBo;

class Gpuvm {
 public:
  enum Flags : uint32_t {
    // DRM_GPUVM_RESV_PROTECTED: the extobj/evict lists are only changed with the VM resv held;
    // VmBo::Evict of an external BO then only sets its flag, and PrepareObjects moves evicted
    // extobjs onto the evict list.
    kResvProtected = 1u << 0,
    // DRM_GPUVM_IMMEDIATE_MODE: the gpuva lock of a BO is Bo::gpuva_mu() (not its resv), so the
    // VM may change on the fence-signalling path; the last VmBo put may be deferred.
    kImmediateMode = 1u << 1,
    kUserBits = 1u << 2,
  };

  struct Options {
    uint32_t flags = 0;
    // Every address and range must be a multiple (a power of two; 1 = no alignment).
    uint64_t granule = 1;
    // The resv object (r_obj). Default: a new BO of size 0 with its own resv.
    Ref<Bo> r_obj;
    // ops->vm_bo_validate, called by Validate() for every VmBo on the evict list.
    std::function<absl::Status(VmBo&, exec::Exec&)> vm_bo_validate;
  };

  // drm_gpuvm_init. InvalidArgument (nothing created) if start+range overflows, range is 0, the
  // granule is not a power of two, or anything is misaligned. The kernel node
  // [reserve_offset, reserve_offset+reserve_range) is inserted if reserve_range != 0; it must
  // then lie inside the VM (InvalidArgument otherwise).
  static absl::StatusOr<Ref<Gpuvm>> Create(std::string name, uint64_t start, uint64_t range,
                                           uint64_t reserve_offset, uint64_t reserve_range,
                                           Options options);
  static absl::StatusOr<Ref<Gpuvm>> Create(std::string name, uint64_t start, uint64_t range,
                                           uint64_t reserve_offset, uint64_t reserve_range);
  Gpuvm(const Gpuvm&) = delete;
  Gpuvm& operator=(const Gpuvm&) = delete;

  void Get() { refs_.fetch_add(1, std::memory_order_relaxed); }
  // The last Put runs Fini (see top) and frees the VM.
  void Put();

  const std::string& name() const { return name_; }
  uint64_t start() const { return start_; }
  uint64_t range() const { return range_; }
  uint32_t flags() const { return flags_; }
  uint64_t granule() const { return granule_; }
  bool immediate_mode() const { return (flags_ & kImmediateMode) != 0; }
  bool resv_protected() const { return (flags_ & kResvProtected) != 0; }
  const Gpuva& kernel_node() const { return kernel_node_; }

  // The resv object and its resv (drm_gpuvm_resv_obj / drm_gpuvm_resv).
  Bo& r_obj() const { return *r_obj_; }
  fence::Resv& resv() const { return r_obj_->resv(); }
  // drm_gpuvm_is_extobj: the BO does not share the VM's resv.
  bool IsExtobj(const Bo& bo) const { return &bo.resv() != &r_obj_->resv(); }

  // drm_gpuvm_range_valid, exactly (a zero range passes).
  bool RangeValid(uint64_t addr, uint64_t range) const;
  // RangeValid plus size != 0 and granule alignment, as a status (InvalidArgument).
  absl::Status CheckRange(uint64_t addr, uint64_t range) const;
  // CheckRange plus, for a non-null `bo`, [offset, offset+range) inside it and offset aligned.
  absl::Status CheckMapping(uint64_t addr, uint64_t range, const Bo* bo, uint64_t offset) const;

  // drm_gpuva_insert: InvalidArgument (see CheckMapping), AlreadyExists if it overlaps a VA.
  // Takes a VM reference and sets va->vm. Contract: va is not in a tree. Allocates tree nodes
  // unless a reservation covers it (see ReserveInserts).
  absl::Status Insert(Gpuva* va);

  // Pre-allocates the tree nodes of `n` inserts, so that the next n successful Insert calls
  // (ApplyMap: 1 insert, ApplyRemap: 1 per prev/next piece) allocate nothing while the returned
  // reservation is alive (see the top). ResourceExhausted (nothing reserved) if memory runs
  // out. The bound (NodesForInserts) is the worst case: an insert may split every node on its
  // path and add a new root, height+1 nodes, and the height may grow during the n inserts.
  // Several reservations may be outstanding; each one's promise holds independently of the
  // others only if the inserts they cover are no more than the sum they reserved.
  // Thread-safety: as Insert (the driver's VM lock) — it reads the tree's height; the
  // reservation itself may be destroyed on any thread. Blocks (a mutex, and operator new).
  // More than this: ResourceExhausted (the bound grows as n^2/(2*(kTreeNodeSlots-1))).
  static constexpr size_t kMaxReservedInserts = size_t{1} << 20;
  class InsertReservation;
  [[nodiscard]] absl::StatusOr<InsertReservation> ReserveInserts(size_t n);
  // The blocks ReserveInserts(n) reserves for a tree of height `height`: sum over the n
  // inserts of (height before it + 1), the height growing by one at the first insert and then
  // at most once per kTreeNodeSlots-1 inserts (a new root holds one key and gains at most one
  // per insert before it can split again).
  static size_t NodesForInserts(size_t height, size_t n);
  // The btree's height (0 when empty) and node-pool statistics, for tests and the bench.
  size_t tree_height() const { return tree_.height(); }
  const internal::NodePool& node_pool() const { return pool_; }
  internal::NodePool& node_pool_for_testing() { return pool_; }
  // drm_gpuva_remove: drops the VM reference (which may free the VM: hold your own). Contracts
  // (crash): va is in this VM's tree and is not the kernel node.
  void Remove(Gpuva* va);
  // Remove of each of `vas`, which are consecutive in the tree (each the successor of the one
  // before: nothing lies between them), in one range erase — a leaf loses a run of slots in one
  // shift and is rebalanced once, where one Remove per VA shifts and rebalances it per VA. Same
  // tree and same references as the Removes in order. A crash (contract), before anything
  // changes, wherever Remove of one of them would crash (the first VA not in this VM's tree
  // says so from the tree search), or if the VAs are not consecutive. Allocates nothing.
  void RemoveRun(std::span<Gpuva* const> vas);

  // The tree part of drm_gpuva_remap: replaces `old` by its surviving pieces `prev` / `next`
  // (either may be null), as Remove(old) then Insert of each piece would — same tree, same
  // references, same crashes — but in place when the pieces have the shape a split produces
  // (prev starts at old's start, next ends at old's end, both inside old): no search, no
  // allocation for prev (it takes old's slot), one hinted insert for next. Contract (crash):
  // old is in this VM's tree and not the kernel node; the pieces are in no tree and fit.
  void Remap(Gpuva* old, Gpuva* prev, Gpuva* next);

  // drm_gpuva_find_first: the first VA overlapping [addr, addr+range); nullptr for range 0.
  Gpuva* FindFirst(uint64_t addr, uint64_t range) const;
  // drm_gpuva_find: the VA exactly [addr, addr+range), or nullptr.
  Gpuva* Find(uint64_t addr, uint64_t range) const;
  // drm_gpuva_find_prev: the VA containing start-1 (nullptr if none or start-1 is not valid).
  Gpuva* FindPrev(uint64_t start) const;
  // drm_gpuva_find_next: the VA containing `end` (nullptr if none or `end` is not valid).
  Gpuva* FindNext(uint64_t end) const;
  // drm_gpuvm_interval_empty.
  bool IntervalEmpty(uint64_t addr, uint64_t range) const {
    return FindFirst(addr, range) == nullptr;
  }
  // VAs in the tree, kernel node included.
  size_t va_count() const { return tree_.size(); }

  // The tree's work so far, for the bench (the algorithmic cost of a request, apart from the
  // memory it touches). A search descends from the root to a leaf: tree_height() nodes. Finger
  // steps are the iterator moves by which Insert/Remove/Remap and the update walk find their
  // place without a search (mostly inside one leaf). Rebalancing after an insert or erase
  // (amortised O(1) nodes) is not counted. Counted with relaxed load+store (no atomic
  // read-modify-write): exact for one thread; concurrent const readers may lose counts.
  uint64_t tree_searches() const { return searches_.load(std::memory_order_relaxed); }
  uint64_t finger_steps() const { return finger_steps_.load(std::memory_order_relaxed); }

  // drm_gpuvm_for_each_va_range_safe: the VAs overlapping [start, end) in address order, the
  // kernel node included. The body may remove (and free) the current VA, and insert VAs outside
  // [current VA's end, end); it must not touch VAs later in the range.
  class RangeIterator;
  class VaRange;
  VaRange Range(uint64_t start, uint64_t end) const;
  // Range for a walk whose body changes the tree at the current VA (split/merge applied at
  // once): the same VAs, and the VM's finger (see below) follows the walk, so removing the
  // current VA and inserting its pieces costs no search. Not for concurrent readers (writes).
  VaRange RangeForUpdate(uint64_t start, uint64_t end);
  // Every VA, in address order (same removal rule).
  VaRange All() const;

  // --- VmBo lists (vm/vm_bo.h uses these) ---
  // drm_gpuvm_bo_deferred_cleanup: frees the VmBos whose last reference went by
  // VmBo::PutDeferred. Blocks (BO gpuva locks). Contract: the caller holds a VM reference.
  void DeferredCleanup() ABSL_LOCKS_EXCLUDED(lists_mu_);
  // Snapshots with a reference on each VmBo still alive (kref_get_unless_zero).
  std::vector<Ref<VmBo>> ExtobjsForTesting() const ABSL_LOCKS_EXCLUDED(lists_mu_);
  std::vector<Ref<VmBo>> EvictedForTesting() const ABSL_LOCKS_EXCLUDED(lists_mu_);

  static int64_t live_count();

 private:
  friend class VmBo;
  friend absl::Status PrepareObjects(Gpuvm&, exec::Exec&, size_t);
  friend absl::Status Validate(Gpuvm&, exec::Exec&);
  enum class List { kExtobj, kEvict };

  Gpuvm(std::string name, uint64_t start, uint64_t range, Options options);
  ~Gpuvm();
  void InsertUnchecked(Gpuva* va);
  std::vector<Ref<VmBo>> Snapshot(List which) const ABSL_LOCKS_EXCLUDED(lists_mu_);
  using TreeAlloc = internal::PoolAllocator<std::pair<const uint64_t, Gpuva*>>;
  // The map by start address, with its height (absl keeps it in its protected btree): an
  // absl::btree_map with NodePool::kTargetNodeBytes nodes (absl's own alias fixes 256).
  using TreeBase = absl::container_internal::btree_map_container<
      absl::container_internal::btree<absl::container_internal::map_params<
          uint64_t, Gpuva*, std::less<uint64_t>, TreeAlloc,
          internal::NodePool::kTargetNodeBytes, /*IsMulti=*/false>>>;
  class Tree : public TreeBase {
   public:
    explicit Tree(internal::NodePool* pool) : TreeBase(TreeAlloc(pool)) {}
    size_t height() const { return this->tree_.height(); }
  };
  using TreeIt = Tree::iterator;
  // tree_.upper_bound(addr), without a search when the finger is within two entries of it.
  // Const (reads the finger only), so concurrent const readers stay safe.
  TreeIt UpperBound(uint64_t addr) const;
  TreeIt FirstOverlapping(uint64_t start, uint64_t end) const;
  // The iterator of `va`, which must be in the tree (crash otherwise); O(1) at the finger.
  TreeIt Locate(const Gpuva* va);
  void SetFinger(TreeIt it) {
    finger_ = it;
    finger_valid_ = true;
    finger_last_ = false;
  }
  // The finger at the last slot, without storing an iterator (see finger_last_).
  void SetFingerLast() {
    finger_valid_ = true;
    finger_last_ = true;
  }
  // The finger (contract: finger_valid_).
  TreeIt Finger() const {
    return finger_last_ ? std::prev(const_cast<Tree&>(tree_).end()) : finger_;
  }
  static void Count(std::atomic<uint64_t>& c, uint64_t n) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  std::atomic<int> refs_{1};
  const std::string name_;
  const uint64_t start_;
  const uint64_t range_;
  const uint32_t flags_;
  const uint64_t granule_;
  Ref<Bo> r_obj_;
  Gpuva kernel_node_;
  internal::NodePool pool_;  // the tree's nodes; before tree_ (destroyed after it)
  Tree tree_{&pool_};        // by addr; driver-serialised (see top)
  // Changes of tree_ so far (a RangeIterator re-locates after one).
  uint64_t gen_ = 0;
  // The finger: an iterator into tree_ at the last change (the inserted VA, or the successor of
  // the removed one) or at the VA an update walk is at. Every change of tree_ sets it or clears
  // finger_valid_, so it is always a valid iterator while finger_valid_. Insert and Remove start
  // from it when it is near (a remap is an erase and two inserts at the same place).
  TreeIt finger_;
  bool finger_valid_ = false;
  // The finger is the last slot (an append; finger_ unused): read from the rightmost leaf when
  // needed. Copying the iterator an append produces costs a store-forwarding stall (its narrow
  // stores read back with one wide load): a third of Insert's samples in batched maps.
  bool finger_last_ = false;
  mutable std::atomic<uint64_t> searches_{0};      // see tree_searches()
  mutable std::atomic<uint64_t> finger_steps_{0};  // see finger_steps()

  mutable absl::Mutex lists_mu_;
  internal::IntrusiveList<VmBo, internal::ExtobjTag> extobjs_ ABSL_GUARDED_BY(lists_mu_);
  internal::IntrusiveList<VmBo, internal::EvictTag> evicted_ ABSL_GUARDED_BY(lists_mu_);
  internal::IntrusiveList<VmBo, internal::DeferredTag> deferred_ ABSL_GUARDED_BY(lists_mu_);
  std::function<absl::Status(VmBo&, exec::Exec&)> vm_bo_validate_;
};

// A promise of tree nodes (Gpuvm::ReserveInserts). Move-only; destroying it (or Release) gives
// the unused part back to the pool, which frees what it does not cache. Holds a VM reference.
class Gpuvm::InsertReservation {
 public:
  InsertReservation() = default;
  InsertReservation(InsertReservation&& o) noexcept
      : vm_(std::move(o.vm_)), blocks_(std::exchange(o.blocks_, 0)) {}
  InsertReservation& operator=(InsertReservation&& o) noexcept {
    if (this != &o) {
      Release();
      vm_ = std::move(o.vm_);
      blocks_ = std::exchange(o.blocks_, 0);
    }
    return *this;
  }
  ~InsertReservation() { Release(); }
  // Gives the reservation back now (idempotent).
  void Release();
  size_t blocks() const { return blocks_; }

 private:
  friend class Gpuvm;
  InsertReservation(Ref<Gpuvm> vm, size_t blocks) : vm_(std::move(vm)), blocks_(blocks) {}
  Ref<Gpuvm> vm_;
  size_t blocks_ = 0;
};

// Iteration that tolerates removal of the current VA: the iterator remembers where the current
// VA ends. While the tree is unchanged a step is an iterator increment; after a change (the
// body removed or inserted VAs) it looks the next VA up from there — through the VM's finger,
// so without a search when the change was at the current VA (the split/merge steps).
class Gpuvm::RangeIterator {
 public:
  Gpuva* operator*() const { return va_; }
  RangeIterator& operator++() {
    if (vm_->gen_ == gen_) {
      ++it_;
    } else {
      it_ = vm_->UpperBound(next_ - 1);  // the first VA at or after next_ (> 0: a VA's end)
      gen_ = vm_->gen_;
    }
    Settle();
    return *this;
  }
  bool operator!=(const RangeIterator& o) const { return va_ != o.va_; }

 private:
  friend class Gpuvm;
  friend class VaRange;
  RangeIterator(const Gpuvm* vm, Gpuvm* update, TreeIt it, uint64_t end)
      : vm_(vm), update_(update), it_(it), end_(end), gen_(vm->gen_) {
    Settle();
  }
  RangeIterator() = default;  // the end sentinel
  void Settle() {
    va_ = it_ != vm_->tree_.end() && it_->first < end_ ? it_->second : nullptr;
    if (va_ == nullptr) return;
    next_ = va_->end();
    if (update_ != nullptr) update_->SetFinger(it_);
  }
  const Gpuvm* vm_ = nullptr;
  Gpuvm* update_ = nullptr;  // RangeForUpdate: the VM whose finger follows the walk
  TreeIt it_;
  Gpuva* va_ = nullptr;
  uint64_t next_ = 0;
  uint64_t end_ = 0;
  uint64_t gen_ = 0;
};

class Gpuvm::VaRange {
 public:
  RangeIterator begin() const { return RangeIterator(vm_, update_, first_, end_); }
  RangeIterator end() const { return RangeIterator(); }

 private:
  friend class Gpuvm;
  VaRange(const Gpuvm* vm, Gpuvm* update, TreeIt first, uint64_t end)
      : vm_(vm), update_(update), first_(first), end_(end) {}
  const Gpuvm* vm_;
  Gpuvm* update_;
  TreeIt first_;
  uint64_t end_;
};

}  // namespace vm

#endif  // UDRM_VM_GPUVM_H_
