// sched/: ports of drm_sched KUnit tests_basic.c scenarios on a timeline that moves only on
// Advance(n) (basic submit, queue/chain variants, parallel submit, credits, cancel), one test per
// rule of dependency resolution, error propagation and the job contract, and deadline forwarding.
// The scenarios that need jobs with durations are in sched_catalogue_test.cc.
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "sched/entity.h"
#include "sched/sched_fence.h"
#include "sched/scheduler.h"
#include "tests/sched/mock_backend.h"
#include "tests/sched/sched_test_util.h"

namespace sched {
namespace {

using testing::MockBackend;
using testing::MockJob;

using testing::SignalsWithin;

class SchedTest : public ::testing::Test {
 protected:
  void SetUp() override { sched_ = *Scheduler::Create(&mock_, testing::Opts()); }
  void TearDown() override {
    entities_.clear();
    sched_.reset();
    EXPECT_EQ(MockJob::live.load(), 0) << "jobs leaked";
  }
  Entity* NewEntity(Scheduler* s = nullptr) {
    entities_.push_back(*Entity::Create({s != nullptr ? s : sched_.get()}));
    return entities_.back().get();
  }
  // Init + Arm + Push one mock job; returns its (scheduled, finished) fences.
  std::pair<fence::FenceRef, fence::FenceRef> Submit(Entity* e, std::vector<fence::FenceRef> deps = {},
                                                     uint32_t credits = 1, bool dont_pipeline = false) {
    auto job = std::make_unique<MockJob>();
    EXPECT_TRUE(job->Init(e, credits).ok());
    for (auto& d : deps) EXPECT_TRUE(job->AddDependency(d).ok());
    if (dont_pipeline) job->SetDontPipeline();
    ArmedJob armed = Job::Arm(std::move(job));
    auto fences = std::make_pair(armed.scheduled(), armed.finished());
    std::move(armed).Push();
    return fences;
  }

  MockBackend mock_;
  std::unique_ptr<Scheduler> sched_;
  std::vector<std::unique_ptr<Entity>> entities_;
};

// upstream: drm_sched_basic_submit — scheduled within 1 s, not finished before Advance,
// Advance(1) == 1, then finished.
TEST_F(SchedTest, DrmSchedBasicSubmit) {
  auto [scheduled, finished] = Submit(NewEntity());
  EXPECT_TRUE(SignalsWithin(scheduled, absl::Seconds(10)));
  EXPECT_FALSE(SignalsWithin(finished, absl::Milliseconds(100)));
  EXPECT_EQ(mock_.Advance(1), 1);
  EXPECT_TRUE(SignalsWithin(finished, absl::Seconds(10)));
  EXPECT_TRUE(finished->error().ok());
}

// upstream: drm_sched_basic_test "A queue of jobs in a single entity" — run in push order, with
// consecutive seqnos on the entity's contexts.
TEST_F(SchedTest, QueueInSingleEntity) {
  Entity* e = NewEntity();
  std::vector<fence::FenceRef> finished;
  for (int i = 0; i < 100; ++i) finished.push_back(Submit(e).second);
  while (mock_.run_order().size() < 100) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(mock_.Advance(100), 100);
  ASSERT_TRUE(SignalsWithin(finished.back(), absl::Seconds(5)));
  EXPECT_EQ(mock_.run_order(), finished);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(finished[i]->context(), e->fence_context() + 1);
    EXPECT_EQ(finished[i]->seqno(), static_cast<uint64_t>(i + 1));
  }
}

// upstream: drm_sched_basic_test "Multiple inter-dependent job queues" — each job depends on the
// previous job's finished fence on another entity of the same scheduler: pipelined, so every
// job reaches the backend before any has finished.
TEST_F(SchedTest, ChainAcrossEntitiesIsPipelined) {
  std::vector<Entity*> es;
  for (int i = 0; i < 4; ++i) es.push_back(NewEntity());
  std::vector<fence::FenceRef> finished;
  fence::FenceRef prev;
  for (int i = 0; i < 100; ++i) {
    prev = Submit(es[i % 4], {prev}).second;
    finished.push_back(prev);
  }
  while (mock_.run_order().size() < 100) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_FALSE(finished.front()->IsSignaled());
  EXPECT_EQ(mock_.run_order(), finished);  // dependencies keep the chain's order
  EXPECT_EQ(mock_.Advance(100), 100);
  EXPECT_TRUE(SignalsWithin(finished.back(), absl::Seconds(5)));
}

// upstream: drm_sched_basic_test "Multiple independent job queues" — 4 entities, all complete.
TEST_F(SchedTest, IndependentQueues) {
  std::vector<Entity*> es;
  for (int i = 0; i < 4; ++i) es.push_back(NewEntity());
  std::vector<fence::FenceRef> finished;
  for (int i = 0; i < 100; ++i) finished.push_back(Submit(es[i % 4]).second);
  int done = 0;
  while (done < 100) done += mock_.Advance(1);
  for (auto& f : finished) EXPECT_TRUE(SignalsWithin(f, absl::Seconds(5)));
}

// Rule: a dependency on a job of another scheduler waits for its finished fence.
TEST_F(SchedTest, CrossSchedulerDependencyWaitsForFinished) {
  MockBackend other;
  auto other_sched = *Scheduler::Create(&other, testing::Opts());
  Entity* a = NewEntity(other_sched.get());
  auto [a_sched, a_fin] = Submit(a);
  auto [b_sched, b_fin] = Submit(NewEntity(), {a_fin});
  ASSERT_TRUE(SignalsWithin(a_sched, absl::Seconds(10)));
  EXPECT_FALSE(SignalsWithin(b_sched, absl::Milliseconds(100)));
  EXPECT_EQ(other.Advance(1), 1);
  EXPECT_TRUE(SignalsWithin(b_sched, absl::Seconds(10)));
  EXPECT_EQ(mock_.Advance(1), 1);
  EXPECT_TRUE(SignalsWithin(b_fin, absl::Seconds(10)));
  entities_.clear();
}

// Rule: DONT_PIPELINE makes a same-scheduler dependant wait for the finished fence.
TEST_F(SchedTest, DontPipelineWaitsForFinished) {
  auto [a_sched, a_fin] = Submit(NewEntity(), {}, 1, /*dont_pipeline=*/true);
  auto [b_sched, b_fin] = Submit(NewEntity(), {a_fin});
  ASSERT_TRUE(SignalsWithin(a_sched, absl::Seconds(10)));
  EXPECT_FALSE(SignalsWithin(b_sched, absl::Milliseconds(100)));
  EXPECT_EQ(mock_.Advance(1), 1);
  EXPECT_TRUE(SignalsWithin(b_sched, absl::Seconds(10)));
  EXPECT_EQ(mock_.Advance(1), 1);
}

// Rule: a dependency on the same entity is ignored; an external fence is waited for.
TEST_F(SchedTest, SameEntityIgnoredExternalWaited) {
  Entity* e = NewEntity();
  fence::FenceContext external;
  fence::FenceRef gate = external.NewFence();
  auto [s1, f1] = Submit(e);
  auto [s2, f2] = Submit(e, {f1, gate});
  ASSERT_TRUE(SignalsWithin(s1, absl::Seconds(10)));
  EXPECT_FALSE(SignalsWithin(s2, absl::Milliseconds(100)));  // waits for the gate only
  gate->Signal();
  EXPECT_TRUE(SignalsWithin(s2, absl::Seconds(10)));
  EXPECT_FALSE(f1->IsSignaled());  // f1 was not waited for (same entity)
  EXPECT_EQ(mock_.Advance(2), 2);
}

// Rule: AddDependency keeps only the later fence per context, and null is a no-op.
TEST_F(SchedTest, AddDependencyKeepsLaterPerContext) {
  fence::FenceContext tl;
  fence::FenceRef f1 = tl.NewFence(), f2 = tl.NewFence();
  MockJob job;
  ASSERT_TRUE(job.Init(NewEntity(), 1).ok());
  ASSERT_TRUE(job.AddDependency(f2).ok());
  ASSERT_TRUE(job.AddDependency(f1).ok());
  ASSERT_TRUE(job.AddDependency(nullptr).ok());
  ASSERT_EQ(job.dependencies().size(), 1u);
  EXPECT_EQ(job.dependencies()[0], f2);
}

// Errors travel on the finished fence: hardware error, run_job error, run_job null (success).
TEST_F(SchedTest, ErrorPropagation) {
  Entity* e = NewEntity();
  auto [s1, f1] = Submit(e);
  ASSERT_TRUE(SignalsWithin(s1, absl::Seconds(10)));
  mock_.FailOldest(absl::DataLossError("EIO"));
  ASSERT_TRUE(SignalsWithin(f1, absl::Seconds(10)));
  EXPECT_EQ(f1->error(), absl::DataLossError("EIO"));
  mock_.SetRunError(absl::ResourceExhaustedError("ENOMEM"));
  auto f2 = Submit(e).second;
  ASSERT_TRUE(SignalsWithin(f2, absl::Seconds(10)));
  EXPECT_TRUE(absl::IsResourceExhausted(f2->error()));
  mock_.SetRunError(absl::OkStatus());
  mock_.SetReturnNull(true);
  auto f3 = Submit(e).second;
  ASSERT_TRUE(SignalsWithin(f3, absl::Seconds(10)));
  EXPECT_TRUE(f3->error().ok());
  mock_.SetReturnNull(false);
}

// Rule: a failed dependency on the same scheduler is waited for in full (not pipelined).
TEST_F(SchedTest, FailedSameSchedulerDependencyIsNotPipelined) {
  auto [a_sched, a_fin] = Submit(NewEntity());
  ASSERT_TRUE(SignalsWithin(a_sched, absl::Seconds(10)));
  mock_.FailOldest(absl::DataLossError("EIO"));
  ASSERT_TRUE(SignalsWithin(a_fin, absl::Seconds(10)));
  auto [b_sched, b_fin] = Submit(NewEntity(), {a_fin});
  EXPECT_TRUE(SignalsWithin(b_sched, absl::Seconds(10)));
  EXPECT_EQ(mock_.Advance(1), 1);
}

// upstream: drm_sched_test_credits — limit 1, two jobs: the second waits for the first's credits.
TEST(SchedCredits, DrmSchedTestCredits) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 1;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  {
    auto e = *Entity::Create({s.get()});
    auto j0 = std::make_unique<MockJob>(), j1 = std::make_unique<MockJob>();
    ASSERT_TRUE(j0->Init(e.get(), 1).ok());
    ASSERT_TRUE(j1->Init(e.get(), 1).ok());
    ArmedJob a0 = Job::Arm(std::move(j0));
    fence::FenceRef s0 = a0.scheduled();
    std::move(a0).Push();
    ArmedJob a1 = Job::Arm(std::move(j1));
    fence::FenceRef s1 = a1.scheduled(), f1 = a1.finished();
    std::move(a1).Push();
    EXPECT_TRUE(SignalsWithin(s0, absl::Seconds(10)));
    EXPECT_FALSE(SignalsWithin(s1, absl::Milliseconds(200)));
    EXPECT_EQ(s->credit_count(), 1u);
    EXPECT_EQ(mock.Advance(1), 1);
    EXPECT_TRUE(SignalsWithin(s1, absl::Seconds(10)));
    EXPECT_EQ(mock.Advance(1), 1);
    EXPECT_TRUE(SignalsWithin(f1, absl::Seconds(10)));
  }
  s.reset();
  EXPECT_EQ(MockJob::live.load(), 0);
}

// Rule: a job asking for more credits than the limit is truncated to the limit and runs.
TEST(SchedCredits, OversizedJobIsTruncated) {
  MockBackend mock;
  SchedulerOptions opts;
  opts.credit_limit = 4;
  auto s = *Scheduler::Create(&mock, testing::Opts(opts));
  {
    auto e = *Entity::Create({s.get()});
    auto job = std::make_unique<MockJob>();
    ASSERT_TRUE(job->Init(e.get(), 100).ok());
    fence::FenceRef f = e->Submit(std::move(job));
    while (mock.run_order().empty()) absl::SleepFor(absl::Milliseconds(1));
    EXPECT_EQ(s->credit_count(), 4u);
    EXPECT_EQ(mock.Advance(1), 1);
    EXPECT_TRUE(SignalsWithin(f, absl::Seconds(10)));
  }
  s.reset();
}

// upstream: drm_sched_basic_cancel — tearing the scheduler down with a job on the hardware
// cancels it through CancelJob (ECANCELED on the hardware fence, hence on finished) and frees it.
TEST(SchedCancel, DrmSchedBasicCancel) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  fence::FenceRef finished;
  {
    auto e = *Entity::Create({s.get()});
    auto job = std::make_unique<MockJob>();
    ASSERT_TRUE(job->Init(e.get(), 1).ok());
    ArmedJob armed = Job::Arm(std::move(job));
    fence::FenceRef scheduled = armed.scheduled();
    finished = armed.finished();
    std::move(armed).Push();
    ASSERT_TRUE(SignalsWithin(scheduled, absl::Seconds(10)));
  }
  s.reset();
  ASSERT_TRUE(finished->IsSignaledFlag());
  EXPECT_TRUE(absl::IsCancelled(finished->error()));
  EXPECT_EQ(mock.freed(), 1);
  EXPECT_EQ(MockJob::live.load(), 0);
}

// upstream: drm_sched_parallel_submit_test — 16 submitters x 8 jobs released together: all are
// scheduled, Advance(128) completes them all, and each entity's seqnos follow its run order.
TEST(SchedConcurrent, DrmSchedParallelSubmitTest) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  constexpr int kWorkers = 16, kJobs = 8;
  std::vector<std::unique_ptr<Entity>> entities;
  for (int i = 0; i < kWorkers; ++i) entities.push_back(*Entity::Create({s.get()}));
  std::vector<std::vector<fence::FenceRef>> scheduled(kWorkers), finished(kWorkers);
  absl::Notification go;
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    std::vector<std::unique_ptr<MockJob>> jobs;
    for (int j = 0; j < kJobs; ++j) {
      jobs.push_back(std::make_unique<MockJob>());
      ASSERT_TRUE(jobs.back()->Init(entities[w].get(), 1).ok());
    }
    workers.emplace_back([&, w, jobs = std::move(jobs)]() mutable {
      go.WaitForNotification();
      for (auto& job : jobs) {
        ArmedJob armed = Job::Arm(std::move(job));
        scheduled[w].push_back(armed.scheduled());
        finished[w].push_back(armed.finished());
        std::move(armed).Push();
      }
    });
  }
  go.Notify();
  for (auto& t : workers) t.join();
  for (int w = 0; w < kWorkers; ++w) {
    for (auto& f : scheduled[w]) EXPECT_TRUE(SignalsWithin(f, absl::Seconds(10)));
  }
  EXPECT_EQ(mock.Advance(kWorkers * kJobs), kWorkers * kJobs);
  for (int w = 0; w < kWorkers; ++w) {
    for (auto& f : finished[w]) EXPECT_TRUE(SignalsWithin(f, absl::Seconds(10)));
  }
  entities.clear();
  s.reset();
  EXPECT_EQ(MockJob::live.load(), 0);
}

// Rule: arm and push of one entity are atomic, so concurrent pushers to one entity still give
// seqno order == run order.
TEST(SchedConcurrent, ConcurrentPushersKeepSeqnoOrder) {
  MockBackend mock;
  auto s = *Scheduler::Create(&mock, testing::Opts());
  auto e = *Entity::Create({s.get()});
  std::vector<std::thread> pushers;
  for (int t = 0; t < 4; ++t) {
    pushers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto job = std::make_unique<MockJob>();
        ASSERT_TRUE(job->Init(e.get(), 1).ok());
        e->Submit(std::move(job));
      }
    });
  }
  for (auto& t : pushers) t.join();
  while (mock.run_order().size() < 200) absl::SleepFor(absl::Milliseconds(1));
  auto order = mock.run_order();
  for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(order[i]->seqno(), i + 1);
  EXPECT_EQ(mock.Advance(200), 200);
  e.reset();
  s.reset();
  EXPECT_EQ(MockJob::live.load(), 0);
}

// Bad input: InvalidArgument, nothing created.
TEST(SchedBadInput, Rejected) {
  EXPECT_TRUE(absl::IsInvalidArgument(Scheduler::Create(nullptr).status()));
  MockBackend mock;
  SchedulerOptions zero;
  zero.credit_limit = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(Scheduler::Create(&mock, zero).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Entity::Create({}).status()));
  auto s = *Scheduler::Create(&mock, testing::Opts());
  auto e = *Entity::Create({s.get()});
  MockJob job;
  EXPECT_TRUE(absl::IsInvalidArgument(job.Init(e.get(), 0)));
  EXPECT_TRUE(absl::IsInvalidArgument(job.Init(nullptr, 1)));
}


}  // namespace
}  // namespace sched

namespace sched {
namespace {

// A hardware fence that records the deadline hints it receives.
class DeadlineFence final : public fence::Fence {
 public:
  using Fence::Fence;
  absl::Time deadline() {
    absl::MutexLock l(&mu_);
    return deadline_;
  }

 protected:
  void SetDeadlineHook(absl::Time d) override {
    absl::MutexLock l(&mu_);
    deadline_ = d;
  }

 private:
  absl::Mutex mu_;
  absl::Time deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
};

class DeadlineBackend final : public Backend {
 public:
  absl::StatusOr<fence::FenceRef> RunJob(Job&) override {
    auto f = std::make_shared<DeadlineFence>(context_, 1, fence::SeqnoWidth::k64);
    absl::MutexLock l(&mu_);
    hw_ = f;
    return fence::FenceRef(f);
  }
  std::shared_ptr<DeadlineFence> hw() {
    absl::MutexLock l(&mu_);
    return hw_;
  }

 private:
  const uint64_t context_ = fence::FenceContext::Allocate();
  absl::Mutex mu_;
  std::shared_ptr<DeadlineFence> hw_ ABSL_GUARDED_BY(mu_);
};

// DRM_SCHED_FENCE_FLAG_HAS_DEADLINE_BIT: a deadline set on the finished fence before the job runs
// reaches the hardware fence when it exists; an earlier one set later is forwarded at once.
TEST(SchedFence, DeadlineForwardedToParent) {
  DeadlineBackend backend;
  auto s = *Scheduler::Create(&backend, testing::Opts());
  {
    auto e = *Entity::Create({s.get()});
    fence::FenceRef gate = fence::Fence::Create(fence::FenceContext::Allocate(), 1);
    auto job = std::make_unique<Job>();
    ASSERT_TRUE(job->Init(e.get(), 1).ok());
    ASSERT_TRUE(job->AddDependency(gate).ok());
    ArmedJob armed = Job::Arm(std::move(job));
    fence::FenceRef scheduled = armed.scheduled(), finished = armed.finished();
    std::move(armed).Push();
    const absl::Time t1 = absl::Now() + absl::Seconds(5);
    finished->SetDeadline(t1);
    gate->Signal();
    ASSERT_TRUE(scheduled->Wait(absl::Seconds(10)).ok());
    EXPECT_EQ(backend.hw()->deadline(), t1);
    finished->SetDeadline(t1 + absl::Seconds(1));  // later: not forwarded
    EXPECT_EQ(backend.hw()->deadline(), t1);
    const absl::Time t0 = t1 - absl::Seconds(1);
    finished->SetDeadline(t0);
    EXPECT_EQ(backend.hw()->deadline(), t0);
    backend.hw()->Signal();
    ASSERT_TRUE(finished->Wait(absl::Seconds(10)).ok());
  }
  s.reset();
}

// The lead's review of issue 13, finding 9: an InfinitePast deadline set before the job runs reaches the parent as InfinitePast.
TEST(SchedFence, InfinitePastDeadlineForwardedAsInfinitePast) {
  const uint64_t context = fence::FenceContext::Allocate();
  auto pair = FinishedFence::CreatePair(context, 1, nullptr, false);
  pair.finished->SetDeadline(absl::InfinitePast());
  auto parent = std::make_shared<DeadlineFence>(fence::FenceContext::Allocate(), 1,
                                                fence::SeqnoWidth::k64);
  static_cast<FinishedFence&>(*pair.finished).SetParent(parent);
  EXPECT_EQ(parent->deadline(), absl::InfinitePast());
  parent->Signal();
}

}  // namespace
}  // namespace sched
