// Scenario "sched": submit/kill/timeout races on two schedulers.
//
// Every thread drives entities (on scheduler 0, 1, or both with load balancing): it submits jobs
// with dependencies on other threads' recent jobs, sometimes arms a job and drops it unpushed,
// kills its entity mid-stream (and keeps pushing to it), destroys it, and replaces an entity that
// became guilty. Each scheduler's "GPU" is a thread completing hardware fences in order after a
// short cost, some with an error; a few jobs hang, so the TDR fires and the backend recovers
// (Stop, karma, reset of the hardware — pending hardware fences fail — then ResubmitJobs + Start
// on every other timeout, Start with an error otherwise).
// Invariants: every scheduled and finished fence signals exactly once, and finished not before
// scheduled; no job runs twice except through ResubmitJobs; an entity's jobs run in push order;
// a job runs only once its dependencies are resolved (signalled, or scheduled on the same
// scheduler); a killed job (NotFound) or a dropped armed job (Cancelled) never runs; a job that
// finished OK ran; a job is freed only after its finished fence signalled; every job, hung ones
// included, finishes (a job that does not within 30 s is a violation); no job object leaks.
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "fence/fence_context.h"
#include "sched/entity.h"
#include "sched/job.h"
#include "sched/scheduler.h"
#include "tools/stress/stress.h"

namespace stress {
namespace {

constexpr int kSchedulers = 2;
constexpr size_t kMaxInFlight = 24;  // per thread
constexpr size_t kBoardSize = 64;

struct EntityTrack {
  int id = 0;
  absl::Mutex mu;
  int64_t last_run_seq ABSL_GUARDED_BY(mu) = 0;
  int64_t last_finished_seq ABSL_GUARDED_BY(mu) = 0;
  std::string last_finished ABSL_GUARDED_BY(mu);
};

// What the tool knows about one job, shared by the job, its submitter and dependants.
struct Record {
  std::shared_ptr<EntityTrack> entity;
  int64_t seq = 0;  // in its entity's push order
  bool hang = false, fail = false, dropped = false;
  int cost_us = 0;
  fence::FenceRef scheduled, finished;
  sched::Scheduler* on = nullptr;  // set at Arm
  Probe scheduled_probe, finished_probe;
  std::atomic<int> runs{0};
  std::atomic<int> ran_on{-1};  // the scheduler of its first RunJob
};

class StressJob final : public sched::Job {
 public:
  explicit StressJob(std::shared_ptr<Record> r) : rec(std::move(r)) { live.fetch_add(1); }
  ~StressJob() override { live.fetch_sub(1); }
  std::shared_ptr<Record> rec;
  std::vector<std::shared_ptr<Record>> deps;  // other entities' jobs
  static std::atomic<int64_t> live;
};
std::atomic<int64_t> StressJob::live{0};

class StressBackend final : public sched::Backend {
 public:
  explicit StressBackend(int index) : index_(index), gpu_([this] { GpuLoop(); }) {}
  ~StressBackend() override {
    {
      absl::MutexLock l(&mu_);
      exit_ = true;
    }
    gpu_.join();
  }
  void set_scheduler(sched::Scheduler* s) { sched_ = s; }
  int timeouts() const { return timeouts_.load(); }

  absl::StatusOr<fence::FenceRef> RunJob(sched::Job& job) override {
    auto& sj = static_cast<StressJob&>(job);
    Record& r = *sj.rec;
    const int runs = r.runs.fetch_add(1) + 1;
    Check(runs == 1 || resubmitting_, "sched: a job ran twice outside ResubmitJobs");
    Check(!r.dropped, "sched: an armed job dropped without Push reached the backend");
    if (runs == 1) {
      {
        absl::MutexLock l(&r.entity->mu);
        Check(r.seq > r.entity->last_run_seq,
              absl::StrFormat("sched: entity %d ran job %d after job %d (out of push order)",
                              r.entity->id, r.seq, r.entity->last_run_seq));
        r.entity->last_run_seq = r.seq;
      }
      for (const auto& d : sj.deps) {
        // Resolved: finished; or, on this same scheduler, scheduled (pipelining; a killed or
        // dropped job's scheduled fence signals before its finished one, too).
        const bool pipelined = d->on == sched_ && d->scheduled->IsSignaledFlag();
        Check(d->finished->IsSignaledFlag() || pipelined,
              absl::StrFormat("sched: a job ran before its dependency was resolved (job %d:%d on "
                              "scheduler %d; dependency %d:%d: runs %d, ran on %d, dropped %d, "
                              "same scheduler %d, deps kept %d)",
                              job.finished()->context(), job.finished()->seqno(), index_,
                              d->finished->context(), d->finished->seqno(), d->runs.load(),
                              d->ran_on.load(), d->dropped, d->on == sched_,
                              job.dependencies().size()) +
                  (job.dependencies().empty()
                       ? std::string()
                       : absl::StrFormat(" kept[0] %d:%d signalled %d",
                                         job.dependencies()[0]->context(),
                                         job.dependencies()[0]->seqno(),
                                         job.dependencies()[0]->IsSignaledFlag())));
      }
      r.ran_on.store(index_);
    }
    fence::FenceRef hw = hw_ctx_.NewFence();
    absl::MutexLock l(&mu_);
    // A hung job blocks the ring (the jobs behind it wait too) until the reset.
    queue_.push_back({hw, r.fail, r.cost_us, r.hang && runs == 1});
    return hw;
  }

  sched::TimeoutStatus TimedOutJob(sched::Job& job) override {
    sched_->Stop(&job);
    sched::Scheduler::IncreaseKarma(job);
    ResetHardware();
    if (timeouts_.fetch_add(1) % 2 == 0) {
      resubmitting_ = true;
      sched_->ResubmitJobs();
      resubmitting_ = false;
      sched_->Start(absl::OkStatus());
    } else {
      sched_->Start(absl::AbortedError("gpu reset"));
    }
    return sched::TimeoutStatus::kReset;
  }

  void FreeJob(std::unique_ptr<sched::Job> job) override {
    Check(job->finished()->IsSignaledFlag(), "sched: a job was freed before it finished");
  }

  void CancelJob(sched::Job& job) override { ResetHardware(); }

 private:
  struct HwJob {
    fence::FenceRef fence;
    bool fail;
    int cost_us;
    bool hung;
  };

  // The hardware reset: everything on it fails.
  void ResetHardware() {
    std::vector<fence::FenceRef> lost;
    {
      absl::MutexLock l(&mu_);
      for (HwJob& h : queue_) lost.push_back(std::move(h.fence));
      queue_.clear();
    }
    for (auto& f : lost) {
      f->SetError(absl::AbortedError("gpu reset"));
      f->Signal();
    }
  }

  void GpuLoop() {
    while (true) {
      HwJob h;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(
            +[](StressBackend* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
              return b->exit_ || (!b->queue_.empty() && !b->queue_.front().hung);
            },
            this));
        if (exit_) return;
        h = std::move(queue_.front());
        queue_.pop_front();
      }
      if (h.cost_us > 0) absl::SleepFor(absl::Microseconds(h.cost_us));
      if (h.fail) h.fence->SetError(absl::DataLossError("gpu fault"));
      h.fence->Signal();
    }
  }

  const int index_;
  sched::Scheduler* sched_ = nullptr;
  fence::FenceContext hw_ctx_{"stress_hw"};
  // RunJob and TimedOutJob run on the scheduler's executor thread only.
  bool resubmitting_ = false;
  std::atomic<int> timeouts_{0};
  absl::Mutex mu_;
  std::deque<HwJob> queue_ ABSL_GUARDED_BY(mu_);
  bool exit_ ABSL_GUARDED_BY(mu_) = false;
  std::thread gpu_;
};

struct Board {
  absl::Mutex mu;
  std::vector<std::shared_ptr<Record>> recent ABSL_GUARDED_BY(mu);
  size_t next ABSL_GUARDED_BY(mu) = 0;

  void Add(std::shared_ptr<Record> r) {
    absl::MutexLock l(&mu);
    if (recent.size() < kBoardSize) {
      recent.push_back(std::move(r));
    } else {
      recent[next++ % kBoardSize] = std::move(r);
    }
  }
  std::shared_ptr<Record> Pick(std::mt19937_64& rng) {
    absl::MutexLock l(&mu);
    return recent.empty() ? nullptr : recent[Below(rng, recent.size())];
  }
};

struct Stats {
  std::atomic<int64_t> jobs{0}, kills{0}, dropped{0}, guilty{0}, killed_jobs{0}, failed{0};
};

std::string Describe(const Record& r) {
  return absl::StrFormat("job %d:%d (seq %d, runs %d, ran on %d, hang %d, fail %d, dropped %d, "
                         "error %s)",
                         r.finished->context(), r.finished->seqno(), r.seq, r.runs.load(),
                         r.ran_on.load(), r.hang, r.fail, r.dropped,
                         r.finished->error().ToString());
}

// The checks made when a job's finished fence has signalled.
void CheckFinished(Record& r) {
  r.scheduled_probe.Finish(*r.scheduled, "sched: a scheduled fence");
  r.finished_probe.Finish(*r.finished, "sched: a finished fence");
  const absl::Status e = r.finished->error();
  const int runs = r.runs.load();
  if (absl::IsNotFound(e)) Check(runs == 0, "sched: a killed job (NotFound) ran");
  if (r.dropped) {
    Check(runs == 0 && absl::IsCancelled(e), "sched: a dropped armed job did not end Cancelled");
  }
  if (e.ok()) Check(runs > 0, "sched: a job finished OK without running");
}

class Submitter {
 public:
  Submitter(const Options& o, int id, std::vector<sched::Scheduler*> scheds, Board& board,
            Stats& stats)
      : rng_(o.Rng(id)), drop_armed_(o.drop_armed), id_(id), scheds_(std::move(scheds)), board_(board), stats_(stats) {}

  void Loop() {
    NewEntity();
    while (Running()) {
      const uint64_t r = Below(rng_, 1000);
      if (r < 3) {
        KillMidStream();
      } else if (r < 4 || entity_->guilty()->load()) {
        if (entity_->guilty()->load()) stats_.guilty.fetch_add(1);
        entity_.reset();  // flushes up to 1 s, then kills
        NewEntity();
      } else {
        Submit();
      }
      Progress::Add();
      Retire(kMaxInFlight);
    }
    Retire(0);
    entity_.reset();
  }

 private:
  void NewEntity() {
    const uint64_t which = Below(rng_, 3);
    std::vector<sched::Scheduler*> list;
    if (which != 1) list.push_back(scheds_[0]);
    if (which != 0) list.push_back(scheds_[1]);
    const auto prio = static_cast<sched::Priority>(1 + Below(rng_, 3));
    entity_ = *sched::Entity::Create(list, prio, std::make_shared<std::atomic<bool>>(false));
    track_ = std::make_shared<EntityTrack>();
    track_->id = id_ * 1000000 + ++entities_;
    seq_ = 0;
  }

  void KillMidStream() {
    stats_.kills.fetch_add(1);
    entity_->Kill();
    const int more = static_cast<int>(Below(rng_, 3));
    for (int i = 0; i < more; ++i) Submit();  // pushed after the kill: killed at once
    entity_.reset();
    NewEntity();
  }

  void Submit() {
    auto rec = std::make_shared<Record>();
    rec->entity = track_;
    rec->seq = ++seq_;
    rec->hang = OneIn(rng_, 400);
    rec->fail = OneIn(rng_, 100);
    rec->cost_us = static_cast<int>(Below(rng_, 4) == 0 ? Below(rng_, 200) : 0);
    auto job = std::make_unique<StressJob>(rec);
    Check(job->Init(entity_.get(), 1 + static_cast<uint32_t>(Below(rng_, 2))).ok(),
          "sched: Job::Init failed");
    const int deps = static_cast<int>(Below(rng_, 3));
    for (int i = 0; i < deps; ++i) {
      std::shared_ptr<Record> d = board_.Pick(rng_);
      if (d == nullptr || d->entity == track_) continue;
      Check(job->AddDependency(d->finished).ok(), "sched: AddDependency failed");
      job->deps.push_back(std::move(d));
    }
    const bool drop = OneIn(rng_, 200) && drop_armed_;  // the draw happens either way
    {
      sched::ArmedJob armed = sched::Job::Arm(std::move(job));
      rec->scheduled = armed.scheduled();
      rec->finished = armed.finished();
      rec->on = armed->scheduler();
      Record* rp = rec.get();
      rec->scheduled_probe.Arm(*rec->scheduled, [](fence::Fence&) {});
      rec->finished_probe.Arm(*rec->finished, [rp](fence::Fence& f) {
        Check(rp->scheduled->IsSignaledFlag(), "sched: finished signalled before scheduled");
        const std::string me = Describe(*rp);
        absl::MutexLock l(&rp->entity->mu);
        Check(rp->seq > rp->entity->last_finished_seq,
              absl::StrFormat("sched: an entity's finished fences signalled out of order: %s "
                              "after %s",
                              me, rp->entity->last_finished));
        rp->entity->last_finished_seq = rp->seq;
        rp->entity->last_finished = me;
      });
      if (drop) {
        rec->dropped = true;
        stats_.dropped.fetch_add(1);
      } else {
        std::move(armed).Push();
      }
    }  // a dropped ArmedJob cancels its job here
    stats_.jobs.fetch_add(1);
    board_.Add(rec);
    in_flight_.push_back(std::move(rec));
  }

  // Checks finished jobs; waits for the oldest while more than `keep` are in flight.
  void Retire(size_t keep) {
    while (!in_flight_.empty()) {
      Record& r = *in_flight_.front();
      if (in_flight_.size() <= keep && !r.finished->IsSignaledFlag()) return;
      CheckFinished(r);
      const absl::Status e = r.finished->error();
      if (absl::IsNotFound(e)) stats_.killed_jobs.fetch_add(1);
      if (!e.ok()) stats_.failed.fetch_add(1);
      in_flight_.pop_front();
    }
  }

  std::mt19937_64 rng_;
  const bool drop_armed_;
  const int id_;
  const std::vector<sched::Scheduler*> scheds_;
  Board& board_;
  Stats& stats_;
  std::unique_ptr<sched::Entity> entity_;
  std::shared_ptr<EntityTrack> track_;
  int entities_ = 0;
  int64_t seq_ = 0;
  std::deque<std::shared_ptr<Record>> in_flight_;
};

}  // namespace

void RunSched(const Options& options) {
  Stats stats;
  int timeouts = 0;
  {
    Board board;
    std::vector<std::unique_ptr<StressBackend>> backends;
    std::vector<std::unique_ptr<sched::Scheduler>> owned;
    std::vector<sched::Scheduler*> scheds;
    for (int i = 0; i < kSchedulers; ++i) {
      backends.push_back(std::make_unique<StressBackend>(i));
      sched::SchedulerOptions so;
      so.name = absl::StrFormat("stress%d", i);
      so.credit_limit = i == 0 ? 4 : 8;
      so.policy = i == 0 ? sched::Policy::kFair : sched::Policy::kRoundRobin;
      so.timeout = absl::Milliseconds(50);
      owned.push_back(*sched::Scheduler::Create(backends.back().get(), so));
      backends.back()->set_scheduler(owned.back().get());
      scheds.push_back(owned.back().get());
    }
    std::vector<std::unique_ptr<Submitter>> subs;
    for (int t = 0; t < options.threads; ++t) {
      subs.push_back(std::make_unique<Submitter>(options, t, scheds, board, stats));
    }
    std::vector<std::thread> threads;
    for (auto& s : subs) threads.emplace_back([&s] { s->Loop(); });
    for (std::thread& t : threads) t.join();
    subs.clear();
    owned.clear();  // schedulers before their backends
    for (auto& b : backends) timeouts += b->timeouts();
    absl::MutexLock l(&board.mu);
    board.recent.clear();
  }
  Check(StressJob::live.load() == 0,
        absl::StrFormat("sched: leak: %d jobs alive after teardown", StressJob::live.load()));
  std::printf(
      "udrm_stress: sched: %lld jobs (%lld failed, %lld killed), %lld entity kills, %lld dropped "
      "armed jobs, %lld guilty entities, %d timeouts recovered\n",
      static_cast<long long>(stats.jobs.load()), static_cast<long long>(stats.failed.load()),
      static_cast<long long>(stats.killed_jobs.load()), static_cast<long long>(stats.kills.load()),
      static_cast<long long>(stats.dropped.load()), static_cast<long long>(stats.guilty.load()),
      timeouts);
}

}  // namespace stress
