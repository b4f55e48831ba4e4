// fuzz::Input — reads a fuzzer's bytes as a stream of small decisions. Past the end every read
// returns 0, so any byte string is a valid program for a target.
#ifndef UDRM_FUZZ_INPUT_H_
#define UDRM_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  // A value in [0, n) (n <= 256 uses one byte, larger two).
  uint32_t Below(uint32_t n) {
    if (n <= 1) return 0;
    const uint32_t v = n <= 256 ? Byte() : (uint32_t{Byte()} << 8 | Byte());
    return v % n;
  }
  bool Bool() { return Byte() & 1; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A violated invariant: print it and crash, so libFuzzer records the input.
[[noreturn]] inline void Violation(const char* target, const char* what) {
  std::fprintf(stderr, "%s: invariant violated: %s\n", target, what);
  std::abort();
}

}  // namespace fuzz

#define FUZZ_CHECK(target, cond)                    \
  do {                                              \
    if (!(cond)) ::fuzz::Violation(target, #cond);  \
  } while (0)

#endif  // UDRM_FUZZ_INPUT_H_
