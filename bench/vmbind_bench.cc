// vmbind_bench: asynchronous VM_BIND (vm::BindVm / vm::BindQueue) against a synchronous peer in
// the same run (udrm::bench::SyncVm, bench/vmbind_sync_peer.h: one VM mutex, std::map VA tree
// with splits, vm::PageTable updated inline, one grace period inline per bind).
//
// BM_BindLatency<side>/case: one map then one unmap of the same range per iteration, waiting for
//   each: 1 page (4 KiB), 64 KiB (64 KiB pages), 2 MiB (one 2 MiB page), 1 GiB sparse (kMapNull
//   with 4 KiB pages: 262144 PTEs, the page table's worst case). udrm's latency is submit →
//   out-fence signalled (the fence's signal timestamp minus the time taken just before
//   Submit); the peer's is the duration of its Bind call. p50/p99 of the map (and the unmap) are
//   printed as VALUE lines (udrm also the map's time in Submit alone: ..._map_submit): per
//   repetition the percentile of its samples, then the median over
//   repetitions. Fixed iteration counts, so each run of the function is one repetition.
// BM_Batched<side>: per iteration one job of 64 maps (4 pages each, 8 BOs) and one job of the
//   64 unmaps; udrm submits without waiting and keeps at most two iterations in flight (an async
//   user's pattern), the peer calls Bind twice. Items: ops.
// BM_SharedBos<side>: 2 threads, each binding on its own VM; both VMs map the same 8 external
//   BOs (8 maps, then the 8 unmaps, per iteration, waiting for the unmap). Items: ops.
// BM_Translate<side>/binder: a reader translating random pages of a 16 MiB mapping, 256 per
//   RcuReadSection, 16 sections an iteration, with no binder (0) or with a bind storm on the same
//   VM (1: a thread mapping and unmapping 64-page ranges elsewhere in the VM as fast as it can, two
//   jobs in flight). Measured twice: in the reader's thread CPU time (manual time: what the reader
//   pays, the goal's measure — the 2-core machine has to share its cores with the binder, the
//   scheduler and the cleanup threads, which wall time would charge to the reader) and in wall
//   time.
//
// Goals (issue 12): 1-page bind ≤ 10 µs p50; batched ≥ 1.0x the peer; translate during binds
// ≥ 0.83x of without (≤ 1.2x slowdown).
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/report.h"
#include "bench/vmbind_sync_peer.h"
#include "benchmark/benchmark.h"
#include "fence/fence_context.h"
#include "vm/bind_queue.h"
#include "vm/bind_vm.h"
#include "vm/bo.h"
#include "vm/rcu.h"

namespace {

using udrm::bench::SyncVm;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

// ---- Latency samples: metric -> one vector per repetition. ----

absl::Mutex samples_mu;
std::map<std::string, std::vector<std::vector<double>>>& Samples() {
  static auto* s = new std::map<std::string, std::vector<std::vector<double>>>;
  return *s;
}
void Record(const std::string& metric, std::vector<double> ns) {
  absl::MutexLock l(&samples_mu);
  Samples()[metric].push_back(std::move(ns));
}
double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

void EnsureRcuReader() {
  if (!vm::RcuReaderThread::IsRegistered()) new vm::RcuReaderThread();
}

// ---- The two sides, behind one small interface: Bind waits; Start does not (peer: waits). ----

struct Udrm {
  static constexpr const char* kName = "Udrm";
  std::unique_ptr<vm::BindVm> vm = *vm::BindVm::Create("bench", {});
  std::unique_ptr<vm::BindQueue> queue = *vm::BindQueue::Create(*vm);

  ~Udrm() { queue.reset(); }
  absl::StatusOr<fence::FenceRef> Start(std::span<const vm::BindOp> ops) {
    return queue->Submit(ops);
  }
  const vm::PageTable& table() const { return vm->page_table(); }
};

struct Sync {
  static constexpr const char* kName = "Sync";
  SyncVm vm;
  absl::StatusOr<fence::FenceRef> Start(std::span<const vm::BindOp> ops) {
    absl::Status s = vm.Bind(ops);
    if (!s.ok()) return s;
    return fence::FenceRef();
  }
  const vm::PageTable& table() const { return vm.page_table(); }
};

absl::Status WaitFor(const absl::StatusOr<fence::FenceRef>& f) {
  if (!f.ok()) return f.status();
  if (!*f) return absl::OkStatus();
  if (absl::Status s = (*f)->Wait(); !s.ok()) return s;
  return (*f)->error();
}

// ---- Latency. ----

struct Case {
  const char* name;
  uint64_t range;
  vm::PageSize ps;
  bool sparse;
  int iterations;
};
constexpr Case kCases[] = {
    {"1page", kPage, vm::PageSize::k4K, false, 2000},
    {"64k", 64 * 1024, vm::PageSize::k64K, false, 2000},
    {"2m", 2 * kMiB, vm::PageSize::k2M, false, 1000},
    {"1g_sparse", kGiB, vm::PageSize::k4K, true, 20},
};

// The duration until `f` signalled (udrm: its signal timestamp; peer: now, Bind has returned).
double LatencyNs(const absl::StatusOr<fence::FenceRef>& f, absl::Time t0) {
  const absl::Time end = (f.ok() && *f) ? (*f)->timestamp() : absl::Now();
  return absl::ToDoubleNanoseconds(end - t0);
}

template <typename Side>
void BM_BindLatency(benchmark::State& state) {
  const Case& c = kCases[state.range(0)];
  Side side;
  vm::Ref<vm::Bo> bo;
  if (!c.sparse) {
    bo = vm::Bo::Create(c.range);
    bo->memory();  // allocated outside the timing
  }
  const uint64_t va = 4 * kGiB;
  const vm::BindOp map = c.sparse ? vm::BindOp::MapNull(va, c.range, c.ps)
                                  : vm::BindOp::Map(va, c.range, bo.get(), 0, c.ps);
  const vm::BindOp unmap = vm::BindOp::Unmap(va, c.range);
  std::vector<double> map_ns, unmap_ns, submit_ns;
  map_ns.reserve(c.iterations);
  unmap_ns.reserve(c.iterations);
  submit_ns.reserve(c.iterations);
  for (auto _ : state) {
    absl::Time t0 = absl::Now();
    absl::StatusOr<fence::FenceRef> f = side.Start({&map, 1});
    submit_ns.push_back(absl::ToDoubleNanoseconds(absl::Now() - t0));
    if (absl::Status s = WaitFor(f); !s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    map_ns.push_back(LatencyNs(f, t0));
    t0 = absl::Now();
    f = side.Start({&unmap, 1});
    if (absl::Status s = WaitFor(f); !s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    unmap_ns.push_back(LatencyNs(f, t0));
  }
  if (map_ns.empty() || unmap_ns.empty()) return;
  const std::string m =
      std::string("bind_latency_") + c.name + (Side::kName[0] == 'S' ? "_sync" : "");
  Record(m + "_map", std::move(map_ns));
  Record(m + "_unmap", std::move(unmap_ns));
  // udrm: the part of the map's latency spent in Submit (the rest is the hand-off to the
  // scheduler's thread and RunJob).
  if (Side::kName[0] == 'U') Record(m + "_map_submit", std::move(submit_ns));
}

// Registered in main (one per side and case, each with its case's fixed iteration count).

// ---- Batched binds: 64 ops a job. ----

constexpr int kBatchOps = 64;
constexpr uint64_t kBatchOpPages = 4;

struct BatchOps {
  std::vector<vm::Ref<vm::Bo>> bos;
  std::vector<vm::BindOp> maps, unmaps;
  BatchOps(uint64_t base, int n, int nbos, std::vector<vm::Ref<vm::Bo>> shared = {}) {
    bos = std::move(shared);
    const uint64_t per_bo = (n + nbos - 1) / nbos;
    while (static_cast<int>(bos.size()) < nbos) {
      bos.push_back(vm::Bo::Create(per_bo * kBatchOpPages * kPage));
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t va = base + i * kBatchOpPages * kPage;
      maps.push_back(vm::BindOp::Map(va, kBatchOpPages * kPage, bos[i % nbos].get(),
                                     (i / nbos) * kBatchOpPages * kPage));
      unmaps.push_back(vm::BindOp::Unmap(va, kBatchOpPages * kPage));
    }
    for (auto& bo : bos) bo->memory();
  }
};

template <typename Side>
void BM_Batched(benchmark::State& state) {
  auto side = std::make_unique<Side>();
  const BatchOps ops(kGiB, kBatchOps, 8);
  std::deque<absl::StatusOr<fence::FenceRef>> in_flight;
  for (auto _ : state) {
    absl::StatusOr<fence::FenceRef> m = side->Start(ops.maps);
    absl::StatusOr<fence::FenceRef> u = side->Start(ops.unmaps);
    if (!m.ok() || !u.ok()) {
      state.SkipWithError((m.ok() ? u : m).status().ToString().c_str());
      break;
    }
    in_flight.push_back(std::move(u));
    if (in_flight.size() > 2) {
      if (absl::Status s = WaitFor(in_flight.front()); !s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        break;
      }
      in_flight.pop_front();
    }
  }
  for (auto& f : in_flight) (void)WaitFor(f);
  state.SetItemsProcessed(state.iterations() * 2 * kBatchOps);
}
BENCHMARK_TEMPLATE(BM_Batched, Udrm)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Batched, Sync)->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- Two VMs sharing external BOs, one binder thread each. ----

constexpr int kSharedOps = 8;

template <typename Side>
struct SharedFixture {
  Side vms[2];
  std::unique_ptr<BatchOps> ops[2];
  SharedFixture() {
    ops[0] = std::make_unique<BatchOps>(kGiB, kSharedOps, kSharedOps);
    ops[1] = std::make_unique<BatchOps>(2 * kGiB, kSharedOps, kSharedOps, ops[0]->bos);
  }
};

template <typename Side>
void BM_SharedBos(benchmark::State& state) {
  static SharedFixture<Side>* fixture = nullptr;
  // No RCU registration here: binders do not read. (Under liburcu a registration leaked on a
  // thread that exits — thread 1 is a new thread every run — left its registry pointing at dead
  // TLS and grace periods never ended; vm/rcu's own slots only stay claimed, never reused.)
  if (state.thread_index() == 0) fixture = new SharedFixture<Side>();
  // The loop's start barrier publishes `fixture`; every iteration waits for its own binds, and
  // the end barrier comes after both threads' last waits, so thread 0 may then delete it.
  for (auto _ : state) {
    Side& side = fixture->vms[state.thread_index()];
    const BatchOps& ops = *fixture->ops[state.thread_index()];
    absl::StatusOr<fence::FenceRef> m = side.Start(ops.maps);
    absl::StatusOr<fence::FenceRef> u = side.Start(ops.unmaps);
    absl::Status s = WaitFor(m);
    if (s.ok()) s = WaitFor(u);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * 2 * kSharedOps);
  if (state.thread_index() == 0) {
    delete fixture;
    fixture = nullptr;
  }
}
BENCHMARK_TEMPLATE(BM_SharedBos, Udrm)->Threads(2)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_SharedBos, Sync)->Threads(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- Translate throughput with and without a bind storm. ----

constexpr int kTranslateBatch = 256;       // translations per RcuReadSection
constexpr int kSectionsPerIteration = 16;  // so the two thread-CPU clock reads cost < 2%
constexpr uint64_t kReadBase = 8 * kGiB;
constexpr uint64_t kReadPages = 4096;  // 16 MiB
constexpr uint64_t kStormBase = 16 * kGiB;
constexpr uint64_t kStormPages = 64;

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Maps and unmaps kStormPages-page ranges (8 slots, 8 BOs) until stopped; two jobs in flight.
template <typename Side>
class Storm {
 public:
  explicit Storm(Side& side) : thread_([this, &side] { Run(side); }) {}
  ~Storm() {
    stop_ = true;
    thread_.join();
  }
  int64_t binds() const { return binds_.load(); }

 private:
  void Run(Side& side) {
    vm::RcuReaderThread reg;
    std::vector<vm::Ref<vm::Bo>> bos;
    for (int i = 0; i < 8; ++i) bos.push_back(vm::Bo::Create(kStormPages * kPage));
    std::deque<absl::StatusOr<fence::FenceRef>> in_flight;
    std::mt19937 rng(7);
    while (!stop_.load(std::memory_order_relaxed)) {
      const int i = static_cast<int>(rng() % 8);
      const uint64_t va = kStormBase + i * kStormPages * kPage;
      const vm::BindOp ops[] = {vm::BindOp::Map(va, kStormPages * kPage, bos[i].get(), 0),
                                vm::BindOp::Unmap(va + 8 * kPage, 8 * kPage)};
      const vm::BindOp unmap = vm::BindOp::Unmap(va, kStormPages * kPage);
      in_flight.push_back(side.Start(ops));
      in_flight.push_back(side.Start({&unmap, 1}));
      binds_.fetch_add(2, std::memory_order_relaxed);
      while (in_flight.size() > 2) {
        (void)WaitFor(in_flight.front());
        in_flight.pop_front();
      }
    }
    for (auto& f : in_flight) (void)WaitFor(f);
  }

  std::atomic<bool> stop_{false};
  std::atomic<int64_t> binds_{0};
  std::thread thread_;
};

template <typename Side, bool kCpuTime>
void BM_Translate(benchmark::State& state) {
  EnsureRcuReader();
  const bool binder = state.range(0) == 1;
  Side side;
  vm::Ref<vm::Bo> bo = vm::Bo::Create(kReadPages * kPage);
  const vm::BindOp map = vm::BindOp::Map(kReadBase, kReadPages * kPage, bo.get(), 0);
  if (absl::Status s = WaitFor(side.Start({&map, 1})); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  std::vector<uint64_t> vas(1 << 14);
  std::mt19937_64 rng(1);
  for (auto& va : vas) va = kReadBase + (rng() % kReadPages) * kPage + (rng() & 0xff8);
  std::unique_ptr<Storm<Side>> storm;
  if (binder) storm = std::make_unique<Storm<Side>>(side);
  const vm::PageTable& pt = side.table();
  size_t i = 0;
  uint64_t sum = 0;
  const absl::Time wall0 = absl::Now();
  for (auto _ : state) {
    const double t0 = kCpuTime ? ThreadCpuSeconds() : 0;
    for (int b = 0; b < kSectionsPerIteration; ++b) {
      vm::RcuReadSection section;
      for (int k = 0; k < kTranslateBatch; ++k) {
        sum += pt.Translate(vas[i]).address;
        i = (i + 1) & (vas.size() - 1);
      }
    }
    if constexpr (kCpuTime) state.SetIterationTime(ThreadCpuSeconds() - t0);
  }
  const double wall = absl::ToDoubleSeconds(absl::Now() - wall0);
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * kTranslateBatch * kSectionsPerIteration);
  if (storm) state.counters["binds/s"] = static_cast<double>(storm->binds()) / wall;
  storm.reset();
}
BENCHMARK_TEMPLATE(BM_Translate, Udrm, true)->Arg(0)->Arg(1)->UseManualTime();
BENCHMARK_TEMPLATE(BM_Translate, Sync, true)->Arg(0)->Arg(1)->UseManualTime();
BENCHMARK_TEMPLATE(BM_Translate, Udrm, false)->Arg(0)->Arg(1)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Translate, Sync, false)->Arg(0)->Arg(1)->UseRealTime();

void PrintLatencyValues() {
  absl::MutexLock l(&samples_mu);
  for (const auto& [metric, reps] : Samples()) {
    for (const auto& [suffix, p] : {std::pair{"p50", 0.5}, std::pair{"p99", 0.99}}) {
      std::vector<double> per_rep;
      for (const auto& v : reps) per_rep.push_back(Percentile(v, p));
      std::printf("VALUE %s_%s %.2f us\n", metric.c_str(), suffix, Median(per_rep) / 1e3);
    }
  }
  // The goal's ratio on the p50 of a 1-page map.
  auto u = Samples().find("bind_latency_1page_map");
  auto s = Samples().find("bind_latency_1page_sync_map");
  if (u != Samples().end() && s != Samples().end()) {
    std::vector<double> up, sp;
    for (const auto& v : u->second) up.push_back(Percentile(v, 0.5));
    for (const auto& v : s->second) sp.push_back(Percentile(v, 0.5));
    std::printf("RATIO bind_latency_1page_map_p50 vs sync: %.3f\n", Median(sp) / Median(up));
  }
}

// Table pages pre-allocated for one 64-op map job: udrm's (read from the page table's stats
// while the job waits for an in-fence) and the peer's list-level bound of the same ops.
void PrintReservedTables() {
  const BatchOps ops(kGiB, kBatchOps, 8);
  Udrm side;
  fence::FenceContext ctx("gate");
  fence::FenceRef gate = ctx.NewFence();
  absl::StatusOr<fence::FenceRef> out = side.queue->Submit(ops.maps, {&gate, 1});
  const int64_t udrm = side.table().stats().reserved_tables;
  gate->Signal();
  (void)WaitFor(out);
  std::unique_ptr<vm::PageTable> pt = *vm::PageTable::Create(48);
  vm::PageTable::ListBound bound(*pt);
  for (const vm::BindOp& op : ops.maps) {
    (void)bound.AddMap(op.va, op.range, uint64_t{1} << 32, vm::kPteRead | vm::kPteWrite,
                       op.page_size);
  }
  std::printf("VALUE batched_64_reserved_tables %lld tables\n", static_cast<long long>(udrm));
  std::printf("VALUE batched_64_reserved_tables_sync %lld tables\n",
              static_cast<long long>(bound.pages()));
}

}  // namespace

int main(int argc, char** argv) {
  using udrm::bench::Comparison;
  using udrm::bench::Value;
  std::vector<Comparison> cmp;
  std::vector<Value> val;
  for (int c = 0; c < 4; ++c) {
    for (auto [name, fn] : {std::pair{"BM_BindLatency<Udrm>", &BM_BindLatency<Udrm>},
                            std::pair{"BM_BindLatency<Sync>", &BM_BindLatency<Sync>}}) {
      benchmark::RegisterBenchmark(name, fn)
          ->Arg(c)
          ->Iterations(kCases[c].iterations)
          ->Unit(benchmark::kMicrosecond);
    }
    const std::string arg =
        "/" + std::to_string(c) + "/iterations:" + std::to_string(kCases[c].iterations);
    cmp.push_back({std::string("bind_roundtrip_") + kCases[c].name, "BM_BindLatency<Udrm>" + arg,
                   "sync", "BM_BindLatency<Sync>" + arg});
  }
  cmp.push_back({"batched_64", "BM_Batched<Udrm>/real_time", "sync", "BM_Batched<Sync>/real_time"});
  val.push_back({"batched_64_rate", "BM_Batched<Udrm>/real_time", 1, "ops/s", 2.0 * kBatchOps});
  val.push_back(
      {"batched_64_rate_sync", "BM_Batched<Sync>/real_time", 1, "ops/s", 2.0 * kBatchOps});
  const std::string shared_u = "BM_SharedBos<Udrm>/real_time/threads:2";
  const std::string shared_s = "BM_SharedBos<Sync>/real_time/threads:2";
  cmp.push_back({"shared_bos_2vms", shared_u, "sync", shared_s});
  // Google Benchmark divides the wall time by the iterations of both threads.
  val.push_back({"shared_bos_2vms_rate", shared_u, 1, "ops/s", 2.0 * kSharedOps});
  val.push_back({"shared_bos_2vms_rate_sync", shared_s, 1, "ops/s", 2.0 * kSharedOps});
  for (const char* side : {"Udrm", "Sync"}) {
    const std::string s = side;
    const std::string suffix = s == "Udrm" ? "" : "_sync";
    const std::string cpu = "BM_Translate<" + s + ", true>/";
    const std::string wall = "BM_Translate<" + s + ", false>/";
    cmp.push_back({"translate_during_binds_cpu" + suffix, cpu + "1/manual_time", "no_binder",
                   cpu + "0/manual_time"});
    cmp.push_back({"translate_during_binds_wall" + suffix, wall + "1/real_time", "no_binder",
                   wall + "0/real_time"});
    val.push_back({"translate_cpu" + suffix, cpu + "0/manual_time",
                   1.0 / (kTranslateBatch * kSectionsPerIteration)});
    val.push_back({"translate_cpu_during_binds" + suffix, cpu + "1/manual_time",
                   1.0 / (kTranslateBatch * kSectionsPerIteration)});
  }
  cmp.push_back({"translate_during_binds_cpu", "BM_Translate<Udrm, true>/1/manual_time",
                 "sync_binder", "BM_Translate<Sync, true>/1/manual_time"});
  const int rc = udrm::bench::RunAndReport(argc, argv, cmp, val);
  PrintLatencyValues();
  PrintReservedTables();
  return rc;
}
