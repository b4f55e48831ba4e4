// exec_bench: T threads each lock k = 4 distinct random objects out of M, add a fence to each and
// unlock, as fast as they can. udrm's exec::Exec (any locking order; Wait-Die or Wound-Wait; with
// the default back-off policy — none under Wait-Die, delays plus backing off instead of sleeping
// behind an older holder under Wound-Wait — and its alternative: Wait-Die with delays, Wound-Wait
// without the policy) against, in the same run:
//  - address_ordered: absl::Mutex per object, locked in address order (needs a global order);
//  - scoped_lock: std::mutex per object via std::scoped_lock (std::lock's try-and-back-off).
// The peers keep each object's fences in a vector with the same replace-same-context rule, so all
// sides do the same locked work — but a Resv also publishes each change as a snapshot for
// lock-free readers (GetFences, Wait: no lock), which the peers' vectors cannot offer. RATIO lines compare time per transaction (x > 1: udrm faster).
// lockonly_* lines compare the locking alone (Exec with LockObj vs address-ordered absl::Mutex,
// no Resv work): a diagnostic that separates the ww-mutex/Exec cost from the Resv's.
#include <algorithm>
#include <array>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bench/report.h"
#include "benchmark/benchmark.h"
#include "exec/exec.h"
#include "fence/fence_context.h"
#include "fence/resv.h"

namespace {

constexpr int kLocksPerTxn = 4;

// k distinct random indices below m.
std::array<int, kLocksPerTxn> Pick(std::mt19937& rng, int m) {
  std::array<int, kLocksPerTxn> p;
  for (int i = 0; i < kLocksPerTxn; ++i) {
    int v;
    do {
      v = static_cast<int>(rng() % m);
    } while (std::find(p.begin(), p.begin() + i, v) != p.begin() + i);
    p[i] = v;
  }
  return p;
}

void AddReplacingSameContext(std::vector<fence::FenceRef>& fences, const fence::FenceRef& f) {
  for (auto& old : fences) {
    if (old->context() == f->context() || old->IsSignaled()) {
      old = f;
      return;
    }
  }
  fences.push_back(f);
}

struct ResvObject final : exec::Object {
  // Names its Resv to exec::Object (as any object with a fixed Resv may): Exec skips resv().
  explicit ResvObject(ww::WwClass* cls) : exec::Object(&r), r(cls) {}
  fence::Resv& resv() override { return r; }
  fence::Resv r;
};

template <ww::WwAlgorithm kAlgo>
std::vector<std::unique_ptr<ResvObject>>& ResvPool(int m) {
  static ww::WwClass cls(kAlgo);
  static auto* pools = [] {
    auto* p = new std::vector<std::unique_ptr<ResvObject>>[2];
    for (int i = 0; i < 8; ++i) p[0].push_back(std::make_unique<ResvObject>(&cls));
    for (int i = 0; i < 64; ++i) p[1].push_back(std::make_unique<ResvObject>(&cls));
    return p;
  }();
  return pools[m == 8 ? 0 : 1];
}

// kBackoff: the default BackoffPolicy (false: policy.enabled = false). kWaitDieDelays: also
// policy.wait_die_delays (the delays Wait-Die runs without by default).
template <ww::WwAlgorithm kAlgo, bool kBackoff, bool kWaitDieDelays = false>
void BM_Exec(benchmark::State& state) {
  const int m = state.range(0);
  auto& pool = ResvPool<kAlgo>(m);
  ww::WwClass* cls = const_cast<ww::WwClass*>(pool[0]->r.lock().ww_class());
  std::mt19937 rng(state.thread_index() + 1);
  fence::FenceContext timeline;
  exec::BackoffPolicy policy;
  policy.enabled = kBackoff;
  policy.wait_die_delays = kWaitDieDelays;
  int64_t retries = 0;
  absl::Duration delayed;  // the back-off policy's delays, summed
  for (auto _ : state) {
    auto p = Pick(rng, m);
    exec::Object* objs[kLocksPerTxn];
    for (int i = 0; i < kLocksPerTxn; ++i) objs[i] = pool[p[i]].get();
    fence::FenceRef done = timeline.NewFence();
    {
      exec::Exec e(0, {}, cls, policy);
      absl::Status st = e.UntilAllLocked([&](exec::Exec& x) { return x.PrepareArray(objs, 1); });
      if (!st.ok()) state.SkipWithError("exec failed");
      for (exec::Object* o : e.objects()) o->resv().AddFence(done, fence::ResvUsage::kWrite);
      // A delay follows a back-off only: the Duration sum (about 23 instructions, which the peer
      // does not pay) runs on retries alone.
      if (const int r = e.retries(); r != 0) {
        retries += r;
        delayed += e.total_backoff();
      }
    }
    done->Signal();
  }
  state.counters["retries/txn"] =
      benchmark::Counter(static_cast<double>(retries) / state.iterations(),
                         benchmark::Counter::kAvgThreads);
  // Nanoseconds per transaction spent in back-off delays (Exec::total_backoff): where this is 0,
  // a policy row ran the same code as its no-policy row, and their ratio is the VM's noise.
  state.counters["delay_ns/txn"] =
      benchmark::Counter(absl::ToDoubleNanoseconds(delayed) / state.iterations(),
                         benchmark::Counter::kAvgThreads);
}

// Diagnostic: the locking alone (no Resv reservation or fence publication), to separate the
// ww-mutex/Exec cost from the Resv's in the ratios above.
template <ww::WwAlgorithm kAlgo>
void BM_ExecLockOnly(benchmark::State& state) {
  const int m = state.range(0);
  auto& pool = ResvPool<kAlgo>(m);
  ww::WwClass* cls = const_cast<ww::WwClass*>(pool[0]->r.lock().ww_class());
  std::mt19937 rng(state.thread_index() + 1);
  exec::BackoffPolicy policy;
  for (auto _ : state) {
    auto p = Pick(rng, m);
    exec::Object* objs[kLocksPerTxn];
    for (int i = 0; i < kLocksPerTxn; ++i) objs[i] = pool[p[i]].get();
    exec::Exec e(0, {}, cls, policy);
    absl::Status st = e.UntilAllLocked([&](exec::Exec& x) -> absl::Status {
      for (exec::Object* o : objs) {
        absl::Status s = x.LockObj(o);
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    });
    if (!st.ok()) state.SkipWithError("exec failed");
  }
}

struct AbslObject {
  absl::Mutex mu;
  std::vector<fence::FenceRef> fences ABSL_GUARDED_BY(mu);
};

// Locks a run-time set of mutexes in address order, adds the fence, unlocks. The thread-safety
// analysis cannot follow a loop over a variable number of locks, hence the opt-out.
void AddressOrderedTxn(std::array<AbslObject*, kLocksPerTxn>& objs, const fence::FenceRef& done)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  std::sort(objs.begin(), objs.end());
  for (AbslObject* o : objs) o->mu.Lock();
  for (AbslObject* o : objs) AddReplacingSameContext(o->fences, done);
  for (auto it = objs.rbegin(); it != objs.rend(); ++it) (*it)->mu.Unlock();
}

void BM_AddressOrdered(benchmark::State& state) {
  const int m = state.range(0);
  static auto* pools = new std::vector<AbslObject>[2]{std::vector<AbslObject>(8),
                                                      std::vector<AbslObject>(64)};
  auto& pool = pools[m == 8 ? 0 : 1];
  std::mt19937 rng(state.thread_index() + 1);
  fence::FenceContext timeline;
  for (auto _ : state) {
    auto p = Pick(rng, m);
    std::array<AbslObject*, kLocksPerTxn> objs;
    for (int i = 0; i < kLocksPerTxn; ++i) objs[i] = &pool[p[i]];
    fence::FenceRef done = timeline.NewFence();
    AddressOrderedTxn(objs, done);
    done->Signal();
  }
}

void AddressOrderedLockOnlyTxn(std::array<AbslObject*, kLocksPerTxn>& objs)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  std::sort(objs.begin(), objs.end());
  for (AbslObject* o : objs) o->mu.Lock();
  for (auto it = objs.rbegin(); it != objs.rend(); ++it) (*it)->mu.Unlock();
}

void BM_AddressOrderedLockOnly(benchmark::State& state) {
  const int m = state.range(0);
  static auto* pools = new std::vector<AbslObject>[2]{std::vector<AbslObject>(8),
                                                      std::vector<AbslObject>(64)};
  auto& pool = pools[m == 8 ? 0 : 1];
  std::mt19937 rng(state.thread_index() + 1);
  for (auto _ : state) {
    auto p = Pick(rng, m);
    std::array<AbslObject*, kLocksPerTxn> objs;
    for (int i = 0; i < kLocksPerTxn; ++i) objs[i] = &pool[p[i]];
    AddressOrderedLockOnlyTxn(objs);
  }
}

struct StdObject {
  std::mutex mu;
  std::vector<fence::FenceRef> fences;  // guarded by mu
};

void BM_ScopedLock(benchmark::State& state) {
  const int m = state.range(0);
  static auto* pools = new std::vector<StdObject>[2]{std::vector<StdObject>(8),
                                                     std::vector<StdObject>(64)};
  auto& pool = pools[m == 8 ? 0 : 1];
  std::mt19937 rng(state.thread_index() + 1);
  fence::FenceContext timeline;
  for (auto _ : state) {
    auto p = Pick(rng, m);
    StdObject* o[kLocksPerTxn];
    for (int i = 0; i < kLocksPerTxn; ++i) o[i] = &pool[p[i]];
    fence::FenceRef done = timeline.NewFence();
    {
      std::scoped_lock lock(o[0]->mu, o[1]->mu, o[2]->mu, o[3]->mu);
      for (StdObject* x : o) AddReplacingSameContext(x->fences, done);
    }
    done->Signal();
  }
}

constexpr auto kWaitDie = ww::WwAlgorithm::kWaitDie;
constexpr auto kWoundWait = ww::WwAlgorithm::kWoundWait;

void Configure(benchmark::internal::Benchmark* b) {
  b->Arg(8)->Arg(64)->Threads(2)->Threads(4)->Threads(16)->UseRealTime();
}

constexpr bool kWithDelays = true;

BENCHMARK_TEMPLATE(BM_Exec, kWaitDie, true)->Apply(Configure);
BENCHMARK_TEMPLATE(BM_Exec, kWoundWait, true)->Apply(Configure);
// Wait-Die's default policy has no delays, so BM_Exec<kWaitDie, true> is Wait-Die without
// back-off; its alternative is the policy with the delays on.
BENCHMARK_TEMPLATE(BM_Exec, kWaitDie, true, kWithDelays)->Apply(Configure);
BENCHMARK_TEMPLATE(BM_Exec, kWoundWait, false)->Apply(Configure);
BENCHMARK(BM_AddressOrdered)->Apply(Configure);
BENCHMARK(BM_ScopedLock)->Apply(Configure);
BENCHMARK_TEMPLATE(BM_ExecLockOnly, kWaitDie)->Apply(Configure);
BENCHMARK_TEMPLATE(BM_ExecLockOnly, kWoundWait)->Apply(Configure);
BENCHMARK(BM_AddressOrderedLockOnly)->Apply(Configure);

}  // namespace

int main(int argc, char** argv) {
  std::vector<udrm::bench::Comparison> cmp;
  std::vector<udrm::bench::Value> val;
  const std::string wd = "BM_Exec<kWaitDie, true>", ww = "BM_Exec<kWoundWait, true>",
                    wd_delays = "BM_Exec<kWaitDie, true, kWithDelays>",
                    ww_nb = "BM_Exec<kWoundWait, false>";
  for (int m : {8, 64}) {
    for (int t : {2, 4, 16}) {
      const std::string sfx = "/" + std::to_string(m) + "/real_time/threads:" + std::to_string(t);
      const std::string tag = "_m" + std::to_string(m) + "_t" + std::to_string(t);
      for (const auto& [name, bench] : {std::pair{"exec_waitdie", wd}, std::pair{"exec_woundwait", ww}}) {
        cmp.push_back({name + tag, bench + sfx, "address_ordered", "BM_AddressOrdered" + sfx});
        cmp.push_back({name + tag, bench + sfx, "scoped_lock", "BM_ScopedLock" + sfx});
        val.push_back({name + tag, bench + sfx});
      }
      // Wait-Die: the default (no delays) against the policy with delays (x > 1: default faster).
      cmp.push_back({"backoff_waitdie_default" + tag, wd + sfx, "with_delays", wd_delays + sfx});
      // Wound-Wait: the policy includes backing off instead of sleeping behind an older holder.
      cmp.push_back({"backoff_policy_woundwait" + tag, ww + sfx, "no_backoff", ww_nb + sfx});
      for (const auto& [name, bench] : {std::pair{"lockonly_waitdie", "BM_ExecLockOnly<kWaitDie>"},
                                        std::pair{"lockonly_woundwait", "BM_ExecLockOnly<kWoundWait>"}}) {
        cmp.push_back({name + tag, bench + sfx, "address_ordered_lockonly",
                       "BM_AddressOrderedLockOnly" + sfx});
      }
      val.push_back({"address_ordered" + tag, "BM_AddressOrdered" + sfx});
    }
  }
  return udrm::bench::RunAndReport(argc, argv, cmp, val);
}
