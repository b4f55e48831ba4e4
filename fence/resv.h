// fence::Resv — dma_resv: the fences of a buffer object, by usage, behind a ww-mutex.
//
// What it is: the set of fences that guard one object's memory, each tagged with a usage class.
// Usage classes are ordered KERNEL < WRITE < READ < BOOKKEEP, and a query for usage U returns every
// fence whose usage is at or below U (KERNEL: memory-management fences only; WRITE: + writers;
// READ: + readers; BOOKKEEP: everything). A new writer waits for UsageRw(true) = READ (readers and
// writers); a new reader waits for UsageRw(false) = WRITE.
//
// Locking: writers (Reserve, AddFence, Replace, Copy, ForEachLocked) hold the Resv's WwMutex (lock
// it directly, through an exec::Exec, or with the forwarding Lock*() methods) and crash if it is
// not locked. Readers need no lock: GetFences/ForEachUnlocked/TestSignaled/Wait/GetSingleton work
// on a consistent snapshot, read-copy-update style. A list a reader holds is never changed: a
// change publishes a new list by swapping one pointer under a latch that readers hold only to
// read that pointer and count their reference; the old list is reclaimed by its last reader
// (reference counting that ThreadSanitizer sees, unlike liburcu), or reused by the writer when no
// reader holds it. An AddFence() that finds no reader holding the published list (and room in
// it) changes that list where it is, under the same latch, which no reader can tell apart from
// a new list: a snapshot taken before sees the old entries, one taken after the new ones.
//
// Reservations: Reserve(n) pre-allocates for the next n AddFence() calls (reusing a list kept
// from the last cycle when it can, see Memory), so that AddFence —
// called after a job is armed, i.e. in the fence-signalling critical section — never allocates.
// Reservations last until Unlock(). Unlike the kernel, where replacing a same-context fence needs
// no slot, every AddFence() here uses one reservation: it may have to publish a new list, so
// readers never see a slot half updated (fence and usage change together).
//
// Lifetime: the Resv must be unlocked when destroyed (WwMutex contract). Snapshots returned to
// readers hold their own references and outlive changes to the Resv.
//
// Memory (bench/fence_bench VALUE resv_bytes, counted from the allocator as usable bytes of
// the blocks, libstdc++/glibc, x86-64): an empty Resv holds 104 B — the object's block (104 B;
// here allocated with new); it publishes no list until a fence is added. A list is one block: a
// 24-byte header and 24 bytes per entry, room for at least 4 (120 B). A Resv that has been
// reserved keeps one more list after Unlock() (at most 64 entries): the list its last AddFence()
// replaced, or an unused reservation, reused by the next Reserve() so that the lock / Reserve /
// AddFence / Unlock cycle of a submission allocates nothing.
//
// Memory ordering: a fence added by AddFence() before Unlock() is seen by any reader whose
// snapshot is taken after the AddFence() returned (release/acquire on the publication latch).
#ifndef UDRM_FENCE_RESV_H_
#define UDRM_FENCE_RESV_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ww/ww_mutex.h"
#include "fence/fence.h"

namespace fence {

enum class ResvUsage : uint8_t { kKernel = 0, kWrite = 1, kRead = 2, kBookkeep = 3 };

// dma_resv_usage_rw: what a new access must wait for. write ? READ : WRITE.
inline ResvUsage UsageRw(bool write) { return write ? ResvUsage::kRead : ResvUsage::kWrite; }

// reservation_ww_class: the Wait-Die class every Resv uses unless given another.
ww::WwClass& ReservationWwClass();

class Resv {
 public:
  struct Entry {
    FenceRef fence;
    ResvUsage usage;
  };

  explicit Resv(ww::WwClass* ww_class = &ReservationWwClass());
  Resv(const Resv&) = delete;
  Resv& operator=(const Resv&) = delete;
  ~Resv();

  // dma_resv_lock and friends: see ww::WwMutex for results and contracts.
  ww::WwMutex& lock() { return lock_; }
  absl::Status Lock(ww::WwAcquireContext* ctx) { return lock_.Lock(ctx); }
  absl::Status LockInterruptible(ww::WwAcquireContext* ctx, std::stop_token cancel) {
    return lock_.LockInterruptible(ctx, std::move(cancel));
  }
  void LockSlow(ww::WwAcquireContext* ctx) { lock_.LockSlow(ctx); }
  absl::Status LockSlowInterruptible(ww::WwAcquireContext* ctx, std::stop_token cancel) {
    return lock_.LockSlowInterruptible(ctx, std::move(cancel));
  }
  bool TryLock(ww::WwAcquireContext* ctx = nullptr) { return lock_.TryLock(ctx); }
  // dma_resv_unlock: drops unused reservations, then unlocks.
  void Unlock() {
    if (spare_lists_ == 0) {  // no list to keep or drop (the common case): inline
      spare_count_ = 0;
      lock_.Unlock();
      return;
    }
    UnlockSlow();
  }

  // --- Writers: the lock must be held (contract). ---

  // dma_resv_reserve_fences: room for the next `n` AddFence() calls. InvalidArgument for n == 0,
  // ResourceExhausted if the list would pass 2^30 entries (nothing changes either way).
  absl::Status Reserve(size_t n) {
    // The common case, inline: one fence, backed by the list kept from the last cycle, which is
    // not even touched (see EnsureSpares).
    if (n == 1 && spare_count_ == 0 && spare_lists_ == 0 && lock_.IsLocked() &&
        recycled_capacity_ > (list_ != nullptr ? list_->size : 0)) {
      spare_count_ = 1;
      return absl::OkStatus();
    }
    return ReserveSlow(n);
  }
  // Reservations left before Unlock().
  size_t reserved() const { return spare_count_; }
  // dma_resv_add_fence: takes a reference. Replaces the first entry that is of the same context
  // with usage >= `usage` (no stronger) and not later than `fence`; otherwise appends. Entries
  // whose fence has signalled are dropped (the kernel reuses their slots). Never allocates, never
  // blocks. Contracts: a reservation is left; `fence` is not a container (chain or array).
  void AddFence(FenceRef fence, ResvUsage usage);
  // dma_resv_replace_fences: every fence of `context` becomes `replacement` with `usage`.
  // Allocates (not for the signalling path).
  void Replace(uint64_t context, const FenceRef& replacement, ResvUsage usage);
  // dma_resv_copy_fences: this Resv's fences become `src`'s unsignalled ones (src unlocked).
  void Copy(const Resv& src);
  // dma_resv_for_each_fence: every entry with usage <= `usage`, signalled ones included.
  template <typename F>
  void ForEachLocked(ResvUsage usage, F&& f) const {
    CheckLocked();
    if (list_ == nullptr) return;
    for (const Entry& e : *list_) {
      if (e.usage <= usage) f(e.fence, e.usage);
    }
  }

  // --- Readers: no lock. ---

  // dma_resv_for_each_fence_unlocked over a snapshot: unsignalled entries with usage <= `usage`.
  template <typename F>
  void ForEachUnlocked(ResvUsage usage, F&& f) const {
    Snapshot list(*this);
    for (const Entry& e : list) {
      if (e.usage <= usage && !e.fence->IsSignaled()) f(e.fence, e.usage);
    }
  }
  // dma_resv_get_fences: the same, collected.
  std::vector<Entry> GetFences(ResvUsage usage) const;
  // dma_resv_get_singleton: null if none pending, the fence if one, else a new FenceArray of
  // them. Never add the result back to a Resv (it is a container).
  FenceRef GetSingleton(ResvUsage usage) const;
  // dma_resv_test_signaled: no unsignalled fence with usage <= `usage`.
  bool TestSignaled(ResvUsage usage) const;
  // dma_resv_wait_timeout: waits for the fences present now. Results as Fence::Wait().
  absl::StatusOr<absl::Duration> Wait(ResvUsage usage, absl::Duration timeout,
                                      std::stop_token cancel = {}) const;
  // dma_resv_set_deadline.
  void SetDeadline(ResvUsage usage, absl::Time deadline) const;

 private:
  // A published fence list: unchanged while a reader holds it, reference-counted, its entries inline
  // after the header (one allocation). Readers hold a reference; the published slot holds one.
  // While unpublished (a reservation, or the recycled list) it belongs to the writer alone.
  struct List {
    std::atomic<int32_t> refs;
    uint32_t size;
    uint32_t capacity;
    List* next_spare;  // the writer's chain of reservations
    Entry* entries() { return reinterpret_cast<Entry*>(this + 1); }
    const Entry* begin() const { return reinterpret_cast<const Entry*>(this + 1); }
    const Entry* end() const { return begin() + size; }
  };
  // A reader's reference to the list published when it was made (empty if none).
  class Snapshot {
   public:
    explicit Snapshot(const Resv& r) : list_(r.Acquire()) {}
    Snapshot(const Snapshot&) = delete;
    Snapshot& operator=(const Snapshot&) = delete;
    ~Snapshot() {
      if (list_ != nullptr) Release(list_);
    }
    const Entry* begin() const { return list_ != nullptr ? list_->begin() : nullptr; }
    const Entry* end() const { return list_ != nullptr ? list_->end() : nullptr; }

   private:
    List* const list_;
  };

  static List* NewList(uint32_t capacity);
  static void DestroyList(List* l);
  static void ClearList(List* l);
  // Drops a reader's reference; the last one destroys the list.
  static void Release(List* l);
  List* Acquire() const;
  void CheckLocked() const;
  // Publishes `next` (owned by the slot from now on; null: no fences) and keeps or releases the
  // list it replaced.
  void Publish(List* next);
  // A list just unpublished: kept for the next reservation if no reader holds it.
  void Recycle(List* old);
  absl::Status ReserveSlow(size_t n);
  void UnlockSlow();
  void EnsureSpares(size_t needed);
  void SetRecycled(List* l);
  List* TakeSpareList();
  // AddFence when no reader holds the published list and it has room: changed where it is.
  // False (nothing changed) otherwise.
  bool AddInPlace(FenceRef& fence, ResvUsage usage);
  // AddFence's last resort: a copy of the list into a reservation's list, published. Takes
  // `fence` (moved from).
  void AddByCopy(FenceRef& fence, ResvUsage usage);
  // AddInPlace for a list of one entry that `fence` takes the place of (signalled or replaced).
  inline bool ReplaceSingle(FenceRef& fence, ResvUsage usage);  // defined in resv.cc
  // Whether `fence` with `usage` takes the place of `e` (same context, no stronger, not earlier).
  static bool Replaces(const Fence& fence, ResvUsage usage, const Entry& e);
  void LatchLock() const;
  void LatchUnlock() const { latch_.store(false, std::memory_order_release); }
  const List* current() const { return list_; }

  // A replaced list with room for more entries than this is freed rather than kept.
  static constexpr uint32_t kRecycleMaxEntries = 64;
  // AddInPlace plans with a 64-bit mask of the entries kept.
  static constexpr uint32_t kInPlaceMaxEntries = 64;

  // Layout: what a lock / Reserve(1) / AddFence / Unlock cycle touches is the first 48 bytes —
  // these 24 and the first 24 of lock_ (its state word, holder stamp and class) — so that a
  // writer reads one or two cache lines of the Resv, not the lock's line and then another.
  // Guards the publication of list_ against a reader between reading list_ and counting its
  // reference (held for a pointer swap or a pointer read and an increment, nothing else).
  mutable std::atomic<bool> latch_{false};
  uint32_t spare_count_ = 0;  // writer state below is protected by lock_ (a ww-mutex, which
                              // thread-safety annotations cannot name)
  // The published list (null: no fences). Written under lock_ and latch_; read by readers under
  // latch_ and by the writer (under lock_) freely.
  List* list_ = nullptr;
  uint32_t spare_lists_ = 0;        // lists in spares_ (0 exactly when spares_ is null)
  uint32_t recycled_capacity_ = 0;  // recycled_'s, so that Reserve() need not touch it
  ww::WwMutex lock_;
  // Reservations are backed by unpublished lists, one per reservation left (spare_count_), each
  // with room for the list plus one entry per reservation: those chained here through
  // next_spare, and recycled_ where it lies (counted when the chain is one short; see
  // EnsureSpares). An AddFence() that copies uses one (the chain first); one that changes the
  // list in place uses none, and the chain's lists wait for the next Reserve() (or recycled_ at
  // Unlock()).
  List* spares_ = nullptr;
  // One empty list for the next reservation: the list an AddFence() replaced, once no reader
  // holds it, or a reservation left unused at Unlock(). With it, a lock / Reserve(1) / AddFence /
  // Unlock cycle allocates nothing.
  List* recycled_ = nullptr;
};

}  // namespace fence

#endif  // UDRM_FENCE_RESV_H_
