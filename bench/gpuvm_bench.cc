// gpuvm_bench: split/merge + apply requests and lookups on a VM holding 10^3, 10^5 and 10^6 VAs.
//
// BM_GpuvmRequest/n: a random request (range 1..32 units, random BO of 8, one in four an unmap)
// over a VM whose [0, 16n) is tiled at the start by n VAs of 16 units: SmMap / SmUnmap with
// callbacks applying each step at once (the msm path), VAs from a vm::GpuvaCache (the driver's
// slab, huge-page chunks as the kernel's kmalloc gets from the direct map), recycled last freed
// first. The tree's nodes of a big VM come from huge-page chunks too (vm/gpuvm_node_pool.h);
// the peers use the standard allocator (glibc's malloc), which main() puts on transparent huge
// pages as well (it re-executes the bench with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 unless the
// variable already sets hugetlb), so no side has pages the other lacks.
// Steady state: the requests split the tiles until the VM holds about 1.37n VAs (the "vas"
// counter), which takes about 2n requests; every side is warmed up with kWarmRequestsPerVa * n
// requests of its stream before it is timed, and keeps its state (VM or map, stream) across
// google-benchmark's runs of it (see Kept), so each size is timed in the same regime. (Without
// the warm-up a run at 10^6 — about 0.6n requests — was timed while the VM still grew: fresh
// VAs and tree nodes from malloc in half the requests, which the runs at 10^3 and 10^5 had
// left behind after a few percent of their requests.)
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
// The algorithmic cost apart from memory: VALUE gpuvm_request_<n>_searches / _node_visits /
// _finger_steps per request (Gpuvm::tree_searches: a search visits tree_height() nodes).
// BM_GpuvmRequestHot/n (and the peer's BM_IclRequestHot/n): the same warmed-up VM (map) as
// BM_GpuvmRequest/n (BM_IclRequest/n), requests only in a window of 1000 VAs in its middle — the same searches and node visits per request as
// the full run, but a working set that fits in the caches. Full minus hot is what cache and TLB
// misses cost.
// VALUE gpuva_bytes: memory per VA with the index (sizeof(Gpuva) + the btree's heap bytes per
// entry, measured with mallinfo2 — in-use and mmapped bytes — around the inserts of 10^6 VAs).
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <boost/icl/interval_map.hpp>
#include <boost/icl/split_interval_map.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
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

// The driver's side: its BOs, and its Gpuvas from a vm::GpuvaCache (the driver's slab; the
// kernel's drivers kmalloc theirs), recycled last-freed-first.
struct Fixture {
  vm::Ref<vm::Gpuvm> vm;
  std::vector<vm::Ref<vm::Bo>> bos;
  vm::GpuvaCache vas;

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
  vm::Gpuva* New() { return vas.Alloc(); }
  void Free(vm::Gpuva* va) { vas.Free(va); }
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
    f_.Free(old);
    return absl::OkStatus();
  }
  absl::Status StepUnmap(const vm::OpUnmap& op) override {
    vm::ApplyUnmap(*f_.vm, op);
    f_.Free(op.va);
    return absl::OkStatus();
  }

 private:
  Fixture& f_;
};

// The request stream (the same for udrm and the peers from the same seed): a random range of
// 1..32 units starting in [lo, lo + span), a random BO of 8, one in four an unmap.
struct Requests {
  uint64_t lo;
  uint64_t span;
  std::mt19937_64 rng{42};
  struct Request {
    uint64_t addr;
    uint64_t range;
    size_t bo;
    bool unmap;
  };
  Request Next() {
    Request r;
    r.range = 1 + rng() % 32;
    r.addr = lo + rng() % (span - r.range);
    r.bo = rng() % 8;
    r.unmap = rng() % 4 == 0;
    return r;
  }
};

// The whole VM [0, 16n), or (hot) a window of kHotVas tiles in its middle: same tree, same
// height and searches, but a working set that stays in the caches.
constexpr uint64_t kHotVas = 1000;
Requests MakeRequests(uint64_t n, bool hot) {
  if (!hot) return Requests{0, n * kTile};
  return Requests{n / 2 * kTile, kHotVas * kTile};
}

// Requests each side runs before it is timed, per VA it starts with (see the top).
constexpr uint64_t kWarmRequestsPerVa = 2;

// google-benchmark calls a benchmark function once per run (runs differ in the iteration count
// only): a request benchmark's state, built and warmed up by `make`, is kept under `key` until
// a benchmark with another key needs the slot (one state alive at a time).
struct KeptSlot {
  std::string key;
  std::shared_ptr<void> state;
};
KeptSlot& Slot() {
  static auto* slot = new KeptSlot;
  return *slot;
}
template <typename T>
T& Kept(const std::string& key, const std::function<std::shared_ptr<T>()>& make) {
  KeptSlot& slot = Slot();
  if (slot.key != key) {
    slot.state.reset();  // free the previous state before building the next
    slot.key.clear();
    slot.state = make();
    slot.key = key;
  }
  return *static_cast<T*>(slot.state.get());
}

// The tree's work per request in the last run of each benchmark (printed as VALUE lines).
struct TreeWork {
  double searches = 0;      // root-to-leaf searches per request
  double finger_steps = 0;  // iterator moves instead of a search, per request
  double height = 0;        // the tree's height at the end (each search visits this many nodes)
};
std::map<std::string, TreeWork>& TreeWorkByBench() {
  static auto* m = new std::map<std::string, TreeWork>;
  return *m;
}

// One request of `r` on the VM.
void GpuvmRequest(Fixture& f, ApplyNow& steps, const Requests::Request& r) {
  if (r.unmap) {
    benchmark::DoNotOptimize(vm::SmUnmap(*f.vm, r.addr, r.range, steps));
  } else {
    benchmark::DoNotOptimize(
        vm::SmMap(*f.vm, {{r.addr, r.range, f.bos[r.bo].get(), r.addr}}, steps));
  }
}

// BM_GpuvmRequest/n's and BM_GpuvmRequestHot/n's state: the VM warmed up, and both streams.
struct GpuvmState {
  Fixture f;
  ApplyNow steps{f};
  Requests full;
  Requests hot;
  explicit GpuvmState(uint64_t n)
      : f(n), full(MakeRequests(n, false)), hot(MakeRequests(n, true)) {
    for (uint64_t i = 0; i < kWarmRequestsPerVa * n; ++i) GpuvmRequest(f, steps, full.Next());
  }
};

void GpuvmRequests(benchmark::State& state, bool hot) {
  const uint64_t n = state.range(0);
  GpuvmState& g = Kept<GpuvmState>("udrm/" + std::to_string(n),
                                   [n] { return std::make_shared<GpuvmState>(n); });
  Fixture& f = g.f;
  Requests& reqs = hot ? g.hot : g.full;
  const uint64_t searches0 = f.vm->tree_searches();
  const uint64_t steps0 = f.vm->finger_steps();
  for (auto _ : state) GpuvmRequest(f, g.steps, reqs.Next());
  const double iters = static_cast<double>(state.iterations());
  TreeWork w;
  w.searches = static_cast<double>(f.vm->tree_searches() - searches0) / iters;
  w.finger_steps = static_cast<double>(f.vm->finger_steps() - steps0) / iters;
  w.height = static_cast<double>(f.vm->tree_height());
  TreeWorkByBench()[(hot ? "BM_GpuvmRequestHot/" : "BM_GpuvmRequest/") + std::to_string(n)] = w;
  state.counters["vas"] = static_cast<double>(f.vm->va_count());
  state.counters["height"] = w.height;
  state.counters["searches"] = w.searches;
}

// Registered size by size, the hot run right after the full one: they share the kept state.
void BM_GpuvmRequest(benchmark::State& state) { GpuvmRequests(state, false); }
void BM_GpuvmRequestHot(benchmark::State& state) { GpuvmRequests(state, true); }
BENCHMARK(BM_GpuvmRequest)->Arg(1000)->Arg(100000);
BENCHMARK(BM_GpuvmRequestHot)->Arg(100000);
BENCHMARK(BM_GpuvmRequest)->Arg(1000000);
BENCHMARK(BM_GpuvmRequestHot)->Arg(1000000);

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

// One request of `r` on the map.
template <typename Map>
void IclRequest(Map& m, const std::vector<const void*>& bos, const Requests::Request& r) {
  if (r.unmap) {
    m.erase(IclRange::right_open(r.addr, r.addr + r.range));
  } else {
    m += std::make_pair(IclRange::right_open(r.addr, r.addr + r.range), Mapping{bos[r.bo], 0});
  }
  benchmark::DoNotOptimize(m);
}

// The peer's state, as GpuvmState: the map warmed up with the same requests, and both streams.
template <typename Map>
struct IclState {
  std::vector<const void*> bos = PeerBos();
  Map m;
  Requests full;
  Requests hot;
  explicit IclState(uint64_t n)
      : m(MakeIcl<Map>(n, bos)), full(MakeRequests(n, false)), hot(MakeRequests(n, true)) {
    for (uint64_t i = 0; i < kWarmRequestsPerVa * n; ++i) IclRequest(m, bos, full.Next());
  }
};

// The peer's request loop, for either icl map form.
template <typename Map>
void IclRequests(benchmark::State& state, const std::string& kind, bool hot = false) {
  const uint64_t n = state.range(0);
  IclState<Map>& s = Kept<IclState<Map>>(kind + "/" + std::to_string(n),
                                         [n] { return std::make_shared<IclState<Map>>(n); });
  Requests& reqs = hot ? s.hot : s.full;
  for (auto _ : state) IclRequest(s.m, s.bos, reqs.Next());
  state.counters["vas"] = static_cast<double>(boost::icl::interval_count(s.m));
}

void BM_IclRequest(benchmark::State& state) { IclRequests<IclMap>(state, "icl"); }
void BM_IclRequestHot(benchmark::State& state) { IclRequests<IclMap>(state, "icl", true); }
BENCHMARK(BM_IclRequest)->Arg(1000)->Arg(100000);
BENCHMARK(BM_IclRequestHot)->Arg(100000);
BENCHMARK(BM_IclRequest)->Arg(1000000);
BENCHMARK(BM_IclRequestHot)->Arg(1000000);

void BM_IclSplitRequest(benchmark::State& state) { IclRequests<IclSplitMap>(state, "icl_split"); }
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
  // Heap bytes in use (malloc's, its mmapped blocks included) plus the huge-page chunks the
  // tree's node pool maps itself (vm::internal::HugeChunkBytes: not in malloc's statistics).
  auto heap = [] {
    const struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd + vm::internal::HugeChunkBytes();
  };
  const size_t before = heap();
  for (uint64_t i = 0; i < n; ++i) {
    vas[i].addr = i * kTile;
    vas[i].range = kTile;
    (void)vm->Insert(&vas[i]);
  }
  const size_t tree = heap() - before;
  std::printf("VALUE gpuva_bytes %.1f B\n",
              static_cast<double>(sizeof(vm::Gpuva)) + static_cast<double>(tree) / n);
  for (auto& va : vas) vm->Remove(&va);
}

// The tree's work per request (TreeWorkByBench) as VALUE lines: searches, nodes visited by them
// (searches x height: a btree search visits one node per level), finger steps.
void PrintTreeWork(const std::string& metric, const std::string& bench) {
  auto it = TreeWorkByBench().find(bench);
  if (it == TreeWorkByBench().end()) return;
  const TreeWork& w = it->second;
  std::printf("VALUE %s_searches %.3f per request\n", metric.c_str(), w.searches);
  std::printf("VALUE %s_node_visits %.2f per request (height %.0f)\n", metric.c_str(),
              w.searches * w.height, w.height);
  std::printf("VALUE %s_finger_steps %.2f per request\n", metric.c_str(), w.finger_steps);
}

}  // namespace

int main(int argc, char** argv) {
  // The same pages for every side: udrm's pool maps huge-page chunks (vm/gpuvm_node_pool.h), so
  // the bench re-executes itself with glibc's malloc on transparent huge pages too
  // (glibc.malloc.hugetlb=1, glibc >= 2.35), which is what the icl peers allocate from. Set
  // GLIBC_TUNABLES=glibc.malloc.hugetlb=0 to run the peers on 4 KiB pages instead.
  if (const char* t = std::getenv("GLIBC_TUNABLES");
      t == nullptr || std::strstr(t, "glibc.malloc.hugetlb") == nullptr) {
    const std::string v = (t == nullptr ? std::string() : std::string(t) + ":") +
                          "glibc.malloc.hugetlb=1";
    setenv("GLIBC_TUNABLES", v.c_str(), 1);
    execv("/proc/self/exe", argv);  // on failure: go on with the default pages
    std::fprintf(stderr, "gpuvm_bench: could not re-execute with %s\n", v.c_str());
  }
  std::vector<udrm::bench::Comparison> cmp;
  std::vector<udrm::bench::Value> val;
  std::vector<std::pair<std::string, std::string>> work;
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
    work.push_back({"gpuvm_request_" + t, "BM_GpuvmRequest" + a});
    if (t != "1e3") {
      // The same tree with the requests in a cache-sized window: the difference to the full
      // run is the cost of cache misses (same searches, same nodes visited).
      cmp.push_back({"gpuvm_request_hot_" + t, "BM_GpuvmRequestHot" + a, "icl_interval_map",
                     "BM_IclRequestHot" + a});
      val.push_back({"gpuvm_request_hot_" + t, "BM_GpuvmRequestHot" + a});
      work.push_back({"gpuvm_request_hot_" + t, "BM_GpuvmRequestHot" + a});
    }
  }
  const int rc = udrm::bench::RunAndReport(argc, argv, cmp, val);
  Slot().state.reset();
  for (const auto& [metric, bench] : work) PrintTreeWork(metric, bench);
  PrintGpuvaBytes();
  return rc;
}
