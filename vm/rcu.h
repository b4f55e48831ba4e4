// vm::Rcu — the read-copy-update domain that protects page-table pages from lockless readers.
//
// What it is: a thin wrapper over liburcu's "memb" flavour (sys_membarrier based: fast grace
// periods, cheap read side, no periodic quiescent-state calls). Readers mark read-side sections;
// a writer that has unhooked memory calls Synchronize() and may free it afterwards, because every
// reader that could still see it has left its section.
//
// Why a wrapper: ThreadSanitizer cannot see the ordering a grace period provides inside the
// precompiled liburcu, so a correct free after synchronize_rcu is reported as a race with the
// reader. In TSan builds (UDRM_TSAN) the wrapper tells TSan what the grace period guarantees:
// every read-side unlock releases a sync object, and Synchronize() acquires it after the grace
// period. Production and TSan builds run the same reclamation logic; only the annotations differ.
//
// What reader threads must do: register once (an RcuReaderThread object alive on the thread for
// as long as it reads), and do every lockless access inside an RcuReadSection. Sections nest and
// are wait-free. A registered thread outside a section does not delay grace periods.
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
