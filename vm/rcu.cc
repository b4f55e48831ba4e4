#include "vm/rcu.h"

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "base/check.h"
#include "base/sanitizers.h"

namespace vm {
namespace {

// One registered reader thread's state, on a cache line of its own: the only line a grace period
// reads for that reader, and the only one the reader writes (once when a section starts, once
// when it ends).
struct alignas(64) ReaderSlot {
  // Odd while the owning thread is inside a (outermost) read-side section: each section's start
  // adds one (a read-modify-write, so that it continues the release sequence of the previous
  // end) and its end adds one (a release store). Never reset, so a grace period that saw an odd
  // value knows the section ended as soon as the value changes.
  std::atomic<uint64_t> seq{0};
  std::atomic<bool> in_use{true};
  ReaderSlot* next = nullptr;  // immutable once published
};

// Every slot ever made, newest first. Slots are never freed (a thread that unregisters leaves its
// slot for the next thread that registers), so a grace period walks the list without a lock and
// without allocating, and registration never waits for a grace period in progress. The list is
// as long as the largest number of reader threads registered at once.
std::atomic<ReaderSlot*> slots{nullptr};

thread_local ReaderSlot* my_slot = nullptr;
thread_local int nesting = 0;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

ReaderSlot* ClaimSlot() {
  for (ReaderSlot* s = slots.load(std::memory_order_acquire); s != nullptr; s = s->next) {
    bool free = false;
    if (!s->in_use.load(std::memory_order_relaxed) &&
        s->in_use.compare_exchange_strong(free, true, std::memory_order_acquire)) {
      return s;
    }
  }
  auto* s = new ReaderSlot;
  s->next = slots.load(std::memory_order_relaxed);
  while (!slots.compare_exchange_weak(s->next, s, std::memory_order_release,
                                      std::memory_order_relaxed)) {
  }
  return s;
}

// Waits until the reader of `s`, seen inside a section with `seq` (odd), has left it. Spins first
// (a section is normally a batch of translations: microseconds), then yields, then sleeps (the
// reader may be descheduled inside its section). The reader never has to wake the writer.
void WaitForSectionEnd(const ReaderSlot& s, uint64_t seq) {
  for (int i = 0; i < 2000; ++i) {
    if (s.seq.load(std::memory_order_acquire) != seq) return;
    CpuRelax();
  }
  for (int i = 0; i < 100; ++i) {
    if (s.seq.load(std::memory_order_acquire) != seq) return;
    sched_yield();
  }
  auto nap = std::chrono::microseconds(20);
  while (s.seq.load(std::memory_order_acquire) == seq) {
    std::this_thread::sleep_for(nap);
    if (nap < std::chrono::microseconds(250)) nap *= 2;
  }
}

}  // namespace

RcuReaderThread::RcuReaderThread() {
  UDRM_CHECK(my_slot == nullptr, "RcuReaderThread registered twice on one thread");
  my_slot = ClaimSlot();
}

RcuReaderThread::~RcuReaderThread() {
  UDRM_CHECK(nesting == 0, "RcuReaderThread destroyed inside an RcuReadSection");
  my_slot->in_use.store(false, std::memory_order_release);
  my_slot = nullptr;
}

bool RcuReaderThread::IsRegistered() { return my_slot != nullptr; }

RcuReadSection::RcuReadSection() {
  UDRM_DCHECK(my_slot != nullptr, "RcuReadSection on a thread without an RcuReaderThread");
  if (nesting++ != 0) return;
  ReaderSlot& s = *my_slot;
  s.seq.fetch_add(1, std::memory_order_seq_cst);  // odd: inside
  // Pairs with RcuSynchronize's barrier: either the grace period sees this section (odd), or
  // every load of the section sees what the writer unhooked before the grace period began.
#if (defined(__x86_64__) || defined(__i386__)) && UDRM_SANITIZER != 'T'
  // x86: the locked add above is itself a full barrier (a locked instruction is not reordered
  // with later loads), so a second one (GCC: lock orq $0,(%rsp); clang: mfence) is only cost;
  // the compiler must still not hoist the section's loads above the add.
  std::atomic_signal_fence(std::memory_order_seq_cst);
#else
  internal::FullBarrier();  // elsewhere, and for TSan, which models the fence, not the hardware
#endif
}

RcuReadSection::~RcuReadSection() {
  if (--nesting != 0) return;
  ReaderSlot& s = *my_slot;
  // Even: outside. Release: every load of the section happens-before a grace period that
  // reads this value (or a later one) and then frees.
  s.seq.store(s.seq.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

void RcuSynchronize() {
  UDRM_DCHECK(nesting == 0, "RcuSynchronize inside an RcuReadSection (deadlock)");
  // The caller's unhooking stores before the reads of the readers' state (see RcuReadSection).
  internal::FullBarrier();
  for (const ReaderSlot* s = slots.load(std::memory_order_acquire); s != nullptr; s = s->next) {
    const uint64_t seq = s->seq.load(std::memory_order_acquire);
    if (seq & 1) WaitForSectionEnd(*s, seq);
  }
}

}  // namespace vm
