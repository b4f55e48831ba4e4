// vm::Rcu — the read-copy-update domain that protects page-table pages from lockless readers.
//
// What it is: readers mark read-side sections; a writer that has unhooked memory calls
// RcuSynchronize() and may free it afterwards, because every reader that could still see it has
// left its section.
//
// How (issue 13): each registered reader owns one sequence word on a cache line of its own, odd
// while it is inside a section. A section's start is one locked add on that word and a full
// barrier; its end is one plain release store. A grace period reads every registered reader's
// word once and, for a reader it finds inside a section, waits until the word changes (spinning,
// then yielding, then sleeping: the reader never has to wake the writer). So a grace period costs
// a reader only the transfer of its own line (about two cache misses per grace period, none when
// no grace period runs), and nothing else: no global counter that every grace period writes, no
// futex wake in the reader, no IPI. This replaced liburcu's "mb" flavour, whose read_unlock took
// two barriers and read the grace-period line that every synchronize_rcu writes (and made a
// futex wake system call when the writer had gone to sleep): with a writer issuing ~400k grace
// periods/s, the reader of pagetable_bench spent 21% of its time in read_lock/read_unlock (5%
// without the writer). liburcu's "memb" flavour interrupts readers with membarrier IPIs instead
// (1.8x slower translation with a busy writer), and QSBR needs periodic quiescent-state calls.
// With PageTable::ReleaseDeferred's batching (~64x fewer grace periods) liburcu-mb is still
// measurably slower: pagetable_bench -c opt, this file vs main's liburcu-mb rcu.{h,cc}, both
// with the deferred writer, 5 alternated processes each (nice -20, --benchmark_min_time=0.2, on
// a 2-core machine at load ~8, so single runs vary 2-5x), median ns per translation, own/urcu:
// writer:1 hot 4K 11.1/15.5, 64K 5.0/10.3, 2M 5.6/13.2; cold 4K 19.8/31.1, 64K 9.5/17.8,
// 2M 7.1/15.8; TLB hot 4K 3.0/7.6, 64K 3.8/7.6, 2M 4.1/7.8; TLB cold 4K 31/120, 64K 12/104,
// 2M 17/28; Section hot 4K 3.8/6.0, 64K 3.1/4.4, 2M 3.8/6.0; Section cold 4K 50/55, 64K 21/55,
// 2M 18/33. No writer: hot 4K 7.7/5.7, 64K 5.9/8.4, 2M 4.4/4.8; cold 4K 17.6/15.3, 64K
// 10.7/11.8, 2M 4.6/9.4; TLB hot 2.5/4.6, 1.8/4.8, 1.8/3.2; Section hot 1.9/3.0, 2.0/4.4,
// 2.2/2.7. Every writer:1 row favours this implementation by 10% to 8x (the fastest runs too:
// hot 2M 4.2/7.9, TLB cold 64K 11.7/21.1), which is why liburcu (the project's RCU library
// otherwise) is not used here.
//
// ThreadSanitizer sees the ordering a grace period provides through the sequence words' own
// acquire/release (a section's end is a release store; a grace period acquire-loads the word;
// a section's start is a read-modify-write, so it continues the release sequence).
//
// What reader threads must do: register once (an RcuReaderThread object alive on the thread for
// as long as it reads), and do every lockless access inside an RcuReadSection, ideally one section
// per batch of accesses (a job, a draw, a warp). Sections nest and are wait-free. A registered
// thread outside a section does not delay grace periods; a thread that stays inside one delays
// every writer's RcuSynchronize() until it leaves. Registration is lock-free and never waits for a
// grace period; a thread's slot (64 bytes) is kept after it unregisters, for the next thread
// that registers, so the memory is bounded by the largest number of reader threads at once.
//
// Not async-signal-safe: a section started in a signal handler that interrupted the thread
// between a section's nesting update and its sequence-word update is not seen by grace
// periods. No fork() while any thread is inside a section: the child inherits that thread's odd
// word without the thread, and every grace period in the child waits for it forever.
//
// Synchronize() blocks until every section that began before it has ended. It must not be called
// from inside a read-side section (that deadlocks), nor while holding a lock that readers take
// inside their sections. Any number of threads may call it at once (they do not wait for each
// other).
#ifndef UDRM_VM_RCU_H_
#define UDRM_VM_RCU_H_

#include <atomic>
#include <cstdint>

#include "base/sanitizers.h"

namespace vm {

// Registers the calling thread as an RCU reader for the object's lifetime. Not movable.
class RcuReaderThread {
 public:
  RcuReaderThread();
  ~RcuReaderThread();
  RcuReaderThread(const RcuReaderThread&) = delete;
  RcuReaderThread& operator=(const RcuReaderThread&) = delete;
  // True if the calling thread is registered (debug checks).
  static bool IsRegistered();
};

// A read-side critical section (rcu_read_lock / rcu_read_unlock). The thread must be registered.
class RcuReadSection {
 public:
  RcuReadSection();
  ~RcuReadSection();
  RcuReadSection(const RcuReadSection&) = delete;
  RcuReadSection& operator=(const RcuReadSection&) = delete;
};

// synchronize_rcu: waits for a grace period. Memory ordering: everything any reader did inside a
// section that ended before this returns happens-before the return (and TSan knows it).
void RcuSynchronize();

namespace internal {
// A full barrier between the caller's earlier stores and its later loads (x86: mfence or a
// locked instruction): the two sides of a grace period's (and a TranslationCache footprint's)
// Dekker pair. TSan builds use a sequentially consistent read-modify-write of a thread-local word
// instead (GCC's -Wtsan rejects atomic_thread_fence; on x86 it is the same barrier, and a
// thread-local word gives TSan no ordering between threads that the real code lacks).
inline void FullBarrier() {
#if UDRM_SANITIZER == 'T'
  static thread_local std::atomic<uint64_t> word{0};
  word.fetch_add(1, std::memory_order_seq_cst);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}
}  // namespace internal

}  // namespace vm

#endif  // UDRM_VM_RCU_H_
