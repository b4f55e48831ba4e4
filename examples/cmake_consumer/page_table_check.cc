// page_table_check: the pkg-config path of tools/check_dist.sh (no CMake):
//
//   c++ -std=c++20 page_table_check.cc $(pkg-config --cflags --libs udrm) -o page_table_check
//
// Maps one page in a vm::PageTable, translates through a per-thread vm::TranslationCache inside
// an RCU read section on a registered reader thread, unmaps it (Release waits for a grace period of
// vm/rcu's own), and checks a bad request's status. Exits non-zero on a mismatch.
#include <absl/status/status.h>

#include <cstdint>
#include <cstdio>
#include <thread>

#include <udrm/vm/page_table.h>
#include <udrm/vm/rcu.h>
#include <udrm/vm/translation_cache.h>

int main() {
  auto table = vm::PageTable::Create(48);
  if (!table.ok()) return 1;
  vm::PageTable& pt = **table;
  constexpr uint64_t kVa = 0x10000, kTarget = 0xabc000;

  auto pre = pt.ReserveForMap(kVa, 4096, kTarget, vm::kPteRead, vm::PageSize::k4K);
  if (!pre.ok()) return 1;
  pt.Release(pt.Map(kVa, 4096, kTarget, vm::kPteRead, vm::PageSize::k4K, *pre));
  pt.Unreserve(std::move(*pre));

  bool mapped = false;
  std::thread reader([&] {  // an emulated GPU thread
    vm::RcuReaderThread registered;
    vm::TranslationCache tlb(&pt);
    vm::RcuReadSection section;
    vm::Translation t = tlb.Translate(kVa + 0x123);
    mapped = t.valid && t.address == kTarget + 0x123;
  });
  reader.join();

  auto unmap = pt.ReserveForUnmap(kVa, 4096);
  if (!unmap.ok()) return 1;
  pt.Release(pt.Unmap(kVa, 4096, *unmap));  // waits for an RCU grace period
  pt.Unreserve(std::move(*unmap));

  // Bad input: a clear status, nothing changed.
  bool rejected = absl::IsInvalidArgument(pt.ReserveForMap(kVa + 1, 4096, kTarget, vm::kPteRead,
                                                           vm::PageSize::k4K).status());
  std::printf("page_table_check: mapped=%d rejected=%d: %s\n", mapped, rejected,
              mapped && rejected ? "PASS" : "FAIL");
  return mapped && rejected ? 0 : 1;
}
