// gpuvm_bench: split/merge + apply requests and lookups on a VM holding 10^3, 10^5 and 10^6 VAs.
//
// BM_GpuvmRequest/n: a random request (range 1..32 units, random BO of 8, one in four an unmap)
// over a VM whose [0, 16n) is tiled at the start by n VAs of 16 units: SmMap / SmUnmap with
// callbacks applying each step at once (the msm path), VAs recycled through a free list; the VA
// count stays near n (the "vas" counter).
// BM_GpuvmFindFirst/n: FindFirst of a random address.
// Peer, same requests from the same seed: boost::icl::interval_map<uint64_t, Mapping> where
// Mapping = (bo, offset - addr), so that one value describes a whole contiguous BO mapping and
// the map can split it anywhere without rewriting offsets; its combiner overwrites (operator+= is
// assignment), so `map += (range, mapping)` is one pass that replaces whatever the range held,
// like SmMap + apply, and `erase(range)` is SmUnmap + apply. The joining interval_map (rather
// than split_interval_map) holds fewer segments: adjacent equal values (same BO, contiguous) merge,
// so it holds at most as many segments as udrm holds VAs; BM_IclSplitRequest runs the same
// requests on a split_interval_map (no joining work) and both get a RATIO line, so the
// comparison is against whichever is faster on the day. Lookup: find(addr).
// VALUE gpuvm_request_per_log2n_<n>: the request cost / log2(n), flat if it grows as log n.
// VALUE gpuva_bytes: memory per VA with the index (sizeof(Gpuva) + the btree's heap bytes per
// entry, measured with mallinfo2 around the inserts of 10^6 VAs).
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <boost/icl/interval_map.hpp>
#include <boost/icl/split_interval_map.hpp>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <utility>
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
    if (rng() % 4 == 0) {
      benchmark::DoNotOptimize(vm::SmUnmap(*f.vm, addr, range, steps));
    } else {
      benchmark::DoNotOptimize(vm::SmMap(*f.vm, {{addr, range, bo, addr}}, steps));
    }
  }
  state.counters["vas"] = static_cast<double>(f.vm->va_count());
}
BENCHMARK(BM_GpuvmRequest)->Arg(1000)->Arg(100000)->Arg(1000000);

// The peer's value: which BO, and the BO offset minus the address (constant along a mapping).
struct Mapping {
  const void* bo = nullptr;  // nullptr: the identity, absorbed (unmapped)
  uint64_t delta = 0;
  bool operator==(const Mapping& o) const { return bo == o.bo && delta == o.delta; }
  bool operator<(const Mapping& o) const { return bo < o.bo || (bo == o.bo && delta < o.delta); }
  Mapping& operator+=(const Mapping& o) {  // the combiner: a new mapping replaces the old one
    *this = o;
    return *this;
  }
};

using IclMap = boost::icl::interval_map<uint64_t, Mapping>;
using IclRange = boost::icl::discrete_interval<uint64_t>;

using IclSplitMap = boost::icl::split_interval_map<uint64_t, Mapping>;

template <typename Map = IclMap>
Map MakeIcl(uint64_t n, const std::vector<const void*>& bos) {
  Map m;
  for (uint64_t i = 0; i < n; ++i) {
    m += std::make_pair(IclRange::right_open(i * kTile, (i + 1) * kTile), Mapping{bos[i % 8], 0});
  }
  return m;
}

std::vector<const void*> PeerBos() {
  static int tags[8];
  std::vector<const void*> bos;
  for (int& t : tags) bos.push_back(&t);
  return bos;
}

// The peer's request loop, for either icl map form.
template <typename Map>
void IclRequests(benchmark::State& state) {
  const uint64_t n = state.range(0);
  const std::vector<const void*> bos = PeerBos();
  Map m = MakeIcl<Map>(n, bos);
  std::mt19937_64 rng(42);
  for (auto _ : state) {
    const uint64_t range = 1 + rng() % 32;
    const uint64_t addr = rng() % (n * kTile - range);
    const void* bo = bos[rng() % 8];
    if (rng() % 4 == 0) {
      m.erase(IclRange::right_open(addr, addr + range));
    } else {
      m += std::make_pair(IclRange::right_open(addr, addr + range), Mapping{bo, 0});
    }
    benchmark::DoNotOptimize(m);
  }
  state.counters["vas"] = static_cast<double>(boost::icl::interval_count(m));
}

void BM_IclRequest(benchmark::State& state) { IclRequests<IclMap>(state); }
BENCHMARK(BM_IclRequest)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_IclSplitRequest(benchmark::State& state) { IclRequests<IclSplitMap>(state); }
BENCHMARK(BM_IclSplitRequest)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_GpuvmFindFirst(benchmark::State& state) {
  const uint64_t n = state.range(0);
  Fixture f(n);
  std::mt19937_64 rng(7);
  for (auto _ : state) benchmark::DoNotOptimize(f.vm->FindFirst(rng() % (n * kTile), 1));
}
BENCHMARK(BM_GpuvmFindFirst)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_IclFind(benchmark::State& state) {
  const uint64_t n = state.range(0);
  const IclMap m = MakeIcl(n, PeerBos());
  std::mt19937_64 rng(7);
  for (auto _ : state) benchmark::DoNotOptimize(m.find(rng() % (n * kTile)));
}
BENCHMARK(BM_IclFind)->Arg(1000)->Arg(100000)->Arg(1000000);

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
  std::vector<udrm::bench::Comparison> cmp;
  std::vector<udrm::bench::Value> val;
  for (const auto& [tag, arg, n] :
       {std::tuple{"1e3", "/1000", 1e3}, std::tuple{"1e5", "/100000", 1e5},
        std::tuple{"1e6", "/1000000", 1e6}}) {
    const std::string t = tag, a = arg;
    cmp.push_back(
        {"gpuvm_request_" + t, "BM_GpuvmRequest" + a, "icl_interval_map", "BM_IclRequest" + a});
    cmp.push_back({"gpuvm_request_" + t, "BM_GpuvmRequest" + a, "icl_split_interval_map",
                   "BM_IclSplitRequest" + a});
    cmp.push_back(
        {"gpuvm_lookup_" + t, "BM_GpuvmFindFirst" + a, "icl_interval_map", "BM_IclFind" + a});
    val.push_back({"gpuvm_request_" + t, "BM_GpuvmRequest" + a});
    // log n growth: the request cost divided by log2(VAs) stays flat if it grows as log n.
    val.push_back(
        {"gpuvm_request_per_log2n_" + t, "BM_GpuvmRequest" + a, 1.0 / std::log2(n), "ns"});
    val.push_back({"gpuvm_find_first_" + t, "BM_GpuvmFindFirst" + a});
  }
  const int rc = udrm::bench::RunAndReport(argc, argv, cmp, val);
  PrintGpuvaBytes();
  return rc;
}
