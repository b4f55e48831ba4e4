// fence_demo: udrm fences at work.
//
// Two "GPU rings" (producer threads) complete jobs out of order; each job's fence is a point on a
// timeline (a FenceChain, like a Vulkan timeline semaphore). Consumer threads wait for timeline
// points; a callback fires on the signalling thread when the last point is reached; and a job that
// faults carries its error through a merged fence to whoever waits on it.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "fence/fence.h"
#include "fence/fence_chain.h"
#include "fence/fence_context.h"
#include "fence/unwrap.h"

namespace {

absl::Mutex print_mu;
const absl::Time start = absl::Now();

void Say(const std::string& who, const std::string& what) {
  absl::MutexLock l(&print_mu);
  std::printf("[%7.2f ms] %-11s %s\n", absl::ToDoubleMilliseconds(absl::Now() - start),
              who.c_str(), what.c_str());
  std::fflush(stdout);
}

}  // namespace

int main() {
  constexpr int kPoints = 8;
  std::printf("udrm fence demo: a timeline of %d points, 2 producers, 3 consumers\n\n", kPoints);

  // Each job's hardware fence lives on its ring's context; the timeline chains them in order.
  fence::FenceContext ring[2] = {fence::FenceContext("ring0"), fence::FenceContext("ring1")};
  std::vector<fence::FenceRef> jobs;
  fence::FenceRef timeline;
  for (int p = 1; p <= kPoints; ++p) {
    jobs.push_back(ring[p % 2].NewFence());
    timeline = fence::FenceChain::Create(timeline, jobs.back(), p);
  }

  // A callback on the whole timeline: runs once, on whichever thread completes it.
  fence::FenceCallback done_cb;
  (void)timeline->AddCallback(&done_cb, [](fence::Fence& f) {
    Say("callback", "timeline reached point " + std::to_string(f.seqno()) +
                        " (running on the signalling thread)");
  });

  // Consumers wait for points 2, 5 and 8.
  std::vector<std::thread> consumers;
  for (uint64_t point : {2u, 5u, 8u}) {
    consumers.emplace_back([point, timeline] {
      fence::FenceRef f = timeline;
      if (!fence::FenceChain::FindSeqno(&f, point).ok()) return;
      Say("consumer", "waiting for point " + std::to_string(point));
      if (f != nullptr) (void)f->Wait();
      Say("consumer", "point " + std::to_string(point) + " reached");
    });
  }

  // Producers: ring r completes its jobs in reverse order, so points finish out of order and
  // the timeline advances only when every earlier point is done.
  std::vector<std::thread> producers;
  for (int r = 0; r < 2; ++r) {
    producers.emplace_back([r, &jobs] {
      for (int p = kPoints; p >= 1; --p) {
        if (p % 2 != r) continue;
        absl::SleepFor(absl::Milliseconds(3));
        jobs[p - 1]->Signal();
        Say("ring" + std::to_string(r), "job for point " + std::to_string(p) + " done");
      }
    });
  }
  for (auto& t : producers) t.join();
  for (auto& t : consumers) t.join();

  // Errors travel on fences: one job of a batch faults; the merged fence carries the error.
  std::printf("\nerror propagation:\n");
  fence::FenceContext copy_ring("copy");
  fence::FenceRef ok_job = copy_ring.NewFence();
  fence::FenceRef bad_job = ring[0].NewFence();
  fence::FenceRef batch = fence::Merge({ok_job, bad_job});
  std::thread faulting([&] {
    absl::SleepFor(absl::Milliseconds(2));
    ok_job->Signal();
    bad_job->SetError(absl::DataLossError("GPU page fault at 0xdead000"));
    bad_job->Signal();
  });
  Say("waiter", "waiting on the merged fence of 2 jobs");
  (void)batch->Wait();
  faulting.join();
  Say("waiter", "batch complete with error: " + batch->error().ToString());

  const bool ok = timeline->IsSignaled() && !batch->error().ok();
  std::printf("\n%s\n", ok ? "demo finished: timeline complete, error propagated"
                           : "demo FAILED");
  return ok ? 0 : 1;
}
