#include "examples/gpu_emulator/kernels.h"

#include <atomic>
#include <cstring>

namespace gpu_emulator {

const char* KernelName(KernelKind k) {
  switch (k) {
    case KernelKind::kFill:
      return "fill";
    case KernelKind::kCopy:
      return "copy";
    case KernelKind::kSaxpy:
      return "saxpy";
    case KernelKind::kChecksum:
      return "checksum";
  }
  return "?";
}

float FillValue(uint32_t seed, uint64_t i) {
  const uint64_t h = (uint64_t{seed} * 2654435761u + i * 40503u) >> 3;
  return static_cast<float>(h % 1024) / 8.0f;
}

float SaxpyFactor(uint32_t seed) { return static_cast<float>(1 + seed % 4) / 2.0f; }

uint64_t ChecksumTerm(float v, uint64_t i) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return uint64_t{bits} * (2 * i + 1);
}

uint64_t ReferenceChecksum(uint32_t seed_x, uint32_t seed_y, float a, uint64_t count) {
  uint64_t sum = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const float z = FillValue(seed_x, i);
    const float y = a * z + FillValue(seed_y, i);
    sum += ChecksumTerm(y, i);
  }
  return sum;
}

namespace {

float* Float(GpuMemory& mem, uint64_t va, bool write) {
  return reinterpret_cast<float*>(mem.Access(va, write));
}

}  // namespace

std::optional<uint64_t> RunWorkgroup(const Dispatch& d, uint64_t begin, uint64_t end,
                                     GpuMemory& mem) {
  uint64_t partial = 0;
  for (uint64_t i = begin; i < end; ++i) {
    const uint64_t src = d.src + 4 * i, dst = d.dst + 4 * i;
    switch (d.kind) {
      case KernelKind::kFill: {
        float* out = Float(mem, dst, true);
        if (out == nullptr) return dst;
        *out = FillValue(d.seed, i);
        break;
      }
      case KernelKind::kCopy: {
        const float* in = Float(mem, src, false);
        if (in == nullptr) return src;
        float* out = Float(mem, dst, true);
        if (out == nullptr) return dst;
        *out = *in;
        break;
      }
      case KernelKind::kSaxpy: {
        const float* x = Float(mem, src, false);
        if (x == nullptr) return src;
        float* y = Float(mem, dst, true);
        if (y == nullptr) return dst;
        *y = d.a * *x + *y;
        break;
      }
      case KernelKind::kChecksum: {
        const float* in = Float(mem, src, false);
        if (in == nullptr) return src;
        partial += ChecksumTerm(*in, i);
        break;
      }
    }
  }
  if (d.kind == KernelKind::kChecksum) {
    std::byte* word = mem.Access(d.dst, true);
    if (word == nullptr) return d.dst;
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(word))
        .fetch_add(partial, std::memory_order_relaxed);
  }
  return std::nullopt;
}

}  // namespace gpu_emulator
