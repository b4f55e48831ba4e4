// Test helpers for VM_BIND: a VM with a queue, and the page-by-page check that the page table
// equals the VA tree.
#ifndef UDRM_TESTS_VM_BIND_TEST_UTIL_H_
#define UDRM_TESTS_VM_BIND_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "vm/bind_queue.h"
#include "vm/bind_vm.h"
#include "vm/bo.h"
#include "vm/page_table.h"
#include "vm/rcu.h"
#include "vm/vm_bo.h"

namespace vm::testing {

inline constexpr uint64_t kPage = 4096;

inline Translation TranslateOnce(const PageTable& pt, uint64_t va) {
  RcuReadSection section;
  return pt.Translate(va);
}

// "" when the page table reflects the tree exactly for every page of [lo, hi); else the first
// difference. The calling thread must be an RCU reader.
inline std::string CheckConverged(const BindVm& vm, uint64_t lo, uint64_t hi) {
  for (uint64_t p = lo; p < hi; p += kPage) {
    const Gpuva* va = vm.gpuvm().FindFirst(p, kPage);
    RcuReadSection section;
    const Translation t = vm.page_table().Translate(p);
    const std::string at = "page 0x" + std::to_string(p) + ": ";
    if (va == nullptr) {
      if (t.valid) return at + "mapped in the page table, not in the tree";
      continue;
    }
    if (!t.valid) return at + "in the tree, not mapped";
    if (va->bo == nullptr) {
      if (!(t.flags & kPteSparse)) return at + "sparse in the tree, not in the page table";
      continue;
    }
    const std::byte* want = const_cast<Bo*>(va->bo)->memory().data() + va->offset + (p - va->addr);
    if (vm.HostAddress(t) != want) return at + "maps the wrong memory";
  }
  return "";
}

// A VM with one bind queue and two 64-page BOs; at teardown the VM must have dropped every
// reference it took (BOs back to the fixture's one, no VmBo left).
class BindFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    vm_ = *BindVm::Create("bind", {});
    queue_ = *BindQueue::Create(*vm_);
    a_ = Bo::Create(64 * kPage);
    b_ = Bo::Create(64 * kPage);
  }
  void TearDown() override {
    queue_.reset();
    vm_.reset();
    EXPECT_EQ(a_->refs_for_testing(), 1);  // the VM dropped every reference
    EXPECT_EQ(b_->refs_for_testing(), 1);
    EXPECT_EQ(VmBo::live_count(), 0);
  }
  std::string Converged() { return CheckConverged(*vm_, 0, 256 * kPage); }

  RcuReaderThread rcu_;
  std::unique_ptr<BindVm> vm_;
  std::unique_ptr<BindQueue> queue_;
  Ref<Bo> a_, b_;
};

}  // namespace vm::testing

#endif  // UDRM_TESTS_VM_BIND_TEST_UTIL_H_
