// vm::BindOp — one operation of an asynchronous VM_BIND (msm's drm_msm_vm_bind_op), and
// vm::BindEntry — one entry of a bind job's op list (msm's msm_vm_op).
//
// A bind takes a list of BindOps. The bind call applies them to the VA tree at once, in order,
// and records what the page table must do as ONE list of BindEntries (a later op sees the tree
// as the earlier ops left it); the job's RunJob later executes that list on the page table.
// Plain data; no thread-safety of its own.
#ifndef UDRM_VM_BIND_OP_H_
#define UDRM_VM_BIND_OP_H_

#include <cstddef>
#include <cstdint>

#include "vm/bo.h"
#include "vm/gpuvm_ref.h"
#include "vm/page_table.h"

namespace vm {

// MSM_VM_BIND_OP_{MAP, MAP_NULL, UNMAP}.
enum class BindOpKind : uint8_t { kMap, kMapNull, kUnmap };

// Access flags of a mapping (kMap / kMapNull). kUnmap takes none.
inline constexpr uint32_t kBindRead = 1u << 0;
inline constexpr uint32_t kBindWrite = 1u << 1;
inline constexpr uint32_t kBindFlagsMask = kBindRead | kBindWrite;

struct BindOp {
  BindOpKind kind = BindOpKind::kMap;
  uint64_t va = 0;
  uint64_t range = 0;
  // kMap: the BO (the caller keeps it alive until Submit returns; the bind takes its own
  // references). Must be null for kMapNull and kUnmap.
  Bo* bo = nullptr;
  uint64_t bo_offset = 0;  // kMap only; 0 otherwise
  uint32_t flags = kBindRead | kBindWrite;
  // The largest page size the page table may use for this mapping (va and range must be aligned
  // to it). Ignored for kUnmap.
  PageSize page_size = PageSize::k4K;

  static BindOp Map(uint64_t va, uint64_t range, Bo* bo, uint64_t bo_offset,
                    PageSize page_size = PageSize::k4K, uint32_t flags = kBindRead | kBindWrite) {
    return {BindOpKind::kMap, va, range, bo, bo_offset, flags, page_size};
  }
  static BindOp MapNull(uint64_t va, uint64_t range, PageSize page_size = PageSize::k4K) {
    return {BindOpKind::kMapNull, va, range, nullptr, 0, kBindRead | kBindWrite, page_size};
  }
  static BindOp Unmap(uint64_t va, uint64_t range) {
    return {BindOpKind::kUnmap, va, range, nullptr, 0, 0, PageSize::k4K};
  }
};

// One page-table action of a bind job (msm_vm_op). kMap maps [va, va+range) → target with
// pte_flags at up to page_size; kUnmap unmaps [va, va+range). `bo` is a reference that keeps the
// BO's memory alive until the job's cleanup (after the grace period that follows the unhook):
// for kUnmap it is the BO of the mapping being removed (null for a sparse one).
struct BindEntry {
  enum class Kind : uint8_t { kMap, kUnmap };
  Kind kind = Kind::kMap;
  uint64_t va = 0;
  uint64_t range = 0;
  uint64_t target = 0;  // device address (kMap of a BO); 0 for sparse and unmaps
  uint32_t pte_flags = 0;
  PageSize page_size = PageSize::k4K;
  Ref<Bo> bo;
  size_t op = 0;  // index of the BindOp that produced it
};

}  // namespace vm

#endif  // UDRM_VM_BIND_OP_H_
