// ThreadSanitizer annotations for hand-offs that happen inside precompiled libraries.
//
// TSan sees only the code we compile. When a pointer reaches another thread through a library
// it cannot see into (oneTBB's task queues), UDRM_TSAN_RELEASE(p) on the sending side and
// UDRM_TSAN_ACQUIRE(p) on the receiving side tell it what the library guarantees: everything the
// sender did before the release happens before everything the receiver does after the acquire.
// Use them only where the library documents that guarantee. No-ops outside TSan builds.
#ifndef UDRM_BASE_TSAN_H_
#define UDRM_BASE_TSAN_H_

#include "base/sanitizers.h"

#if UDRM_SANITIZER == 'T'
#include <sanitizer/tsan_interface.h>
#define UDRM_TSAN_RELEASE(addr) __tsan_release(const_cast<void*>(static_cast<const void*>(addr)))
#define UDRM_TSAN_ACQUIRE(addr) __tsan_acquire(const_cast<void*>(static_cast<const void*>(addr)))
#else
#define UDRM_TSAN_RELEASE(addr) ((void)(addr))
#define UDRM_TSAN_ACQUIRE(addr) ((void)(addr))
#endif

#endif  // UDRM_BASE_TSAN_H_
