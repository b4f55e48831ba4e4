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
// with the deferred writer, 3 alternated processes each (nice -20, --benchmark_min_time=0.15,
// 2-core machine at load ~3.5; spread within 5% except outliers), median ns per translation,
// own/liburcu, 4K 64K 2M:
//   writer:1  hot 3.8/6.4 3.7/7.6 3.1/5.4     cold 6.9/15.3 6.5/15.8 3.3/7.4
//   +TLB      hot 1.5/2.9 1.5/3.2 1.4/3.2     cold 11.7/24.8 11.7/24.4 6.5/13.3
//   +Section  hot 1.3/3.0 1.3/2.6 1.5/2.5     cold 11.4/18.1 11.5/24.8 6.4/11.3
//   writer:0  hot 3.6/4.1 3.6/4.0 3.0/3.2     cold 6.1/6.8 6.1/7.3 2.9/3.6
//   +TLB      hot 1.4/1.6 1.4/1.6 1.4/1.6     cold 11.0/11.8 11.3/11.4 6.1/7.0
//   +Section  hot 1.2/1.5 1.2/1.5 1.2/1.5     cold 11.0/11.5 10.8/11.8 6.1/6.2
// liburcu-mb is 1.6x-2.4x slower on every writer:1 row and 1-25% on the others (an earlier
// 5-process run at load ~8, noisier, agreed), which is why liburcu, the project's RCU library
// otherwise, is not used here.
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
