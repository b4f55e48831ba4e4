// fence_bench: udrm fences against what a user would otherwise write with std::promise /
// std::shared_future, measured side by side in one run.
//
//  signal_cbN   create a fence, register N callbacks, signal (callbacks run), release.
//               Peer: std::promise<void> plus a mutex-guarded vector of std::function callbacks
//               (a promise has no callbacks of its own).
//  wait_wakeup  cross-thread wake-up: two threads ping-pong through fresh fences; one round trip
//               is two wake-ups. Peer: the same ping-pong through std::promise/std::shared_future.
//  find_seqnoL  look up a random timeline point on an unsignalled chain of L points.
//               Peer: a mutex-guarded std::map<seqno, std::shared_future<void>> timeline.
//
// Memory (VALUE *_bytes): heap bytes an object holds, counted by this binary's operator new and
// delete as the allocator's usable size of each block (malloc_usable_size: what the allocator
// really hands out, rounding included, its 8-byte chunk header not), around creating objects
// that stay alive; not sizeof. fence_bytes: one bare Fence::Create(). chain_link_bytes: one
// FenceChain appended to a timeline of 1024 links (mean; its contained fence not included, its
// seqno-index entry included). resv_bytes: one empty Resv.
#include <malloc.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <new>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "bench/report.h"
#include "benchmark/benchmark.h"
#include "fence/fence.h"
#include "fence/fence_chain.h"
#include "fence/fence_context.h"
#include "fence/resv.h"

// Heap accounting for the memory values: off (one relaxed load per allocation) except while
// MeasureBytes runs, single-threaded.
namespace {
std::atomic<bool> g_counting{false};
int64_t g_live_bytes = 0;  // only touched while g_counting, by the measuring thread
}  // namespace

void* operator new(std::size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  if (g_counting.load(std::memory_order_relaxed)) g_live_bytes += malloc_usable_size(p);
  return p;
}
// GCC sees malloc'd memory released by free() here after inlining and warns; that is the pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept {
  if (p != nullptr && g_counting.load(std::memory_order_relaxed)) {
    g_live_bytes -= malloc_usable_size(p);
  }
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }

namespace {

// Heap bytes still held after `make(i)` for i in [0, n), per object; the objects are kept alive
// until the count is taken (`make` returns them).
template <typename Make>
double MeasureBytes(int n, Make make) {
  using Obj = decltype(make(0));
  std::vector<Obj> objs;
  objs.reserve(n);
  g_live_bytes = 0;
  g_counting = true;
  for (int i = 0; i < n; ++i) objs.push_back(make(i));
  g_counting = false;
  const double per_object = static_cast<double>(g_live_bytes) / n;
  return per_object;
}

void ReportMemory() {
  const double fence_bytes =
      MeasureBytes(1024, [](int i) { return fence::Fence::Create(1, i + 1); });
  // Links of one timeline; the contained fences exist beforehand and are not counted.
  std::vector<fence::FenceRef> contained;
  for (int i = 0; i < 1024; ++i) contained.push_back(fence::Fence::Create(2, i + 1));
  fence::FenceRef head;
  const double link_bytes = MeasureBytes(1024, [&](int i) {
    head = fence::FenceChain::Create(head, contained[i], i + 1);
    return head;
  });
  const double resv_bytes =
      MeasureBytes(256, [](int) { return std::make_unique<fence::Resv>(); });
  std::printf("VALUE fence_bytes %.0f B\n", fence_bytes);
  std::printf("VALUE chain_link_bytes %.0f B\n", link_bytes);
  std::printf("VALUE resv_bytes %.0f B\n", resv_bytes);
  for (auto& f : contained) f->Signal();
}

void BM_Udrm_SignalWithCallbacks(benchmark::State& state) {
  const int n = state.range(0);
  std::vector<fence::FenceCallback> cbs(n);
  fence::FenceContext tl;
  int64_t ran = 0;
  for (auto _ : state) {
    fence::FenceRef f = tl.NewFence();
    for (int i = 0; i < n; ++i) {
      (void)f->AddCallback(&cbs[i], [&ran](fence::Fence&) { ++ran; });
    }
    f->Signal();
  }
  benchmark::DoNotOptimize(ran);
}
BENCHMARK(BM_Udrm_SignalWithCallbacks)->Arg(1)->Arg(8)->Arg(64);

// What a user writes without udrm: a promise and a callback list beside it.
struct PromiseWithCallbacks {
  std::promise<void> promise;
  std::mutex mu;
  bool done = false;
  std::vector<std::function<void()>> callbacks;
  void Add(std::function<void()> fn) {
    std::lock_guard<std::mutex> l(mu);
    callbacks.push_back(std::move(fn));
  }
  void Signal() {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard<std::mutex> l(mu);
      done = true;
      run.swap(callbacks);
    }
    promise.set_value();
    for (auto& fn : run) fn();
  }
};

void BM_Promise_SignalWithCallbacks(benchmark::State& state) {
  const int n = state.range(0);
  int64_t ran = 0;
  for (auto _ : state) {
    auto p = std::make_shared<PromiseWithCallbacks>();
    for (int i = 0; i < n; ++i) p->Add([&ran] { ++ran; });
    p->Signal();
  }
  benchmark::DoNotOptimize(ran);
}
BENCHMARK(BM_Promise_SignalWithCallbacks)->Arg(1)->Arg(8)->Arg(64);

// Ping-pong: the main thread signals ping[i] and waits pong[i]; the echo thread waits ping[i]
// and signals pong[i]. Fences are made ahead so the timed loop only signals and waits.
void BM_Udrm_WaitWakeup(benchmark::State& state) {
  constexpr int kBatch = 1000;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<fence::FenceRef> ping, pong;
    for (int i = 0; i < kBatch; ++i) {
      ping.push_back(fence::Fence::Create(1, i + 1));
      pong.push_back(fence::Fence::Create(2, i + 1));
    }
    std::thread echo([&] {
      for (int i = 0; i < kBatch; ++i) {
        (void)ping[i]->Wait();
        pong[i]->Signal();
      }
    });
    state.ResumeTiming();
    for (int i = 0; i < kBatch; ++i) {
      ping[i]->Signal();
      (void)pong[i]->Wait();
    }
    state.PauseTiming();
    echo.join();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Udrm_WaitWakeup)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Promise_WaitWakeup(benchmark::State& state) {
  constexpr int kBatch = 1000;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<std::promise<void>> ping(kBatch), pong(kBatch);
    std::vector<std::shared_future<void>> ping_f, pong_f;
    for (int i = 0; i < kBatch; ++i) {
      ping_f.push_back(ping[i].get_future().share());
      pong_f.push_back(pong[i].get_future().share());
    }
    std::thread echo([&] {
      for (int i = 0; i < kBatch; ++i) {
        ping_f[i].wait();
        pong[i].set_value();
      }
    });
    state.ResumeTiming();
    for (int i = 0; i < kBatch; ++i) {
      ping[i].set_value();
      pong_f[i].wait();
    }
    state.PauseTiming();
    echo.join();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Promise_WaitWakeup)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Udrm_FindSeqno(benchmark::State& state) {
  const int len = state.range(0);
  std::vector<fence::FenceRef> fences;
  fence::FenceRef head;
  for (int i = 0; i < len; ++i) {
    fences.push_back(fence::Fence::Create(fence::FenceContext::Allocate(), 1));
    head = fence::FenceChain::Create(head, fences.back(), i + 1);
  }
  std::mt19937 rng(1);
  for (auto _ : state) {
    fence::FenceRef f = head;
    benchmark::DoNotOptimize(fence::FenceChain::FindSeqno(&f, 1 + rng() % len));
  }
  for (auto& f : fences) f->Signal();
}
BENCHMARK(BM_Udrm_FindSeqno)->Arg(64)->Arg(4096);

void BM_Map_FindSeqno(benchmark::State& state) {
  const int len = state.range(0);
  std::mutex mu;
  std::map<uint64_t, std::shared_future<void>> timeline;
  std::vector<std::promise<void>> promises(len);
  for (int i = 0; i < len; ++i) timeline[i + 1] = promises[i].get_future().share();
  std::mt19937 rng(1);
  for (auto _ : state) {
    std::lock_guard<std::mutex> l(mu);
    auto it = timeline.lower_bound(1 + rng() % len);
    std::shared_future<void> f = it->second;
    benchmark::DoNotOptimize(f);
  }
}
BENCHMARK(BM_Map_FindSeqno)->Arg(64)->Arg(4096);

}  // namespace

int main(int argc, char** argv) {
  using udrm::bench::Comparison;
  using udrm::bench::Value;
  std::vector<Comparison> cmp;
  std::vector<Value> val;
  for (int n : {1, 8, 64}) {
    std::string m = "signal_cb" + std::to_string(n);
    std::string arg = "/" + std::to_string(n);
    cmp.push_back({m, "BM_Udrm_SignalWithCallbacks" + arg, "promise",
                   "BM_Promise_SignalWithCallbacks" + arg});
    val.push_back({m, "BM_Udrm_SignalWithCallbacks" + arg});
  }
  cmp.push_back({"wait_wakeup", "BM_Udrm_WaitWakeup/real_time", "shared_future",
                 "BM_Promise_WaitWakeup/real_time"});
  // A batch is 1000 round trips of two wake-ups each: ns per wake-up = time / 2000.
  val.push_back({"wait_wakeup", "BM_Udrm_WaitWakeup/real_time", 1.0 / 2000});
  val.push_back({"wait_wakeup_shared_future", "BM_Promise_WaitWakeup/real_time", 1.0 / 2000});
  for (int len : {64, 4096}) {
    std::string m = "find_seqno" + std::to_string(len);
    std::string arg = "/" + std::to_string(len);
    cmp.push_back({m, "BM_Udrm_FindSeqno" + arg, "map_of_futures", "BM_Map_FindSeqno" + arg});
    val.push_back({m, "BM_Udrm_FindSeqno" + arg});
  }
  const int rc = udrm::bench::RunAndReport(argc, argv, cmp, val);
  ReportMemory();
  return rc;
}
