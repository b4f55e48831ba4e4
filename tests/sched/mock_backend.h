// A test-only sched::Backend whose "hardware" timeline moves only when the test says so
// (the drm_sched KUnit mock): RunJob hands out hardware fences with seqnos in run order;
// Advance(n) completes every job whose seqno is within the next n; CancelJob fails a job with
// CancelledError. A job with a `duration` runs by itself: the hardware executes jobs one after
// another, so it completes at max(its run time, the previous job's end) + duration (a timer
// thread signals it); a job without one blocks the timeline, and every job behind it, until
// Advance. MockJob counts live instances so tests can assert nothing leaked.
#ifndef UDRM_TESTS_SCHED_MOCK_BACKEND_H_
#define UDRM_TESTS_SCHED_MOCK_BACKEND_H_

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "base/check.h"
#include "fence/fence_context.h"
#include "absl/status/status.h"
#include "sched/backend.h"
#include "sched/job.h"

namespace sched::testing {

class MockJob : public Job {
 public:
  MockJob() { live.fetch_add(1); }
  ~MockJob() override { live.fetch_sub(1); }
  static inline std::atomic<int> live{0};
  // Set by the mock when RunJob is called (its hardware fence).
  fence::FenceRef hw;
  // The mock's timeout handling: DONT_RESET -> report no hang (RESET_SKIPPED).
  bool dont_reset = false;
  // Hardware run time; zero: runs until Advance.
  absl::Duration duration = absl::ZeroDuration();
  std::atomic<bool> timed_out{false};
  std::atomic<bool> reset_skipped{false};
};

class MockBackend : public Backend {
 public:
  MockBackend() : context_(fence::FenceContext::Allocate()), timer_([this] { TimerLoop(); }) {}
  ~MockBackend() override {
    {
      absl::MutexLock l(&mu_);
      exit_ = true;
    }
    timer_.join();
  }

  // Checks the executor contract: RunJob and FreeJob of one scheduler never overlap
  // (a test's own calls, e.g. Stop from the test thread, happen while the scheduler is stopped).
  class NoOverlap {
   public:
    explicit NoOverlap(std::atomic<int>& n) : n_(n) {
      UDRM_CHECK(n_.fetch_add(1) == 0, "MockBackend: backend calls of one scheduler overlapped");
    }
    ~NoOverlap() { n_.fetch_sub(1); }

   private:
    std::atomic<int>& n_;
  };

  absl::StatusOr<fence::FenceRef> RunJob(Job& job) override {
    NoOverlap guard(in_backend_);
    absl::MutexLock l(&mu_);
    if (!run_error_.ok()) return run_error_;
    if (return_null_) return fence::FenceRef(nullptr);
    fence::FenceRef hw = fence::Fence::Create(context_, ++hw_seq_);
    auto& mj = static_cast<MockJob&>(job);
    mj.hw = hw;
    running_.emplace(hw_seq_, Entry{hw, absl::Now(), mj.duration});
    ++version_;
    run_order_.push_back(job.finished());
    return hw;
  }

  void FreeJob(std::unique_ptr<Job> job) override {
    NoOverlap guard(in_backend_);
    freed_.fetch_add(1);
  }

  // The KUnit mock's timedout_job: DONT_RESET jobs report NO_HANG; others are taken off the
  // hardware and fail with ETIMEDOUT (DeadlineExceeded).
  TimeoutStatus TimedOutJob(Job& job) override {
    auto& mj = static_cast<MockJob&>(job);
    if (mj.dont_reset) {
      mj.reset_skipped = true;
      return TimeoutStatus::kNoHang;
    }
    {
      absl::MutexLock l(&mu_);
      if (mj.hw == nullptr || !EraseLocked(mj.hw->seqno())) return TimeoutStatus::kReset;
    }
    mj.timed_out = true;
    mj.hw->SetError(absl::DeadlineExceededError("ETIMEDOUT"));
    mj.hw->Signal();
    return TimeoutStatus::kReset;
  }

  void CancelJob(Job& job) override {
    fence::FenceRef hw = static_cast<MockJob&>(job).hw;
    {
      absl::MutexLock l(&mu_);
      if (hw == nullptr || !EraseLocked(hw->seqno())) return;
    }
    hw->SetError(absl::CancelledError("ECANCELED"));
    hw->Signal();
  }

  // Completes the jobs with the next n hardware seqnos that have run; returns how many.
  int Advance(int n) {
    std::vector<fence::FenceRef> done;
    {
      absl::MutexLock l(&mu_);
      cur_ += n;
      while (!running_.empty() && running_.begin()->first <= cur_) {
        done.push_back(std::move(running_.begin()->second.hw));
        running_.erase(running_.begin());
        prev_done_ = absl::Now();
      }
      ++version_;
    }
    for (auto& f : done) f->Signal();  // outside the mock's lock: callbacks reach the scheduler
    return static_cast<int>(done.size());
  }

  // Fails the next hardware completion with `error` (set on the hardware fence).
  void FailOldest(absl::Status error) {
    fence::FenceRef f;
    {
      absl::MutexLock l(&mu_);
      if (running_.empty()) return;
      f = std::move(running_.begin()->second.hw);
      running_.erase(running_.begin());
      cur_ = f->seqno();
      prev_done_ = absl::Now();
      ++version_;
    }
    f->SetError(std::move(error));
    f->Signal();
  }

  // A "GPU reset": forgets every running job without signalling its hardware fence.
  int DropAll() {
    absl::MutexLock l(&mu_);
    const int n = static_cast<int>(running_.size());
    running_.clear();
    cur_ = hw_seq_;  // the timeline moves past what the reset threw away
    prev_done_ = absl::Now();
    ++version_;
    return n;
  }

  void SetRunError(absl::Status s) {
    absl::MutexLock l(&mu_);
    run_error_ = std::move(s);
  }
  void SetReturnNull(bool v) {
    absl::MutexLock l(&mu_);
    return_null_ = v;
  }
  // Finished fences of the jobs in the order RunJob saw them.
  std::vector<fence::FenceRef> run_order() {
    absl::MutexLock l(&mu_);
    return run_order_;
  }
  int freed() const { return freed_.load(); }

 private:
  struct Entry {
    fence::FenceRef hw;
    absl::Time run_at;
    absl::Duration duration;
  };

  bool EraseLocked(uint64_t seqno) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (running_.erase(seqno) == 0) return false;
    prev_done_ = absl::Now();
    ++version_;
    return true;
  }

  // When the head job (if it has a duration) is due.
  absl::Time HeadDueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (running_.empty()) return absl::InfiniteFuture();
    const Entry& head = running_.begin()->second;
    if (head.duration == absl::ZeroDuration()) return absl::InfiniteFuture();
    return std::max(head.run_at, prev_done_) + head.duration;
  }

  // The hardware: completes due jobs in order, one after another.
  void TimerLoop() {
    for (;;) {
      std::vector<fence::FenceRef> done;
      {
        absl::MutexLock l(&mu_);
        seen_version_ = version_;
        mu_.AwaitWithDeadline(
            absl::Condition(
                +[](MockBackend* m) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                  return m->exit_ || m->version_ != m->seen_version_;
                },
                this),
            HeadDueLocked());
        if (exit_) return;
        for (absl::Time due = HeadDueLocked(); due <= absl::Now(); due = HeadDueLocked()) {
          auto head = running_.begin();
          cur_ = std::max(cur_, head->first);
          prev_done_ = due;
          done.push_back(std::move(head->second.hw));
          running_.erase(head);
        }
      }
      for (auto& f : done) f->Signal();
    }
  }

  const uint64_t context_;
  absl::Mutex mu_;
  bool exit_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;  // bumped on every change to running_
  uint64_t seen_version_ ABSL_GUARDED_BY(mu_) = 0;  // the timer thread's last look
  absl::Time prev_done_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t hw_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cur_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, Entry> running_ ABSL_GUARDED_BY(mu_);
  std::vector<fence::FenceRef> run_order_ ABSL_GUARDED_BY(mu_);
  absl::Status run_error_ ABSL_GUARDED_BY(mu_);
  bool return_null_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> freed_{0};
  std::atomic<int> in_backend_{0};
  std::thread timer_;  // last: starts after the members above exist
};

}  // namespace sched::testing

#endif  // UDRM_TESTS_SCHED_MOCK_BACKEND_H_
