// sched_bench: job graphs through udrm's scheduler against, in the same run, oneTBB's flow graph
// and a std::thread + mutex/condvar job queue. Every job, on every side, creates a fence and
// signals it when done (the completion signalling a GPU job has); the backend's run_job is a
// no-op that completes at once, so the numbers are the scheduling machinery itself.
//   S1: N independent jobs through 1 entity, and through 8 entities.
//   S2: a chain of 10,000 jobs, each depending on the previous one's finished fence, alternating
//       over 4 entities (ns per hop).
//   S3: fan-out/fan-in 1 -> 1024 -> 1.
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bench/report.h"
#include "benchmark/benchmark.h"
#include "fence/fence_context.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "sched/tbb_executor.h"
#include "tbb/flow_graph.h"

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
// queued by the job that completes their last dependency. ----

class ThreadQueue {
 public:
  ThreadQueue() : worker_([this] { Loop(); }) {}
  ~ThreadQueue() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    worker_.join();
  }
  void Push(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(mu_);
      q_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
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
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  std::thread worker_;
};

void BM_Queue_S1(benchmark::State& state) {
  ThreadQueue q;
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
BENCHMARK(BM_Queue_S1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Queue_S2(benchmark::State& state) {
  ThreadQueue q;
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
BENCHMARK(BM_Queue_S2)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Queue_S3(benchmark::State& state) {
  ThreadQueue q;
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
BENCHMARK(BM_Queue_S3)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  using udrm::bench::Comparison;
  using udrm::bench::Value;
  std::vector<Comparison> cmp = {
      {"s1_1_entity", "BM_Udrm_S1/1/real_time", "tbb_flow_graph", "BM_Tbb_S1/1/real_time"},
      {"s1_1_entity", "BM_Udrm_S1/1/real_time", "thread_queue", "BM_Queue_S1/real_time"},
      {"s1_8_entities", "BM_Udrm_S1/8/real_time", "tbb_flow_graph", "BM_Tbb_S1/8/real_time"},
      {"s1_8_entities", "BM_Udrm_S1/8/real_time", "thread_queue", "BM_Queue_S1/real_time"},
      {"s1_1_entity_tbb_executor", "BM_UdrmTbbExecutor_S1/real_time", "tbb_flow_graph",
       "BM_Tbb_S1/1/real_time"},
      {"s2_chain", "BM_Udrm_S2/0/real_time", "tbb_flow_graph", "BM_Tbb_S2/real_time"},
      {"s2_chain", "BM_Udrm_S2/0/real_time", "thread_queue", "BM_Queue_S2/real_time"},
      {"s2_chain_fifo_policy", "BM_Udrm_S2/1/real_time", "tbb_flow_graph", "BM_Tbb_S2/real_time"},
      {"s2_chain_fair", "BM_Udrm_S2/0/real_time", "fifo_policy", "BM_Udrm_S2/1/real_time"},
      {"s3_fan_out_in", "BM_Udrm_S3/real_time", "tbb_flow_graph", "BM_Tbb_S3/real_time"},
      {"s3_fan_out_in", "BM_Udrm_S3/real_time", "thread_queue", "BM_Queue_S3/real_time"},
  };
  std::vector<Value> val = {
      {"s1_per_job_1_entity", "BM_Udrm_S1/1/real_time", 1.0 / kS1Jobs},
      {"s1_per_job_8_entities", "BM_Udrm_S1/8/real_time", 1.0 / kS1Jobs},
      {"s1_jobs_per_s_1_entity", "BM_Udrm_S1/1/real_time", 1, "jobs/s", double(kS1Jobs)},
      {"s2_per_hop", "BM_Udrm_S2/0/real_time", 1.0 / kS2Jobs},
      {"s2_per_hop_fifo_policy", "BM_Udrm_S2/1/real_time", 1.0 / kS2Jobs},
      {"s2_per_hop_tbb_flow_graph", "BM_Tbb_S2/real_time", 1.0 / kS2Jobs},
      {"s3_per_job", "BM_Udrm_S3/real_time", 1.0 / (kFan + 2)},
  };
  return udrm::bench::RunAndReport(argc, argv, cmp, val);
}
