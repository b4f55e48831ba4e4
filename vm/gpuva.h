// vm::Gpuva — one GPU virtual address mapping (drm_gpuva): [addr, addr+range) of a Gpuvm backed
// by [offset, offset+range) of a Bo, or by nothing for a sparse/NULL mapping (bo == nullptr).
//
// Lifetime: the driver allocates and frees Gpuvas (the kernel embeds them in driver structs); a
// Gpuva must outlive its membership in a Gpuvm (Insert..Remove) and in a VmBo (Link..Unlink).
// Inserting it takes a reference on the VM, removing it drops that reference.
// Thread-safety: none of its own. Tree fields are guarded by whatever serialises the VM's tree
// (the driver's VM lock); vm_bo and the list links by the BO's gpuva lock (see vm/bo.h).
#ifndef UDRM_VM_GPUVA_H_
#define UDRM_VM_GPUVA_H_

#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>
#include <vector>

namespace vm {

class Bo;
class Gpuvm;
class VmBo;

struct Gpuva {
  enum Flags : uint32_t {
    kInvalidated = 1u << 0,  // DRM_GPUVA_INVALIDATED: the backing BO was evicted
    kSparse = 1u << 1,       // DRM_GPUVA_SPARSE
    kUserBits = 1u << 2,     // DRM_GPUVA_USERBITS: the first bit free for drivers
  };

  uint64_t addr = 0;
  uint64_t range = 0;
  Bo* bo = nullptr;  // gem.obj; nullptr: a NULL/sparse mapping
  uint64_t offset = 0;  // gem.offset, in the BO
  uint32_t flags = 0;

  uint64_t end() const { return addr + range; }
  bool invalidated() const { return (flags & kInvalidated) != 0; }
  // drm_gpuva_invalidate.
  void Invalidate(bool invalidate) {
    flags = invalidate ? (flags | kInvalidated) : (flags & ~uint32_t{kInvalidated});
  }

  // Set by Gpuvm::Insert / cleared by Remove.
  Gpuvm* vm = nullptr;
  // Set by VmBo::Link / cleared by VmBo::Unlink; the links of the VmBo's list (gem.entry).
  VmBo* vm_bo = nullptr;
  Gpuva* bo_prev = nullptr;
  Gpuva* bo_next = nullptr;
};

namespace internal {
// A block of `bytes` aligned to 64 (from operator new), or, when bytes == kHugeChunkBytes, a
// 2 MiB-aligned mapping of its own (mmap, advised as transparent huge pages; not seen by malloc's
// statistics: HugeChunkBytes() counts those live); nullptr if the system refuses. Defined in
// gpuvm_node_pool.cc.
inline constexpr size_t kHugeChunkBytes = size_t{2} << 20;
void* NewChunk(size_t bytes) noexcept;
void DeleteChunk(void* p, size_t bytes) noexcept;
size_t HugeChunkBytes() noexcept;
}  // namespace internal

// vm::GpuvaCache — where a driver may take its Gpuvas from (the kernel's drivers kmalloc their
// VA structs, which lands in the direct map's huge pages): a slab carved from chunks that grow
// from 4 KiB to 2 MiB, the 2 MiB ones aligned and advised as transparent huge pages, so that a
// VM of 10^5..10^6 VAs spans few TLB entries. Free() puts a Gpuva on a free list that Alloc()
// takes from first, the last freed first (it is likely still in the cache). Memory: the peak
// number of Gpuvas alive (plus the last chunk's rest), given back when the cache is destroyed.
// Lifetime: every Gpuva of the cache must be out of every tree and VmBo list before the cache
// is destroyed (its memory goes with it; not checked).
// Thread-safety: none (the driver's VM lock).
class GpuvaCache {
 public:
  GpuvaCache() = default;
  GpuvaCache(const GpuvaCache&) = delete;
  GpuvaCache& operator=(const GpuvaCache&) = delete;
  ~GpuvaCache() {
    for (auto [p, bytes] : chunks_) internal::DeleteChunk(p, bytes);
  }

  // A value-initialised Gpuva. Throws std::bad_alloc if the system refuses a chunk.
  Gpuva* Alloc() {
    if (free_ != nullptr) {
      Gpuva* va = free_;
      free_ = free_->bo_next;
      // The next Alloc's Gpuva (read for its link, then rewritten): fetch it now, so that a
      // long free list's older entries, out of the cache by then, do not stall that call.
      if (free_ != nullptr) {
        __builtin_prefetch(free_, 1);
        __builtin_prefetch(reinterpret_cast<const char*>(free_) + sizeof(Gpuva) - 1, 1);
      }
      *va = Gpuva();
      return va;
    }
    if (carve_ == carve_end_) NewChunk();
    return new (carve_++) Gpuva();
  }
  // Contract: `va` came from this cache's Alloc and is in no tree or list.
  void Free(Gpuva* va) {
    va->bo_next = free_;  // the free list threads through bo_next
    free_ = va;
  }

 private:
  void NewChunk() {
    const size_t bytes = next_chunk_bytes_;
    void* p = internal::NewChunk(bytes);
    if (p == nullptr) throw std::bad_alloc();
    chunks_.emplace_back(p, bytes);
    if (next_chunk_bytes_ < internal::kHugeChunkBytes) next_chunk_bytes_ *= 2;
    carve_ = static_cast<Gpuva*>(p);
    carve_end_ = carve_ + bytes / sizeof(Gpuva);
  }

  Gpuva* free_ = nullptr;
  Gpuva* carve_ = nullptr;
  Gpuva* carve_end_ = nullptr;
  size_t next_chunk_bytes_ = 4096;
  std::vector<std::pair<void*, size_t>> chunks_;
};

}  // namespace vm

#endif  // UDRM_VM_GPUVA_H_
