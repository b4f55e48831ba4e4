// udrm contract checks.
//
// A broken contract (a caller doing what a header says it must not) is a bug, not an error to
// handle: it crashes with the file, line and a message, in every build mode. UDRM_DCHECK does the
// same in debug builds only (NDEBUG unset), for checks too costly for release hot paths.
//
// Bad *input* is never reported this way: that gets an absl::Status.
#ifndef UDRM_BASE_CHECK_H_
#define UDRM_BASE_CHECK_H_

namespace udrm::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond, const char* msg);
}  // namespace udrm::internal

#define UDRM_CHECK(cond, msg)                                          \
  do {                                                                 \
    if (__builtin_expect(!(cond), 0)) {                                \
      ::udrm::internal::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
    }                                                                  \
  } while (0)

#ifdef NDEBUG
#define UDRM_DCHECK(cond, msg) \
  do {                         \
    (void)sizeof(!(cond));     \
  } while (0)
#define UDRM_DEBUG_CHECKS 0
#else
#define UDRM_DCHECK(cond, msg) UDRM_CHECK(cond, msg)
#define UDRM_DEBUG_CHECKS 1
#endif

#endif  // UDRM_BASE_CHECK_H_
