// UDRM_SANITIZED: 1 in AddressSanitizer or ThreadSanitizer builds. Code that would route memory
// through an allocator the sanitizers cannot see into (oneTBB's scalable allocator) uses the
// global one instead there, so every allocation stays checked.
#ifndef UDRM_BASE_SANITIZERS_H_
#define UDRM_BASE_SANITIZERS_H_

#include "base/tsan.h"

#if defined(__SANITIZE_ADDRESS__) || defined(UDRM_HAS_TSAN)
#define UDRM_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UDRM_SANITIZED 1
#endif
#endif

#ifndef UDRM_SANITIZED
#define UDRM_SANITIZED 0
#endif

#endif  // UDRM_BASE_SANITIZERS_H_
