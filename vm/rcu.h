// vm::Rcu — the read-copy-update domain that protects page-table pages from lockless readers.
//
// What it is: a thin wrapper over liburcu's "mb" flavour. Readers mark read-side sections; a
// writer that has unhooked memory calls RcuSynchronize() and may free it afterwards, because every
// reader that could still see it has left its section.
//
// Why mb and not memb (liburcu's default recommendation): memb makes grace periods cheap for the
// writer by sending a membarrier IPI to every CPU running a reader, which interrupts emulated GPU
// threads in the middle of their work; with a busy writer that slowed translation 1.8x
// (pagetable_bench). mb puts a full barrier in read_lock/read_unlock instead — about 20 ns that
// readers amortise by keeping one section open across a batch of translations — and the writer's
// grace periods then cost the readers next to nothing. No periodic quiescent-state calls are
// needed (unlike qsbr).
//
// Why a wrapper: ThreadSanitizer cannot see the ordering a grace period provides inside the
// precompiled liburcu, so a correct free after synchronize_rcu is reported as a race with the
// reader. In TSan builds (UDRM_SANITIZER == 'T') the wrapper tells TSan what the grace period guarantees:
// every read-side unlock releases a sync object, and Synchronize() acquires it after the grace
// period. Production and TSan builds run the same reclamation logic; only the annotations differ.
//
// What reader threads must do: register once (an RcuReaderThread object alive on the thread for
// as long as it reads), and do every lockless access inside an RcuReadSection, ideally one section
// per batch of accesses (a job, a draw, a warp). Sections nest and are wait-free. A registered
// thread outside a section does not delay grace periods; a thread that stays inside one delays
// every writer's RcuSynchronize() until it leaves.
//
// Synchronize() blocks until every section that began before it has ended. It must not be called
// from inside a read-side section (that deadlocks), nor while holding a lock that readers take
// inside their sections.
#ifndef UDRM_VM_RCU_H_
#define UDRM_VM_RCU_H_

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

}  // namespace vm

#endif  // UDRM_VM_RCU_H_
