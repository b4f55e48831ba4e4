// VM_BIND's CPU fast path (vm/bind_vm.h): a bind with nothing to wait for on an idle VM executes
// on the caller's thread and returns an already signalled out-fence; a pending in-fence or an
// unfinished bind job sends it down the queued path, and the order per range holds across both.
#include <gtest/gtest.h>

#include <vector>

#include "fence/fence_context.h"
#include "tests/vm/bind_test_util.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

using testing::CheckConverged;
using testing::kPage;
using testing::TranslateOnce;

class BindInlineTest : public testing::BindFixture {
 protected:
  const std::byte* Host(uint64_t va) {
    RcuReadSection section;
    return vm_->HostAddress(vm_->page_table().Translate(va));
  }
  fence::FenceContext ctx_{"gate"};
};

// Idle VM, no in-fence: the page table reflects the bind when Submit returns, the out-fence has
// already signalled, and the cleanup worker still drops the references after a grace period.
TEST_F(BindInlineTest, IdleBindRunsOnTheCallersThread) {
  const BindOp map = BindOp::Map(16 * kPage, 4 * kPage, a_.get(), 0);
  absl::StatusOr<fence::FenceRef> f = queue_->Submit({&map, 1});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(vm_->binds_run_inline(), 1);
  EXPECT_TRUE((*f)->IsSignaledFlag());
  EXPECT_TRUE((*f)->error().ok());
  EXPECT_EQ(Host(17 * kPage), a_->memory().data() + kPage);
  const BindOp unmap = BindOp::Unmap(16 * kPage, 4 * kPage);
  f = queue_->Submit({&unmap, 1});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 2);
  EXPECT_TRUE((*f)->IsSignaledFlag());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 17 * kPage).valid);
  vm_->WaitIdle();
  EXPECT_EQ(vm_->jobs_in_flight(), 0);
  EXPECT_EQ(a_->refs_for_testing(), 1);  // the unmap's grace period passed; reference dropped
  EXPECT_EQ(vm_->device_slots_in_use(), 0u);
  EXPECT_EQ(Converged(), "");
}

// A bind whose ops cover more than kInlineMaxBytes of VA (here a sparse range one page larger)
// stays on the queued path, even on an idle VM; one of exactly kInlineMaxBytes runs inline.
TEST_F(BindInlineTest, BigBindsStayQueued) {
  const uint64_t base = uint64_t{1} << 32;
  const BindOp big = BindOp::MapNull(base, BindVm::kInlineMaxBytes + kPage);
  absl::StatusOr<fence::FenceRef> f = queue_->Submit({&big, 1});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(vm_->binds_run_inline(), 0);
  ASSERT_TRUE((*f)->Wait().ok());
  EXPECT_TRUE(TranslateOnce(vm_->page_table(), base + BindVm::kInlineMaxBytes).valid);
  vm_->WaitIdle();  // the queued job is through FreeJob: the VM is idle again
  const BindOp unmap = BindOp::Unmap(base, BindVm::kInlineMaxBytes + kPage);
  f = queue_->Submit({&unmap, 1});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 0);  // the unmap covers as much: queued too
  ASSERT_TRUE((*f)->Wait().ok());
  vm_->WaitIdle();
  const BindOp edge = BindOp::MapNull(base, BindVm::kInlineMaxBytes);
  f = queue_->Submit({&edge, 1});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 1);
  EXPECT_TRUE((*f)->IsSignaledFlag());
}

// An in-fence already signalled without error does not stop the fast path; one that signalled
// with an error does (the queued path makes the VM unusable, as before).
TEST_F(BindInlineTest, SignalledInFencesAndErrors) {
  fence::FenceRef done = ctx_.NewFence();
  done->Signal();
  const BindOp map = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  absl::StatusOr<fence::FenceRef> f = queue_->Submit({&map, 1}, {&done, 1});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 1);
  fence::FenceRef bad = ctx_.NewFence();
  bad->SetError(absl::AbortedError("producer failed"));
  bad->Signal();
  const BindOp unmap = BindOp::Unmap(0, 4 * kPage);
  f = queue_->Submit({&unmap, 1}, {&bad, 1});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 1);  // queued
  ASSERT_TRUE((*f)->Wait().ok());
  vm_->WaitIdle();
  EXPECT_TRUE(vm_->unusable());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);  // its unmap still ran
}

// A pending in-fence: queued, not signalled until the gate is.
TEST_F(BindInlineTest, PendingInFenceQueues) {
  fence::FenceRef gate = ctx_.NewFence();
  const BindOp map = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  absl::StatusOr<fence::FenceRef> f = queue_->Submit({&map, 1}, {&gate, 1});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 0);
  EXPECT_FALSE((*f)->IsSignaled());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);
  gate->Signal();
  ASSERT_TRUE((*f)->Wait().ok());
  EXPECT_TRUE((*f)->error().ok());
  EXPECT_EQ(Host(0), a_->memory().data());
}

// A queued job (held back by its in-fence) disables the fast path even for a bind on a disjoint
// range with no in-fence: it queues behind it (same queue: runs after it). Once every job went
// through FreeJob the fast path is back.
TEST_F(BindInlineTest, UnfinishedJobDisablesFastPath) {
  fence::FenceRef gate = ctx_.NewFence();
  const BindOp first = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  absl::StatusOr<fence::FenceRef> f1 = queue_->Submit({&first, 1}, {&gate, 1});
  ASSERT_TRUE(f1.ok());
  const BindOp second = BindOp::Map(32 * kPage, 4 * kPage, b_.get(), 0);
  absl::StatusOr<fence::FenceRef> f2 = queue_->Submit({&second, 1});
  ASSERT_TRUE(f2.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 0);
  EXPECT_FALSE((*f2)->IsSignaled());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 32 * kPage).valid);
  gate->Signal();
  ASSERT_TRUE((*f2)->Wait().ok());
  EXPECT_TRUE((*f1)->IsSignaled());  // one queue: in order
  vm_->WaitIdle();                    // every job through FreeJob
  const BindOp third = BindOp::Map(48 * kPage, kPage, b_.get(), 0);
  absl::StatusOr<fence::FenceRef> f3 = queue_->Submit({&third, 1});
  ASSERT_TRUE(f3.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 1);
  EXPECT_EQ(Converged(), "");
}

// Order per range across both paths: a fast-path map, then a queued remap of the same range
// (held by a gate), then a bind on that range with no in-fence — which must queue behind the
// remap (never run ahead of it), so the page table ends with the last bind's state.
TEST_F(BindInlineTest, OrderWithFollowingQueuedBinds) {
  const BindOp map_a = BindOp::Map(0, 8 * kPage, a_.get(), 0);
  ASSERT_TRUE(queue_->Submit({&map_a, 1}).ok());
  EXPECT_EQ(vm_->binds_run_inline(), 1);
  std::unique_ptr<BindQueue> other = *BindQueue::Create(*vm_);
  fence::FenceRef gate = ctx_.NewFence();
  const BindOp map_b = BindOp::Map(0, 8 * kPage, b_.get(), 0);
  absl::StatusOr<fence::FenceRef> fb = other->Submit({&map_b, 1}, {&gate, 1});
  ASSERT_TRUE(fb.ok());
  EXPECT_EQ(Host(kPage), a_->memory().data() + kPage);  // still the fast path's map
  const BindOp map_a2 = BindOp::Map(2 * kPage, 2 * kPage, a_.get(), 16 * kPage);
  absl::StatusOr<fence::FenceRef> fa2 = queue_->Submit({&map_a2, 1});
  ASSERT_TRUE(fa2.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 1);  // queued behind the gated job on its range
  EXPECT_FALSE((*fa2)->IsSignaled());
  gate->Signal();
  ASSERT_TRUE((*fa2)->Wait().ok());
  ASSERT_TRUE((*fb)->Wait().ok());
  EXPECT_EQ(Host(kPage), b_->memory().data() + kPage);
  EXPECT_EQ(Host(2 * kPage), a_->memory().data() + 16 * kPage);
  EXPECT_EQ(Host(4 * kPage), b_->memory().data() + 4 * kPage);
  other.reset();
  EXPECT_EQ(Converged(), "");
}

// An injected page-table fault on the fast path: the out-fence carries InternalError, the map
// is skipped and the VM is unusable — as on the queued path.
TEST_F(BindInlineTest, InjectedFaultOnTheFastPath) {
  vm_->InjectRunFault(0);
  const BindOp map = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  absl::StatusOr<fence::FenceRef> f = queue_->Submit({&map, 1});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 1);
  ASSERT_TRUE((*f)->IsSignaledFlag());
  EXPECT_EQ((*f)->error().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(vm_->unusable());
  EXPECT_FALSE(TranslateOnce(vm_->page_table(), 0).valid);
  EXPECT_EQ(queue_->Submit({&map, 1}).status().code(), absl::StatusCode::kFailedPrecondition);
}

// The async path's resv bookkeeping for a BO mapped twice in one bind (SameExternalBoTwiceInOneBind
// in bind_test.cc ran it before the fast path existed): gated, so it is queued and pushed.
TEST_F(BindInlineTest, SameExternalBoTwiceInOneQueuedBind) {
  fence::FenceRef gate = ctx_.NewFence();
  const BindOp ops[] = {BindOp::Map(0, 4 * kPage, a_.get(), 0),
                        BindOp::Map(8 * kPage, 4 * kPage, a_.get(), 4 * kPage)};
  absl::StatusOr<fence::FenceRef> f = queue_->Submit(ops, {&gate, 1});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(vm_->binds_run_inline(), 0);
  gate->Signal();
  ASSERT_TRUE((*f)->Wait().ok());
  EXPECT_EQ(Converged(), "");
}

}  // namespace
}  // namespace vm
