// pagetable_bench: vm::PageTable (with and without the per-thread TranslationCache) against, in
// the same run:
//  - std_map:    a std::map<page, entry> behind an absl::Mutex (a typical first attempt);
//  - hash_map:   an absl::flat_hash_map<page, entry> behind an absl::Mutex reader lock;
//  - flat_table: one atomic entry per 4 KiB page over a 40-bit space (what yuzu-family emulators
//                do: one load per translate; 2 GiB of address space reserved up front).
// Translate: ns per call over a hot set (64 pages) and a cold set (random over 1 GiB), for 4 KiB,
// 64 KiB and 2 MiB mappings, with 0 or 1 concurrent writer (mapping and unmapping elsewhere).
// Map/unmap: one request covering 1 GiB of 4 KiB or 2 MiB pages; PTEs per second.
#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "bench/report.h"
#include "benchmark/benchmark.h"
#include "vm/page_table.h"
#include "vm/rcu.h"
#include "vm/translation_cache.h"

namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kBase = 64 * kGiB;          // the measured mappings
constexpr uint64_t kWriterBase = 128 * kGiB;   // where the concurrent writer works
constexpr uint64_t kTarget = 512 * kGiB;
constexpr int kBatch = 256;                     // translations per benchmark iteration

// ---- The tables under test. Each maps [va, va+size) to target in pages of `ps`. ----

class UdrmTable {
 public:
  UdrmTable() : pt_(*vm::PageTable::Create(48)) {}
  void Map(uint64_t va, uint64_t size, uint64_t target, vm::PageSize ps) {
    auto pre = *pt_->ReserveForMap(va, size, target, vm::kPteRead | vm::kPteWrite, ps);
    vm::Invalidation inv = pt_->Map(va, size, target, vm::kPteRead | vm::kPteWrite, ps, pre);
    pt_->Unreserve(std::move(pre));
    pt_->Release(std::move(inv));
  }
  void Unmap(uint64_t va, uint64_t size) {
    auto pre = *pt_->ReserveForUnmap(va, size);
    vm::Invalidation inv = pt_->Unmap(va, size, pre);
    pt_->Unreserve(std::move(pre));
    pt_->Release(std::move(inv));
  }
  // An unmap whose old backing memory is not needed back at once (the concurrent writer's):
  // its grace period is batched with others' (PageTable::ReleaseDeferred).
  void UnmapDeferred(uint64_t va, uint64_t size) {
    auto pre = *pt_->ReserveForUnmap(va, size);
    vm::Invalidation inv = pt_->Unmap(va, size, pre);
    pt_->Unreserve(std::move(pre));
    pt_->ReleaseDeferred(std::move(inv));
  }
  uint64_t Translate(uint64_t va) { return pt_->Translate(va).address; }
  const vm::PageTable* table() const { return pt_.get(); }
  uint64_t Bytes() const { return pt_->stats().live_tables * 4096; }

 private:
  std::unique_ptr<vm::PageTable> pt_;
};

class StdMapTable {
 public:
  void Map(uint64_t va, uint64_t size, uint64_t target, vm::PageSize) {
    absl::MutexLock l(&mu_);
    for (uint64_t off = 0; off < size; off += 4096) pages_[(va + off) >> 12] = target + off;
  }
  void Unmap(uint64_t va, uint64_t size) {
    absl::MutexLock l(&mu_);
    pages_.erase(pages_.lower_bound(va >> 12), pages_.lower_bound((va + size) >> 12));
  }
  uint64_t Translate(uint64_t va) {
    absl::MutexLock l(&mu_);
    auto it = pages_.find(va >> 12);
    return it == pages_.end() ? 0 : it->second + (va & 0xfff);
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, uint64_t> pages_ ABSL_GUARDED_BY(mu_);
};

class HashTable {
 public:
  void Map(uint64_t va, uint64_t size, uint64_t target, vm::PageSize) {
    absl::MutexLock l(&mu_);
    for (uint64_t off = 0; off < size; off += 4096) pages_[(va + off) >> 12] = target + off;
  }
  void Unmap(uint64_t va, uint64_t size) {
    absl::MutexLock l(&mu_);
    for (uint64_t off = 0; off < size; off += 4096) pages_.erase((va + off) >> 12);
  }
  uint64_t Translate(uint64_t va) {
    absl::ReaderMutexLock l(&mu_);
    auto it = pages_.find(va >> 12);
    return it == pages_.end() ? 0 : it->second + (va & 0xfff);
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, uint64_t> pages_ ABSL_GUARDED_BY(mu_);
};

class FlatTable {
 public:
  static constexpr uint64_t kEntries = uint64_t{1} << 28;  // 40-bit space of 4 KiB pages
  FlatTable() {
    void* p = mmap(nullptr, kEntries * 8, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    entries_ = static_cast<std::atomic<uint64_t>*>(p);
  }
  ~FlatTable() { munmap(entries_, kEntries * 8); }
  void Map(uint64_t va, uint64_t size, uint64_t target, vm::PageSize) {
    for (uint64_t off = 0; off < size; off += 4096) {
      entries_[(va + off) >> 12].store(target + off, std::memory_order_release);
    }
  }
  void Unmap(uint64_t va, uint64_t size) {
    for (uint64_t off = 0; off < size; off += 4096) {
      entries_[(va + off) >> 12].store(0, std::memory_order_release);
    }
  }
  uint64_t Translate(uint64_t va) {
    const uint64_t e = entries_[(va >> 12) & (kEntries - 1)].load(std::memory_order_acquire);
    return e == 0 ? 0 : e + (va & 0xfff);
  }
  static uint64_t Bytes() { return kEntries * 8; }

 private:
  std::atomic<uint64_t>* entries_;
};

// The same table for every benchmark of a kind and page size (building them is slow).
template <typename T>
T& Shared(vm::PageSize ps) {
  static auto* tables = [] {
    auto* t = new std::unique_ptr<T>[4];
    for (int i = 0; i < 3; ++i) {
      t[i] = std::make_unique<T>();
      t[i]->Map(kBase, kGiB, kTarget, static_cast<vm::PageSize>(i));
    }
    return t;
  }();
  return *tables[static_cast<int>(ps)];
}

std::vector<uint64_t> Addresses(bool hot) {
  std::mt19937_64 rng(hot ? 1 : 2);
  std::vector<uint64_t> out(hot ? 4096 : 1 << 20);
  for (auto& va : out) {
    va = hot ? kBase + (rng() % 64) * 4096 * 7 + (rng() & 0xff8)
             : kBase + (rng() % (kGiB / 8)) * 8;
  }
  return out;
}

// The benchmark thread reads: registered once (kept for the process's life).
void EnsureRcuReader() {
  if (!vm::RcuReaderThread::IsRegistered()) new vm::RcuReaderThread();
}

// A writer mapping and unmapping 2 MiB of 4 KiB pages in its own region until told to stop. The
// udrm table's writer does not wait for its unmaps' grace periods one by one: it defers them
// (PageTable::ReleaseDeferred: one grace period per 64 unmaps or per millisecond), as a bind
// queue batches its jobs' releases. BM_TranslateControl's control:1 row keeps the writer that
// waits for one grace period per unmap (PageTable::Release).
template <typename T>
class Writer {
 public:
  explicit Writer(T* t) : thread_([this, t] {
      vm::RcuReaderThread reg;
      std::mt19937_64 rng(3);
      while (!stop_.load(std::memory_order_relaxed)) {
        const uint64_t va = kWriterBase + (rng() % 256) * (2 << 20);
        t->Map(va, 2 << 20, kTarget, vm::PageSize::k4K);
        if constexpr (std::is_same_v<T, UdrmTable>) {
          t->UnmapDeferred(va, 2 << 20);
        } else {
          t->Unmap(va, 2 << 20);
        }
      }
    }) {}
  ~Writer() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

template <typename T, bool kTlb = false>
void BM_Translate(benchmark::State& state) {
  EnsureRcuReader();
  const auto ps = static_cast<vm::PageSize>(state.range(0));
  const bool hot = state.range(1) == 1;
  const bool writer = state.range(2) == 1;
  T& table = Shared<T>(ps);
  const std::vector<uint64_t> vas = Addresses(hot);
  std::unique_ptr<Writer<T>> w;
  if (writer) w = std::make_unique<Writer<T>>(&table);
  std::unique_ptr<vm::TranslationCache> tlb;
  if constexpr (kTlb) tlb = std::make_unique<vm::TranslationCache>(table.table());
  size_t i = 0;
  uint64_t sum = 0;
  for (auto _ : state) {
    vm::RcuReadSection section;  // one read-side section per batch (a "warp")
    for (int k = 0; k < kBatch; ++k) {
      const uint64_t va = vas[i];
      i = i + 1 == vas.size() ? 0 : i + 1;
      if constexpr (kTlb) {
        sum += tlb->Translate(va).address;
      } else {
        sum += table.Translate(va);
      }
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// The software TLB as a batched reader uses it: one TranslationCache::Section per batch (the
// removal check once per batch, a hit is a tag compare and an add). Its setup repeats
// BM_Translate's on purpose: a shared input class (tried) changed the codegen of BM_Translate's
// walk loop and made the plain-walk rows ~15% slower (medians of 5 alternated processes).
template <typename T>
void BM_TranslateSection(benchmark::State& state) {
  EnsureRcuReader();
  const auto ps = static_cast<vm::PageSize>(state.range(0));
  const bool hot = state.range(1) == 1;
  const bool writer = state.range(2) == 1;
  T& table = Shared<T>(ps);
  const std::vector<uint64_t> vas = Addresses(hot);
  std::unique_ptr<Writer<T>> w;
  if (writer) w = std::make_unique<Writer<T>>(&table);
  vm::TranslationCache tlb(table.table());
  size_t i = 0;
  uint64_t sum = 0;
  for (auto _ : state) {
    vm::TranslationCache::Section section(tlb);
    for (int k = 0; k < kBatch; ++k) {
      const uint64_t va = vas[i];
      i = i + 1 == vas.size() ? 0 : i + 1;
      sum += section.Translate(va).address;
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// Diagnosis controls for the writer rows (issue 13): BM_Translate<UdrmTable>'s reader, against
// "writers" that share less and less with it, all in the same process:
//  - kind 0: none (the writer:0 row);
//  - kind 1: a writer that maps and unmaps 2 MiB in kWriterBase, and waits for a grace period
//            after each unmap (PageTable::Release);
//  - kind 2: a thread that spins writing its own private 64 KiB (no table, no RCU, no allocator):
//            what a busy second CPU costs the reader on this machine (SMT, host scheduling);
//  - kind 3: a thread that allocates, touches and frees 4 KiB..2 MiB (allocator traffic only);
//  - kind 4: a thread that only waits for RCU grace periods (vm::RcuSynchronize in a loop);
//  - kind 5: kind 1's map/unmap loop in a region under another root entry (no table line
//            shared with the reader, even the upper levels');
//  - kind 6: kind 1's loop with the unmaps' grace periods deferred (PageTable::ReleaseDeferred):
//            the Writer above, that the writer:1 rows use.
// Counters: the control thread's loops per second, and the grace periods per second it waited
// for.
enum WriterKind { kNoWriter = 0, kTableWriter, kSpinWriter, kMallocWriter, kGraceWriter,
                  kFarTableWriter, kDeferredTableWriter };
constexpr uint64_t kFarWriterBase = 128 * 512 * kGiB;  // root entry 128 of a 48-bit table

class ControlWriter {
 public:
  ControlWriter(UdrmTable* t, int kind) : thread_([this, t, kind] { Run(t, kind); }) {}
  ~ControlWriter() {
    stop_ = true;
    thread_.join();
  }
  uint64_t loops() const { return loops_.load(std::memory_order_relaxed); }
  uint64_t grace_periods() const { return grace_periods_.load(std::memory_order_relaxed); }

 private:
  void Run(UdrmTable* t, int kind) {
    vm::RcuReaderThread reg;
    std::mt19937_64 rng(3);
    std::vector<uint64_t> own(8192);
    uint64_t n = 0, gps = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
      switch (kind) {
        case kTableWriter:
        case kFarTableWriter: {
          const uint64_t base = kind == kTableWriter ? kWriterBase : kFarWriterBase;
          const uint64_t va = base + (rng() % 256) * (2 << 20);
          t->Map(va, 2 << 20, kTarget, vm::PageSize::k4K);  // no removal: no grace period
          t->Unmap(va, 2 << 20);
          ++gps;
          break;
        }
        case kDeferredTableWriter: {
          const uint64_t va = kWriterBase + (rng() % 256) * (2 << 20);
          t->Map(va, 2 << 20, kTarget, vm::PageSize::k4K);
          t->UnmapDeferred(va, 2 << 20);
          break;
        }
        case kSpinWriter:
          for (uint64_t& x : own) x += n;
          break;
        case kMallocWriter: {
          const size_t bytes = size_t{4096} << (rng() % 10);
          char* p = static_cast<char*>(std::malloc(bytes));
          for (size_t off = 0; off < bytes; off += 4096) p[off] = static_cast<char>(n);
          benchmark::DoNotOptimize(p);
          std::free(p);
          break;
        }
        case kGraceWriter:
          vm::RcuSynchronize();
          ++gps;
          break;
      }
      ++n;
      loops_.store(n, std::memory_order_relaxed);
      grace_periods_.store(gps, std::memory_order_relaxed);
    }
    benchmark::DoNotOptimize(own.data());
  }

  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> loops_{0};
  std::atomic<uint64_t> grace_periods_{0};
  std::thread thread_;
};

void BM_TranslateControl(benchmark::State& state) {
  EnsureRcuReader();
  const auto ps = static_cast<vm::PageSize>(state.range(0));
  const bool hot = state.range(1) == 1;
  const int kind = static_cast<int>(state.range(2));
  UdrmTable& table = Shared<UdrmTable>(ps);
  const std::vector<uint64_t> vas = Addresses(hot);
  std::unique_ptr<ControlWriter> w;
  if (kind != kNoWriter) w = std::make_unique<ControlWriter>(&table, kind);
  size_t i = 0;
  uint64_t sum = 0;
  for (auto _ : state) {
    vm::RcuReadSection section;
    for (int k = 0; k < kBatch; ++k) {
      const uint64_t va = vas[i];
      i = i + 1 == vas.size() ? 0 : i + 1;
      sum += table.Translate(va);
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * kBatch);
  if (w) {
    state.counters["writer_loops/s"] =
        benchmark::Counter(static_cast<double>(w->loops()), benchmark::Counter::kIsRate);
    state.counters["grace_periods/s"] =
        benchmark::Counter(static_cast<double>(w->grace_periods()), benchmark::Counter::kIsRate);
  }
}

template <typename T>
void BM_MapUnmap(benchmark::State& state) {
  EnsureRcuReader();
  const auto ps = static_cast<vm::PageSize>(state.range(0));
  T table;
  for (auto _ : state) {
    table.Map(kWriterBase, kGiB, kTarget, ps);
    table.Unmap(kWriterBase, kGiB);
  }
  // PTEs written per iteration: map + unmap of 1 GiB in pages of `ps` (4 KiB entries for peers).
  state.counters["PTEs/s"] = benchmark::Counter(
      2.0 * (kGiB / vm::PageBytes(ps)) * state.iterations(), benchmark::Counter::kIsRate);
}

void TranslateArgs(benchmark::internal::Benchmark* b) {
  for (int ps : {0, 1, 2}) {
    for (int hot : {1, 0}) {
      for (int writer : {0, 1}) b->Args({ps, hot, writer});
    }
  }
  b->ArgNames({"ps", "hot", "writer"});
}

BENCHMARK_TEMPLATE(BM_Translate, UdrmTable)->Apply(TranslateArgs);
BENCHMARK_TEMPLATE(BM_Translate, UdrmTable, true)->Apply(TranslateArgs);
BENCHMARK_TEMPLATE(BM_TranslateSection, UdrmTable)->Apply(TranslateArgs);
BENCHMARK_TEMPLATE(BM_Translate, StdMapTable)->Apply(TranslateArgs);
BENCHMARK_TEMPLATE(BM_Translate, HashTable)->Apply(TranslateArgs);
BENCHMARK_TEMPLATE(BM_Translate, FlatTable)->Apply(TranslateArgs);
BENCHMARK(BM_TranslateControl)->Apply([](benchmark::internal::Benchmark* b) {
  for (int ps : {0, 2}) {
    for (int kind = kNoWriter; kind <= kDeferredTableWriter; ++kind) b->Args({ps, 1, kind});
  }
  b->ArgNames({"ps", "hot", "control"});
});
BENCHMARK_TEMPLATE(BM_MapUnmap, UdrmTable)->Arg(0)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_MapUnmap, StdMapTable)->Arg(0)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_MapUnmap, HashTable)->Arg(0)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_MapUnmap, FlatTable)->Arg(0)->Arg(2)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  using udrm::bench::Comparison;
  using udrm::bench::Value;
  std::vector<Comparison> cmp;
  std::vector<Value> val;
  const char* sizes[] = {"4k", "64k", "2m"};
  const double per_call = 1.0 / kBatch;
  for (int ps = 0; ps < 3; ++ps) {
    for (int hot : {1, 0}) {
      for (int writer : {0, 1}) {
        const std::string args = "/ps:" + std::to_string(ps) + "/hot:" + std::to_string(hot) +
                                 "/writer:" + std::to_string(writer);
        const std::string m = std::string("translate_") + (hot ? "hot_" : "cold_") + sizes[ps] +
                              (writer ? "_writer" : "");
        const std::string udrm = "BM_Translate<UdrmTable>" + args;
        const std::string tlb = "BM_Translate<UdrmTable, true>" + args;
        for (const auto& [peer, name] : {std::pair{"std_map", "StdMapTable"},
                                         std::pair{"hash_map", "HashTable"},
                                         std::pair{"flat_table", "FlatTable"}}) {
          cmp.push_back({m, udrm, peer, "BM_Translate<" + std::string(name) + ">" + args});
        }
        cmp.push_back({m + "_tlb", tlb, "flat_table", "BM_Translate<FlatTable>" + args});
        cmp.push_back({m + "_tlb", tlb, "no_tlb", udrm});
        const std::string section = "BM_TranslateSection<UdrmTable>" + args;
        cmp.push_back({m + "_tlb_section", section, "flat_table", "BM_Translate<FlatTable>" + args});
        cmp.push_back({m + "_tlb_section", section, "tlb", tlb});
        val.push_back({m, udrm, per_call});
        val.push_back({m + "_tlb", tlb, per_call});
        val.push_back({m + "_tlb_section", section, per_call});
        val.push_back({m + "_flat_table", "BM_Translate<FlatTable>" + args, per_call});
        if (writer) {
          const std::string quiet = "BM_Translate<UdrmTable>/ps:" + std::to_string(ps) +
                                    "/hot:" + std::to_string(hot) + "/writer:0";
          cmp.push_back({m, udrm, "no_writer", quiet});
        }
      }
    }
  }
  val.push_back({"translate_hot", "BM_Translate<UdrmTable>/ps:0/hot:1/writer:0", per_call});
  for (int ps : {0, 2}) {
    const std::string arg = "/" + std::to_string(ps);
    const std::string m = std::string("map_unmap_") + (ps == 0 ? "4k" : "2m");
    for (const auto& [peer, name] : {std::pair{"std_map", "StdMapTable"},
                                     std::pair{"hash_map", "HashTable"},
                                     std::pair{"flat_table", "FlatTable"}}) {
      cmp.push_back({m, "BM_MapUnmap<UdrmTable>" + arg, peer,
                     "BM_MapUnmap<" + std::string(name) + ">" + arg});
    }
    const double ptes = 2.0 * (kGiB / vm::PageBytes(static_cast<vm::PageSize>(ps)));
    val.push_back({m + "_rate", "BM_MapUnmap<UdrmTable>" + arg, 1, "PTE/s", ptes});
    val.push_back({m + "_rate_flat_table", "BM_MapUnmap<FlatTable>" + arg, 1, "PTE/s", ptes});
  }
  const int rc = udrm::bench::RunAndReport(argc, argv, cmp, val);
  // Memory: udrm's tables for 1 GiB of 4 KiB pages vs the flat table's reservation.
  std::printf("VALUE udrm_table_bytes_1gib_4k %llu bytes\n",
              static_cast<unsigned long long>(Shared<UdrmTable>(vm::PageSize::k4K).Bytes()));
  std::printf("VALUE flat_table_reserved_bytes %llu bytes\n",
              static_cast<unsigned long long>(FlatTable::Bytes()));
  return rc;
}
