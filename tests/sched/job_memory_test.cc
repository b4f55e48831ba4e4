// Jobs and fence pairs come from oneTBB's scalable allocator, or from the global allocator in a
// process with a sanitizer runtime (sched/internal/job_memory.h).
#include "sched/internal/job_memory.h"

#include <cstdint>
#include <memory>

#include "base/sanitizers.h"
#include "fence/fence_context.h"
#include "gtest/gtest.h"
#include "sched/job.h"
#include "sched/sched_fence.h"

namespace sched {
namespace {

// The run-time detection agrees with how this test was compiled: a sanitizer build must use the
// global allocator, or ASan would not see a job's use after free.
TEST(JobMemory, SanitizerRuntimeDetectedExactlyInSanitizerBuilds) {
  EXPECT_EQ(internal::ProcessHasSanitizerRuntime(), UDRM_SANITIZER != 0);
}

struct PlainJob : Job {
  int payload[7] = {1, 2, 3, 4, 5, 6, 7};
};
struct alignas(128) OverAlignedJob : Job {
  char line[128] = {};
};

TEST(JobMemory, DerivedJobsAreAllocatedAndFreedThroughJobsAllocator) {
  for (int i = 0; i < 1000; ++i) {
    auto job = std::make_unique<PlainJob>();
    EXPECT_EQ(job->payload[6], 7);
    std::unique_ptr<Job> base = std::move(job);  // freed through the virtual destructor
  }
}

TEST(JobMemory, OverAlignedJobKeepsItsAlignment) {
  for (int i = 0; i < 100; ++i) {
    std::unique_ptr<Job> job = std::make_unique<OverAlignedJob>();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(job.get()) % 128, 0u);
  }
}

TEST(JobMemory, RawAllocationHonoursAlignmentAndFreesNull) {
  for (size_t align : {size_t{8}, size_t{16}, size_t{64}, size_t{4096}}) {
    void* p = internal::AllocateJobMemory(100, align);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << align;
    internal::FreeJobMemory(p, align);
  }
  internal::FreeJobMemory(nullptr, 8);
}

TEST(JobMemory, FencePairSharesOneAllocationAndCount) {
  const uint64_t ctx = fence::FenceContext::Allocate(2);
  FinishedFence::Pair pair = FinishedFence::CreatePair(ctx, 5, nullptr, false);
  ASSERT_NE(pair.scheduled, nullptr);
  ASSERT_NE(pair.finished, nullptr);
  EXPECT_EQ(pair.scheduled->context(), ctx);
  EXPECT_EQ(pair.finished->context(), ctx + 1);
  EXPECT_EQ(pair.finished->seqno(), 5u);
  EXPECT_EQ(pair.scheduled.use_count(), 2);  // one count for both fences
  fence::FenceRef scheduled = pair.scheduled;
  pair = {};
  EXPECT_EQ(scheduled.use_count(), 1);  // the scheduled fence keeps the finished one alive
  EXPECT_FALSE(scheduled->IsSignaled());
}

}  // namespace
}  // namespace sched
