// Test helpers for vm::PageTable: whole reserve -> apply -> unreserve -> release cycles.
#ifndef UDRM_TESTS_VM_PT_TEST_UTIL_H_
#define UDRM_TESTS_VM_PT_TEST_UTIL_H_

#include "gtest/gtest.h"
#include "vm/page_table.h"
#include "vm/rcu.h"

namespace vm::testing {

inline constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

// Applies a map without releasing: the caller Release()s `pending` later (batching grace periods).
inline absl::Status MapDeferred(PageTable& pt, uint64_t va, uint64_t size, uint64_t target,
                                uint32_t flags, PageSize ps, Invalidation& pending) {
  absl::StatusOr<Prealloc> pre = pt.ReserveForMap(va, size, target, flags, ps);
  if (!pre.ok()) return pre.status();
  pending.Absorb(pt.Map(va, size, target, flags, ps, *pre));
  pt.Unreserve(*std::move(pre));
  return absl::OkStatus();
}

inline absl::Status UnmapDeferred(PageTable& pt, uint64_t va, uint64_t size,
                                  Invalidation& pending) {
  absl::StatusOr<Prealloc> pre = pt.ReserveForUnmap(va, size);
  if (!pre.ok()) return pre.status();
  pending.Absorb(pt.Unmap(va, size, *pre));
  pt.Unreserve(*std::move(pre));
  return absl::OkStatus();
}

// Maps and releases; returns the reservation error, if any.
inline absl::Status Map(PageTable& pt, uint64_t va, uint64_t size, uint64_t target,
                        uint32_t flags, PageSize ps) {
  absl::StatusOr<Prealloc> pre = pt.ReserveForMap(va, size, target, flags, ps);
  if (!pre.ok()) return pre.status();
  Invalidation inv = pt.Map(va, size, target, flags, ps, *pre);
  pt.Unreserve(*std::move(pre));
  pt.Release(std::move(inv));
  return absl::OkStatus();
}

inline absl::Status Unmap(PageTable& pt, uint64_t va, uint64_t size) {
  absl::StatusOr<Prealloc> pre = pt.ReserveForUnmap(va, size);
  if (!pre.ok()) return pre.status();
  Invalidation inv = pt.Unmap(va, size, *pre);
  pt.Unreserve(*std::move(pre));
  pt.Release(std::move(inv));
  return absl::OkStatus();
}

// Translate inside its own read-side section (the thread must be registered).
inline Translation Lookup(const PageTable& pt, uint64_t va) {
  RcuReadSection section;
  return pt.Translate(va);
}

}  // namespace vm::testing

#endif  // UDRM_TESTS_VM_PT_TEST_UTIL_H_
