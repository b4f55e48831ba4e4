#include "vm/rcu.h"

#include <urcu/urcu-mb.h>

#include "base/check.h"
#include "base/sanitizers.h"

#if UDRM_SANITIZER == 'T'
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace vm {
namespace {

thread_local bool registered = false;

#if UDRM_SANITIZER == 'T'
// The sync object standing for "a read-side section ended": released by every unlock, acquired
// after every grace period.
char grace_period_sync;
#endif

}  // namespace

RcuReaderThread::RcuReaderThread() {
  UDRM_CHECK(!registered, "RcuReaderThread registered twice on one thread");
  urcu_mb_register_thread();
  registered = true;
}

RcuReaderThread::~RcuReaderThread() {
  urcu_mb_unregister_thread();
  registered = false;
}

bool RcuReaderThread::IsRegistered() { return registered; }

RcuReadSection::RcuReadSection() {
  UDRM_DCHECK(registered, "RcuReadSection on a thread without an RcuReaderThread");
  urcu_mb_read_lock();
}

RcuReadSection::~RcuReadSection() {
#if UDRM_SANITIZER == 'T'
  __tsan_release(&grace_period_sync);
#endif
  urcu_mb_read_unlock();
}

void RcuSynchronize() {
  urcu_mb_synchronize_rcu();
#if UDRM_SANITIZER == 'T'
  __tsan_acquire(&grace_period_sync);
#endif
}

}  // namespace vm
