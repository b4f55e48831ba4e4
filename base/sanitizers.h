// UDRM_SANITIZER — the one macro that says which sanitizer instruments this translation unit.
//
//   0    an ordinary build
//   'A'  AddressSanitizer (with or without UBSan)
//   'T'  ThreadSanitizer
//
// It is derived from the compiler's own feature tests (GCC's __SANITIZE_ADDRESS__ /
// __SANITIZE_THREAD__, clang's __has_feature), never from a -D flag, so it cannot disagree with
// how the code is really compiled. `#if UDRM_SANITIZER` asks "any sanitizer";
// `#if UDRM_SANITIZER == 'T'` asks "ThreadSanitizer". A sanitizer build may add checks or turn a
// cache off; it must not change a class's layout, size or allocator (an application built with a
// sanitizer links a library built without one).
#ifndef UDRM_BASE_SANITIZERS_H_
#define UDRM_BASE_SANITIZERS_H_

#if defined(__SANITIZE_THREAD__)
#define UDRM_SANITIZER 'T'
#elif defined(__SANITIZE_ADDRESS__)
#define UDRM_SANITIZER 'A'
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UDRM_SANITIZER 'T'
#elif __has_feature(address_sanitizer)
#define UDRM_SANITIZER 'A'
#endif
#endif
#ifndef UDRM_SANITIZER
#define UDRM_SANITIZER 0
#endif

#endif  // UDRM_BASE_SANITIZERS_H_
