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

#include <cstdint>

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

}  // namespace vm

#endif  // UDRM_VM_GPUVA_H_
