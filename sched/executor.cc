#include "sched/executor.h"

#include <algorithm>
#include <utility>

namespace sched {

ThreadPoolExecutor::ThreadPoolExecutor(int threads) {
  for (int i = 0; i < std::max(threads, 1); ++i) threads_.emplace_back([this] { Loop(); });
}

ThreadPoolExecutor::~ThreadPoolExecutor() {
  {
    absl::MutexLock l(&mu_);
    exit_ = true;  // the threads drain the queue, then leave
  }
  for (auto& t : threads_) t.join();
}

void ThreadPoolExecutor::Post(absl::AnyInvocable<void()> work) {
  absl::MutexLock l(&mu_);
  queue_.push_back(std::move(work));
}

void ThreadPoolExecutor::Loop() {
  for (;;) {
    absl::AnyInvocable<void()> work;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](ThreadPoolExecutor* e) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return e->exit_ || !e->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // exiting and drained
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    work();
  }
}

}  // namespace sched
