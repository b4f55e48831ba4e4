// The emulated GPU's kernels (fill, copy, saxpy, checksum) and their CPU reference.
//
// A kernel sees memory only through GPU virtual addresses: every load and store of a GPU thread
// is translated by the context's page table (vm::PageTable, through the thread's
// vm::TranslationCache) into the memory of the BO mapped there (vm::BindVm::HostAddress). An
// access to an unmapped page, or a store to a read-only one, is a GPU page fault: the workgroup
// stops and the job fails.
//
// The values are chosen so that float arithmetic is exact (fill values are multiples of 1/8 below
// 128, saxpy's `a` is a multiple of 1/2 up to 2): the GPU result and the CPU reference are
// bit-identical whatever the order, contraction or vectorisation of the arithmetic.
#ifndef UDRM_EXAMPLES_GPU_EMULATOR_KERNELS_H_
#define UDRM_EXAMPLES_GPU_EMULATOR_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "vm/bind_vm.h"
#include "vm/translation_cache.h"

namespace gpu_emulator {

enum class KernelKind : uint8_t { kFill, kCopy, kSaxpy, kChecksum };
const char* KernelName(KernelKind k);

// One kernel launch. All addresses are GPU virtual addresses of the launching context's VM.
struct Dispatch {
  KernelKind kind = KernelKind::kFill;
  uint64_t dst = 0;    // fill/copy: the output; saxpy: y (read and written); checksum: a uint64_t
  uint64_t src = 0;    // copy: the input; saxpy: x; checksum: the data
  uint64_t count = 0;  // float elements
  uint32_t seed = 0;   // fill
  float a = 0;         // saxpy: y = a * x + y
};

// Elements per workgroup: 4 pages of floats.
inline constexpr uint64_t kWorkgroupSize = 4096;

// fill(seed, i): a multiple of 1/8 in [0, 128).
float FillValue(uint32_t seed, uint64_t i);
// saxpy's factor for a seed: 0.5, 1, 1.5 or 2.
float SaxpyFactor(uint32_t seed);
// The checksum of `count` floats is the sum (mod 2^64) of ChecksumTerm(v_i, i): order-independent,
// so workgroups add their partial sums atomically into the result word.
uint64_t ChecksumTerm(float v, uint64_t i);

// The CPU reference of one iteration: x = fill(seed_x), y = fill(seed_y), z = x, y = a*z + y,
// checksum(y).
uint64_t ReferenceChecksum(uint32_t seed_x, uint32_t seed_y, float a, uint64_t count);

// What one GPU thread sees of memory: an access translated through the context's page table.
// Contract: translates through a vm::TranslationCache::Section (one per workgroup, on a
// registered RCU reader thread) that outlives it, and a returned pointer is used only inside that
// section (the page may be unmapped and its BO freed after it).
class GpuMemory {
 public:
  GpuMemory(vm::TranslationCache::Section& tlb, const vm::BindVm& vm) : tlb_(tlb), vm_(vm) {}

  // The host address of the naturally aligned access (at most 8 bytes) at `va`, or null on a
  // page fault.
  std::byte* Access(uint64_t va, bool write) {
    const vm::Translation t = tlb_.Translate(va);
    if (!t.valid || (write && !(t.flags & vm::kPteWrite))) return nullptr;
    // BO memory is writable host memory; HostAddress hands it out const for readers.
    return const_cast<std::byte*>(vm_.HostAddress(t));  // null for a sparse page
  }

 private:
  vm::TranslationCache::Section& tlb_;
  const vm::BindVm& vm_;
};

// Executes elements [begin, end) of `d`. Returns the first faulting VA, or nullopt.
std::optional<uint64_t> RunWorkgroup(const Dispatch& d, uint64_t begin, uint64_t end,
                                     GpuMemory& mem);

}  // namespace gpu_emulator

#endif  // UDRM_EXAMPLES_GPU_EMULATOR_KERNELS_H_
