// gpuvm_bench: split/merge + apply requests and lookups on a VM holding 10^3, 10^5 and 10^6 VAs.
//
// BM_GpuvmRequest/n: a random map request (range 1..32 units, random BO of 8) over a VM whose
// [0, 16n) is tiled by n VAs of 16 units: SmMap with callbacks applying each step at once (the
// msm path), VAs recycled through a free list so the VA count stays ~n.
// BM_GpuvmFindFirst/n: FindFirst of a random address.
// VALUE gpuva_bytes: memory per VA with the index (sizeof(Gpuva) + the btree's heap bytes per
// entry, measured with mallinfo2 around the inserts of 10^6 VAs).
// The peer named in issue 11 (boost::icl::interval_map) is not in the build (no Boost in the
// workspace): no RATIO line yet.
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <memory>
#include <random>
#include <vector>

#include "bench/report.h"
#include "vm/gpuvm.h"
#include "vm/gpuvm_ops.h"

namespace {

constexpr uint64_t kTile = 16;

struct Fixture {
  vm::Ref<vm::Gpuvm> vm;
  std::vector<vm::Ref<vm::Bo>> bos;
  std::vector<std::unique_ptr<vm::Gpuva>> storage;
  std::vector<vm::Gpuva*> free_list;

  explicit Fixture(uint64_t n) {
    vm = *vm::Gpuvm::Create("bench", 0, n * kTile, 0, 0);
    for (int i = 0; i < 8; ++i) bos.push_back(vm::Bo::Create(n * kTile));
    for (uint64_t i = 0; i < n; ++i) {
      vm::Gpuva* va = New();
      va->addr = i * kTile;
      va->range = kTile;
      va->bo = bos[i % 8].get();
      va->offset = i * kTile;
      (void)vm->Insert(va);
    }
  }
  ~Fixture() {
    std::vector<vm::Gpuva*> all;
    for (vm::Gpuva* va : vm->All()) all.push_back(va);
    for (vm::Gpuva* va : all) vm->Remove(va);
  }
  vm::Gpuva* New() {
    if (!free_list.empty()) {
      vm::Gpuva* va = free_list.back();
      free_list.pop_back();
      *va = vm::Gpuva();
      return va;
    }
    storage.push_back(std::make_unique<vm::Gpuva>());
    return storage.back().get();
  }
};

class ApplyNow final : public vm::SmSteps {
 public:
  explicit ApplyNow(Fixture& f) : f_(f) {}
  absl::Status StepMap(const vm::OpMap& op) override {
    vm::ApplyMap(*f_.vm, f_.New(), op);
    return absl::OkStatus();
  }
  absl::Status StepRemap(const vm::OpRemap& op) override {
    vm::Gpuva* old = op.unmap.va;
    vm::ApplyRemap(*f_.vm, op.prev ? f_.New() : nullptr, op.next ? f_.New() : nullptr, op);
    f_.free_list.push_back(old);
    return absl::OkStatus();
  }
  absl::Status StepUnmap(const vm::OpUnmap& op) override {
    vm::ApplyUnmap(*f_.vm, op);
    f_.free_list.push_back(op.va);
    return absl::OkStatus();
  }

 private:
  Fixture& f_;
};

void BM_GpuvmRequest(benchmark::State& state) {
  const uint64_t n = state.range(0);
  Fixture f(n);
  std::mt19937_64 rng(42);
  ApplyNow steps(f);
  for (auto _ : state) {
    const uint64_t range = 1 + rng() % 32;
    const uint64_t addr = rng() % (n * kTile - range);
    vm::Bo* bo = f.bos[rng() % 8].get();
    benchmark::DoNotOptimize(vm::SmMap(*f.vm, {{addr, range, bo, addr}}, steps));
  }
  state.counters["vas"] = static_cast<double>(f.vm->va_count());
}
BENCHMARK(BM_GpuvmRequest)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_GpuvmFindFirst(benchmark::State& state) {
  const uint64_t n = state.range(0);
  Fixture f(n);
  std::mt19937_64 rng(7);
  for (auto _ : state) benchmark::DoNotOptimize(f.vm->FindFirst(rng() % (n * kTile), 1));
}
BENCHMARK(BM_GpuvmFindFirst)->Arg(1000)->Arg(100000)->Arg(1000000);

void PrintGpuvaBytes() {
  constexpr uint64_t n = 1000000;
  auto vm = *vm::Gpuvm::Create("bytes", 0, n * kTile, 0, 0);
  std::vector<vm::Gpuva> vas(n);
  const size_t before = mallinfo2().uordblks;
  for (uint64_t i = 0; i < n; ++i) {
    vas[i].addr = i * kTile;
    vas[i].range = kTile;
    (void)vm->Insert(&vas[i]);
  }
  const size_t tree = mallinfo2().uordblks - before;
  std::printf("VALUE gpuva_bytes %.1f B\n",
              static_cast<double>(sizeof(vm::Gpuva)) + static_cast<double>(tree) / n);
  for (auto& va : vas) vm->Remove(&va);
}

}  // namespace

int main(int argc, char** argv) {
  const int rc = udrm::bench::RunAndReport(
      argc, argv, {},
      {{"gpuvm_request_1e3", "BM_GpuvmRequest/1000"},
       {"gpuvm_request_1e5", "BM_GpuvmRequest/100000"},
       {"gpuvm_request_1e6", "BM_GpuvmRequest/1000000"},
       {"gpuvm_find_first_1e6", "BM_GpuvmFindFirst/1000000"}});
  PrintGpuvaBytes();
  return rc;
}
