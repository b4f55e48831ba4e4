#include "sched/tbb_executor.h"

#include <utility>

// ThreadSanitizer's annotation entry points: defined when the process carries the TSan runtime
// (an application built with -fsanitize=thread), null otherwise. Weak declarations instead of a
// build macro, so one build of this library serves both kinds of application and still tells
// TSan about the ordering it cannot see.
extern "C" void __tsan_acquire(void* addr) __attribute__((weak));
extern "C" void __tsan_release(void* addr) __attribute__((weak));

namespace sched {
namespace {

void HappensAfter(void* p) {
  if (__tsan_acquire != nullptr) __tsan_acquire(p);
}
void HappensBefore(void* p) {
  if (__tsan_release != nullptr) __tsan_release(p);
}

}  // namespace

// The oneTBB task: carries only the executor's address. oneTBB writes it into its task object on
// the posting thread and a worker reads it back; oneTBB guarantees that enqueue happens before
// the task runs, but synchronises inside libtbb, where ThreadSanitizer cannot see. So the read of
// `self` is not instrumented, and the guarantee is stated to TSan explicitly (release in Post,
// acquire here): a oneTBB worker created before this executor existed otherwise looks unordered
// with its construction. The work itself travels through `mu_`, which TSan does see.
struct TbbExecutor::Kick {
  TbbExecutor* self;
  __attribute__((no_sanitize("thread"), noinline)) void operator()() const {
    TbbExecutor* e = self;
    HappensAfter(e);
    e->RunOne();
  }
};

TbbExecutor::TbbExecutor(int max_concurrency) : arena_(max_concurrency) { arena_.initialize(); }

TbbExecutor::~TbbExecutor() {
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(
      +[](TbbExecutor* e) ABSL_NO_THREAD_SAFETY_ANALYSIS { return e->in_flight_ == 0; }, this));
}

void TbbExecutor::Post(absl::AnyInvocable<void()> work) {
  {
    absl::MutexLock l(&mu_);
    queue_.push_back(std::move(work));
    ++in_flight_;
  }
  HappensBefore(this);
  arena_.enqueue(Kick{this});
}

void TbbExecutor::RunOne() {
  absl::AnyInvocable<void()> work;
  {
    absl::MutexLock l(&mu_);
    work = std::move(queue_.front());
    queue_.pop_front();
  }
  work();
  absl::MutexLock l(&mu_);
  --in_flight_;
}

}  // namespace sched
