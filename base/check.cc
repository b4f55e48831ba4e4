#include "base/check.h"

#include <cstdio>
#include <cstdlib>

namespace udrm::internal {

void CheckFailed(const char* file, int line, const char* cond, const char* msg) {
  std::fprintf(stderr, "udrm contract violation at %s:%d: %s (%s)\n", file, line, msg, cond);
  std::fflush(stderr);
  std::abort();
}

}  // namespace udrm::internal
