// sched_bench: job graphs through udrm's scheduler against, in the same run, oneTBB's flow graph
// and a std::thread + mutex/condvar job queue in two forms: per job (the worker takes the lock
// once per job, the producer notifies on every push) and batched (the worker takes everything
// queued in one lock hold per wake-up and runs it unlocked; a producer notifies only when the
// worker sleeps) — the stronger peer a careful engineer writes. Every job, on every side, creates
// a fence and signals it when done (the completion signalling a GPU job has); the backend's
// run_job is a no-op that completes at once, so the numbers are the scheduling machinery itself.
//   S1: N independent jobs through 1 entity, and through 8 entities.
//   S2: a chain of 10,000 jobs, each depending on the previous one's finished fence, alternating
//       over 4 entities (ns per hop).
//   S3: fan-out/fan-in 1 -> 1024 -> 1.
// Memory (VALUE lines, not timed): bytes a job and fences hold, counted by this binary's
// replacement of the global operator new / delete (the allocator's usable size of each block,
// malloc_usable_size), not sizeof.
#include <malloc.h>

#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/report.h"
#include "benchmark/benchmark.h"
#include "fence/fence_context.h"
#include "sched/entity.h"
#include "sched/internal/test_hooks.h"
#include "sched/job.h"
#include "sched/sched_fence.h"
#include "sched/scheduler.h"
#include "sched/tbb_executor.h"
#include "tbb/flow_graph.h"

// ---- the allocator's bytes, per thread, inside a CountBytes scope ----
// Replaces the global operator new(size_t) and operator delete(void*) (defined in this
// executable, so they win over the C++ runtime's) and the sized delete; the runtime's array and
// nothrow forms call these. Over-aligned allocations are not counted (nothing in sched/ or fence/ is
// over-aligned). Outside a scope a call costs one thread-local load.
namespace alloc_bytes {
thread_local bool counting = false;
thread_local long long allocated = 0;  // usable bytes of blocks allocated while counting
thread_local long long freed = 0;      // usable bytes of blocks freed while counting

// Net bytes this thread's allocations made in the scope (allocated minus freed). Not nestable.
class CountBytes {
 public:
  CountBytes() : a_(allocated), f_(freed) { counting = true; }
  ~CountBytes() { counting = false; }
  long long net() const { return (allocated - a_) - (freed - f_); }

 private:
  long long a_, f_;
};
}  // namespace alloc_bytes

void* operator new(std::size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  if (alloc_bytes::counting) alloc_bytes::allocated += malloc_usable_size(p);
  return p;
}
void operator delete(void* p) noexcept {
  if (p != nullptr && alloc_bytes::counting) alloc_bytes::freed += malloc_usable_size(p);
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept { ::operator delete(p); }

namespace alloc_bytes {
// Jobs and fence pairs come from oneTBB's scalable allocator (sched/internal/job_memory.h), which
// reports its blocks' usable sizes through this hook (installed by MeasureMemory).
void CountJobMemory(long long bytes) {
  if (!counting) return;
  if (bytes > 0) {
    allocated += bytes;
  } else {
    freed -= bytes;
  }
}
}  // namespace alloc_bytes

namespace {

constexpr int kS1Jobs = 10000;
constexpr int kS2Jobs = 10000;
constexpr int kFan = 1024;

// ---- udrm ----

class NoopBackend : public sched::Backend {
 public:
  absl::StatusOr<fence::FenceRef> RunJob(sched::Job&) override { return fence::FenceRef(nullptr); }
};

struct Udrm {
  NoopBackend backend;
  std::unique_ptr<sched::Scheduler> sched;
  std::vector<std::unique_ptr<sched::Entity>> entities;
  explicit Udrm(int n, sched::Policy policy = sched::Policy::kFair,
                sched::Executor* executor = nullptr)
      : sched(*sched::Scheduler::Create(&backend, {.policy = policy, .executor = executor})) {
    for (int i = 0; i < n; ++i) entities.push_back(*sched::Entity::Create({sched.get()}));
  }
  fence::FenceRef Submit(int entity, const std::vector<fence::FenceRef>& deps = {}) {
    auto job = std::make_unique<sched::Job>();
    (void)job->Init(entities[entity].get(), 1);
    for (const auto& d : deps) (void)job->AddDependency(d);
    return entities[entity]->Submit(std::move(job));
  }
};

void BM_Udrm_S1(benchmark::State& state) {
  const int n_entities = state.range(0);
  Udrm u(n_entities);
  for (auto _ : state) {
    std::vector<fence::FenceRef> done;
    done.reserve(kS1Jobs);
    for (int i = 0; i < kS1Jobs; ++i) done.push_back(u.Submit(i % n_entities));
    for (auto& f : done) (void)f->Wait();
  }
  state.SetItemsProcessed(state.iterations() * kS1Jobs);
}
BENCHMARK(BM_Udrm_S1)->Arg(1)->Arg(8)->UseRealTime()->Unit(benchmark::kMillisecond);

// S1 through one entity with the scheduler's work on a shared oneTBB executor (2 threads).
void BM_UdrmTbbExecutor_S1(benchmark::State& state) {
  static sched::TbbExecutor* executor = new sched::TbbExecutor(2);
  Udrm u(1, sched::Policy::kFair, executor);
  for (auto _ : state) {
    std::vector<fence::FenceRef> done;
    done.reserve(kS1Jobs);
    for (int i = 0; i < kS1Jobs; ++i) done.push_back(u.Submit(0));
    for (auto& f : done) (void)f->Wait();
  }
  state.SetItemsProcessed(state.iterations() * kS1Jobs);
}
BENCHMARK(BM_UdrmTbbExecutor_S1)->UseRealTime()->Unit(benchmark::kMillisecond);

// Arg: 0 the default fair policy, 1 FIFO (the same graph; the policies order the 4 entities
// differently, and a chain pays for running in an order other than its own).
void BM_Udrm_S2(benchmark::State& state) {
  Udrm u(4, state.range(0) == 0 ? sched::Policy::kFair : sched::Policy::kFifo);
  for (auto _ : state) {
    fence::FenceRef prev;
    for (int i = 0; i < kS2Jobs; ++i) prev = u.Submit(i % 4, {prev});
    (void)prev->Wait();
  }
  state.SetItemsProcessed(state.iterations() * kS2Jobs);
}
BENCHMARK(BM_Udrm_S2)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Udrm_S3(benchmark::State& state) {
  Udrm u(8);
  for (auto _ : state) {
    fence::FenceRef root = u.Submit(0);
    std::vector<fence::FenceRef> mid;
    for (int i = 0; i < kFan; ++i) mid.push_back(u.Submit(i % 8, {root}));
    (void)u.Submit(0, mid)->Wait();
  }
  state.SetItemsProcessed(state.iterations() * (kFan + 2));
}
BENCHMARK(BM_Udrm_S3)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- oneTBB flow graph: the same graphs, each node creating and signalling a fence. ----

void SignalNewFence(fence::FenceContext& tl) { tl.NewFence()->Signal(); }

void BM_Tbb_S1(benchmark::State& state) {
  const int n_queues = state.range(0);
  fence::FenceContext tl;
  for (auto _ : state) {
    tbb::flow::graph g;
    std::vector<std::unique_ptr<tbb::flow::function_node<int>>> queues;  // serial, like entities
    for (int q = 0; q < n_queues; ++q) {
      queues.push_back(std::make_unique<tbb::flow::function_node<int>>(
          g, tbb::flow::serial, [&tl](int) { SignalNewFence(tl); }));
    }
    for (int i = 0; i < kS1Jobs; ++i) queues[i % n_queues]->try_put(i);
    g.wait_for_all();
  }
  state.SetItemsProcessed(state.iterations() * kS1Jobs);
}
BENCHMARK(BM_Tbb_S1)->Arg(1)->Arg(8)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Tbb_S2(benchmark::State& state) {
  fence::FenceContext tl;
  for (auto _ : state) {
    tbb::flow::graph g;
    std::vector<std::unique_ptr<tbb::flow::continue_node<tbb::flow::continue_msg>>> nodes;
    nodes.reserve(kS2Jobs);
    for (int i = 0; i < kS2Jobs; ++i) {
      nodes.push_back(std::make_unique<tbb::flow::continue_node<tbb::flow::continue_msg>>(
          g, [&tl](const tbb::flow::continue_msg&) { SignalNewFence(tl); }));
      if (i > 0) tbb::flow::make_edge(*nodes[i - 1], *nodes[i]);
    }
    nodes[0]->try_put(tbb::flow::continue_msg());
    g.wait_for_all();
  }
  state.SetItemsProcessed(state.iterations() * kS2Jobs);
}
BENCHMARK(BM_Tbb_S2)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Tbb_S3(benchmark::State& state) {
  fence::FenceContext tl;
  using Node = tbb::flow::continue_node<tbb::flow::continue_msg>;
  for (auto _ : state) {
    tbb::flow::graph g;
    auto body = [&tl](const tbb::flow::continue_msg&) { SignalNewFence(tl); };
    Node root(g, body), sink(g, body);
    std::vector<std::unique_ptr<Node>> mid;
    for (int i = 0; i < kFan; ++i) {
      mid.push_back(std::make_unique<Node>(g, body));
      tbb::flow::make_edge(root, *mid.back());
      tbb::flow::make_edge(*mid.back(), sink);
    }
    root.try_put(tbb::flow::continue_msg());
    g.wait_for_all();
  }
  state.SetItemsProcessed(state.iterations() * (kFan + 2));
}
BENCHMARK(BM_Tbb_S3)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- std::thread + mutex/condvar queue: one worker runs jobs in order; a job's successors are
// queued by the job that completes their last dependency. Two forms:
//   kPerJob:  the worker takes the lock once per job; every push notifies.
//   kBatched: the worker takes everything queued in one lock hold per wake-up and runs it with
//             the lock released; a push notifies only if the worker sleeps (pushes that arrive
//             while it runs a batch wake nobody and make the next batch). ----

enum class QueueForm { kPerJob, kBatched };

class ThreadQueue {
 public:
  explicit ThreadQueue(QueueForm form) : form_(form), worker_([this] { Loop(); }) {}
  ~ThreadQueue() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    worker_.join();
  }
  void Push(std::function<void()> fn) {
    bool wake = true;
    {
      std::lock_guard<std::mutex> l(mu_);
      q_.push_back(std::move(fn));
      if (form_ == QueueForm::kBatched) wake = sleeping_;
    }
    if (wake) cv_.notify_one();
  }

 private:
  void Loop() {
    if (form_ == QueueForm::kBatched) return LoopBatched();
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        fn = std::move(q_.front());
        q_.pop_front();
      }
      fn();
    }
  }
  void LoopBatched() {
    std::deque<std::function<void()>> batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        sleeping_ = true;
        cv_.wait(l, [this] { return stop_ || !q_.empty(); });
        sleeping_ = false;
        if (q_.empty()) return;
        batch.swap(q_);  // both keep their blocks: no allocation per batch in steady state
      }
      for (auto& fn : batch) fn();
      batch.clear();
    }
  }
  const QueueForm form_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  bool sleeping_ = false;  // kBatched: the worker waits (or is about to) on cv_
  std::thread worker_;
};

// Arg: 0 per job, 1 batched (QueueForm).
void BM_Queue_S1(benchmark::State& state) {
  ThreadQueue q(static_cast<QueueForm>(state.range(0)));
  fence::FenceContext tl;
  for (auto _ : state) {
    std::vector<fence::FenceRef> done;
    done.reserve(kS1Jobs);
    for (int i = 0; i < kS1Jobs; ++i) {
      done.push_back(tl.NewFence());
      q.Push([f = done.back()] { f->Signal(); });
    }
    for (auto& f : done) (void)f->Wait();
  }
  state.SetItemsProcessed(state.iterations() * kS1Jobs);
}
BENCHMARK(BM_Queue_S1)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Queue_S2(benchmark::State& state) {
  ThreadQueue q(static_cast<QueueForm>(state.range(0)));
  fence::FenceContext tl;
  for (auto _ : state) {
    fence::FenceRef last = tl.NewFence();
    std::function<void(int)> step = [&](int i) {
      if (i + 1 == kS2Jobs) {
        last->Signal();
        return;
      }
      tl.NewFence()->Signal();
      q.Push([&step, i] { step(i + 1); });  // the next job becomes ready
    };
    q.Push([&step] { step(0); });
    (void)last->Wait();
  }
  state.SetItemsProcessed(state.iterations() * kS2Jobs);
}
BENCHMARK(BM_Queue_S2)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Queue_S3(benchmark::State& state) {
  ThreadQueue q(static_cast<QueueForm>(state.range(0)));
  fence::FenceContext tl;
  for (auto _ : state) {
    fence::FenceRef sink = tl.NewFence();
    int remaining = kFan;  // only the worker touches it
    q.Push([&] {
      tl.NewFence()->Signal();  // root
      for (int i = 0; i < kFan; ++i) {
        q.Push([&] {
          tl.NewFence()->Signal();
          if (--remaining == 0) q.Push([&] { sink->Signal(); });
        });
      }
    });
    (void)sink->Wait();
  }
  state.SetItemsProcessed(state.iterations() * (kFan + 2));
}
BENCHMARK(BM_Queue_S3)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// The memory a job holds from Init to its end, and a fence's, measured from the allocator: net
// usable bytes that this thread allocated in the scope. The job is the entity's 65th (the
// entity's one-time allocations are behind it) and is measured while armed, before Push.
struct MemoryValues {
  long long job_bytes = 0;         // new Job + Init + Arm (the job, its fence pair, anything else)
  long long fence_pair_bytes = 0;  // a job's scheduled + finished fences (one allocation)
  long long bare_fence_bytes = 0;  // FenceContext::NewFence
};

MemoryValues MeasureMemory() {
  MemoryValues m;
  sched::internal::job_memory_hook.store(&alloc_bytes::CountJobMemory);
  Udrm u(1);
  for (int i = 0; i < 64; ++i) (void)u.Submit(0)->Wait();
  {
    std::unique_ptr<sched::Job> job;
    std::optional<sched::ArmedJob> armed;
    {
      alloc_bytes::CountBytes c;
      job = std::make_unique<sched::Job>();
      (void)job->Init(u.entities[0].get(), 1);
      armed.emplace(sched::Job::Arm(std::move(job)));
      m.job_bytes = c.net();
    }
    fence::FenceRef finished = armed->finished();
    std::move(*armed).Push();
    (void)finished->Wait();
  }
  {
    sched::FinishedFence::Pair pair;
    alloc_bytes::CountBytes c;
    pair = sched::FinishedFence::CreatePair(fence::FenceContext::Allocate(), 1, nullptr, false);
    m.fence_pair_bytes = c.net();
  }
  {
    fence::FenceContext tl;
    fence::FenceRef f;
    alloc_bytes::CountBytes c;
    f = tl.NewFence();
    m.bare_fence_bytes = c.net();
  }
  sched::internal::job_memory_hook.store(nullptr);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  using udrm::bench::Comparison;
  using udrm::bench::Value;
  const MemoryValues mem = MeasureMemory();
  // Every udrm scenario against the flow graph and both queue forms (the batched one is the
  // stronger peer; per job is kept for comparison with earlier runs).
  struct Scenario {
    const char* metric;
    const char* udrm;
    const char* tbb;
    const char* queue;  // without the form's "/0" or "/1"
  };
  const Scenario scenarios[] = {
      {"s1_1_entity", "BM_Udrm_S1/1/real_time", "BM_Tbb_S1/1/real_time", "BM_Queue_S1"},
      {"s1_8_entities", "BM_Udrm_S1/8/real_time", "BM_Tbb_S1/8/real_time", "BM_Queue_S1"},
      {"s1_1_entity_tbb_executor", "BM_UdrmTbbExecutor_S1/real_time", "BM_Tbb_S1/1/real_time",
       "BM_Queue_S1"},
      {"s2_chain", "BM_Udrm_S2/0/real_time", "BM_Tbb_S2/real_time", "BM_Queue_S2"},
      {"s2_chain_fifo_policy", "BM_Udrm_S2/1/real_time", "BM_Tbb_S2/real_time", "BM_Queue_S2"},
      {"s3_fan_out_in", "BM_Udrm_S3/real_time", "BM_Tbb_S3/real_time", "BM_Queue_S3"},
  };
  std::vector<Comparison> cmp;
  for (const Scenario& sc : scenarios) {
    cmp.push_back({sc.metric, sc.udrm, "tbb_flow_graph", sc.tbb});
    cmp.push_back({sc.metric, sc.udrm, "thread_queue", std::string(sc.queue) + "/0/real_time"});
    cmp.push_back(
        {sc.metric, sc.udrm, "thread_queue_batched", std::string(sc.queue) + "/1/real_time"});
  }
  cmp.push_back({"s2_chain_fair", "BM_Udrm_S2/0/real_time", "fifo_policy", "BM_Udrm_S2/1/real_time"});
  std::vector<Value> val = {
      {"s1_per_job_1_entity", "BM_Udrm_S1/1/real_time", 1.0 / kS1Jobs},
      {"s1_per_job_8_entities", "BM_Udrm_S1/8/real_time", 1.0 / kS1Jobs},
      {"s1_jobs_per_s_1_entity", "BM_Udrm_S1/1/real_time", 1, "jobs/s", double(kS1Jobs)},
      {"s1_jobs_per_s_thread_queue", "BM_Queue_S1/0/real_time", 1, "jobs/s", double(kS1Jobs)},
      {"s1_jobs_per_s_thread_queue_batched", "BM_Queue_S1/1/real_time", 1, "jobs/s",
       double(kS1Jobs)},
      {"s2_per_hop", "BM_Udrm_S2/0/real_time", 1.0 / kS2Jobs},
      {"s2_per_hop_fifo_policy", "BM_Udrm_S2/1/real_time", 1.0 / kS2Jobs},
      {"s2_per_hop_tbb_flow_graph", "BM_Tbb_S2/real_time", 1.0 / kS2Jobs},
      {"s3_per_job", "BM_Udrm_S3/real_time", 1.0 / (kFan + 2)},
  };
  const int rc = udrm::bench::RunAndReport(argc, argv, cmp, val);
  // In bench/report.h's VALUE format; not timings, so printed here (allocator usable bytes).
  std::printf("VALUE job_bytes %lld B\n", mem.job_bytes);
  std::printf("VALUE fence_bytes %lld B\n", mem.fence_pair_bytes);
  std::printf("VALUE bare_fence_bytes %lld B\n", mem.bare_fence_bytes);
  std::fflush(stdout);
  return rc;
}
