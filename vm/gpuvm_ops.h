// vm split/merge (drm_gpuvm_sm_map / sm_unmap and the drm_gpuva_op lists).
//
// A request to map [addr, addr+range) → (bo, offset), or to unmap a range, is turned into steps
// against the current tree, exactly as the kernel's __drm_gpuvm_sm_map / __drm_gpuvm_sm_unmap:
// for every existing VA overlapping the request, in address order, an UNMAP (the VA lies inside
// the request) or a REMAP (the VA sticks out on one or both sides: `prev` / `next` are the pieces
// that survive, with the old BO and adjusted offsets), then — for a map only — exactly one MAP.
// UNMAP/REMAP carry `keep`: the old VA maps the same BO contiguously with the request, so a
// driver may keep its PTEs (never for a NULL/sparse VA). Neighbours that only touch the request
// are not visited (no adjacency merging). Re-mapping an identical range yields UNMAP(keep) + MAP
// (the kernel's code; its kernel-doc says "might be empty").
//
// Two forms: callbacks (SmMap/SmUnmap with an SmSteps, steps handed over one by one; the first
// error aborts the walk and is returned; callbacks may apply each step to the tree at once), and
// lists (*OpsCreate: build the whole op list without touching the tree).
// Rule (as the kernel): after building or receiving a request's ops without applying them, do
// not build another request's ops until the tree reflects the earlier ones — except through the
// exec-lock helpers (vm/gpuvm_exec.h), which only lock.
// Thread-safety: the tree's (the driver serialises).
#ifndef UDRM_VM_GPUVM_OPS_H_
#define UDRM_VM_GPUVM_OPS_H_

#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vm/gpuva.h"
#include "vm/gpuvm.h"

namespace vm {

// drm_gpuva_op_map: a mapping to create ([addr, addr+range) → bo at offset; bo may be null).
struct OpMap {
  uint64_t addr = 0;
  uint64_t range = 0;
  Bo* bo = nullptr;
  uint64_t offset = 0;
  friend bool operator==(const OpMap&, const OpMap&) = default;
};

// drm_gpuva_op_unmap.
struct OpUnmap {
  Gpuva* va = nullptr;
  bool keep = false;
  friend bool operator==(const OpUnmap&, const OpUnmap&) = default;
};

// drm_gpuva_op_remap: unmap `unmap.va` and map the surviving pieces.
struct OpRemap {
  std::optional<OpMap> prev;
  std::optional<OpMap> next;
  OpUnmap unmap;
  friend bool operator==(const OpRemap&, const OpRemap&) = default;
};

// drm_gpuva_op_prefetch.
struct OpPrefetch {
  Gpuva* va = nullptr;
  friend bool operator==(const OpPrefetch&, const OpPrefetch&) = default;
};

// drm_gpuva_op: one of the above (DRM_GPUVA_OP_DRIVER has no use here).
using Op = std::variant<OpMap, OpRemap, OpUnmap, OpPrefetch>;
using Ops = std::vector<Op>;

// drm_gpuvm_map_req (2025: map arguments in a struct; member op_map).
struct MapRequest {
  OpMap op_map;
};

// drm_gpuva_op_remap_to_unmap_range: the hole a REMAP leaves, [start, start+range).
struct AddrRange {
  uint64_t addr;
  uint64_t range;
};
AddrRange RemapToUnmapRange(const OpRemap& op);

// ops->sm_step_{map,remap,unmap}. The op references live only during the call: copy them.
class SmSteps {
 public:
  virtual absl::Status StepMap(const OpMap& op) = 0;
  virtual absl::Status StepRemap(const OpRemap& op) = 0;
  virtual absl::Status StepUnmap(const OpUnmap& op) = 0;

 protected:
  ~SmSteps() = default;
};

// drm_gpuvm_sm_map: InvalidArgument (no step) if the request fails Gpuvm::CheckMapping; else the
// first non-OK step status, or OK.
absl::Status SmMap(Gpuvm& vm, const MapRequest& req, SmSteps& steps);
// drm_gpuvm_sm_unmap: InvalidArgument (no step) if the range fails Gpuvm::CheckRange.
absl::Status SmUnmap(Gpuvm& vm, uint64_t addr, uint64_t range, SmSteps& steps);

// drm_gpuvm_sm_map_ops_create / sm_unmap_ops_create: the same steps as a list; the tree is not
// changed. Errors as SmMap / SmUnmap.
absl::StatusOr<Ops> SmMapOpsCreate(const Gpuvm& vm, const MapRequest& req);
absl::StatusOr<Ops> SmUnmapOpsCreate(const Gpuvm& vm, uint64_t addr, uint64_t range);
// drm_gpuvm_prefetch_ops_create: one PREFETCH per VA overlapping the range.
absl::StatusOr<Ops> PrefetchOpsCreate(const Gpuvm& vm, uint64_t addr, uint64_t range);
// drm_gpuvm_bo_unmap_ops_create: one UNMAP per VA of `vm_bo`, in link order (gpuva lock held).
Ops BoUnmapOpsCreate(const VmBo& vm_bo);
// drm_gpuvm_madvise_ops_create: split only NULL-BO VAs crossing the request's boundaries, with
// a MAP for every piece inside the request that a split produced (see the reference §1.6).
absl::StatusOr<Ops> MadviseOpsCreate(const Gpuvm& vm, const MapRequest& req);

// Applying ops to the tree (drm_gpuva_map / remap / unmap). The Gpuvas passed in are the
// driver's (see vm/gpuva.h); their addr/range/bo/offset are set from the op, flags left alone.
// Contract (crash): the tree reflects every earlier op of the list (so the insert cannot fail).
void ApplyMap(Gpuvm& vm, Gpuva* va, const OpMap& op);
// Removes op.unmap.va, inserts `prev` / `next` for op.prev / op.next (null when absent).
void ApplyRemap(Gpuvm& vm, Gpuva* prev, Gpuva* next, const OpRemap& op);
void ApplyUnmap(Gpuvm& vm, const OpUnmap& op);

}  // namespace vm

#endif  // UDRM_VM_GPUVM_OPS_H_
