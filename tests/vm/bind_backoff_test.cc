// VM_BIND after an exec back-off: a bind whose exec backed off still holds the contended BO
// locked when it retries (Exec::LockContended takes it first), so it must hold a reference to
// every BO it keeps locked until it unlocks it, on the CPU fast path too (vm/bind_vm.cc, Submit).
// The back-off is made deterministic by an older ww-ticket that holds the BO's resv while the bind
// locks it. Run under ASan and with UDRM_WW_SLOWPATH_INJECTION=1, as CI does.
#include <gtest/gtest.h>

#include <atomic>
#include <string_view>
#include <thread>

#include "fence/resv.h"
#include "tests/vm/bind_test_util.h"
#include "vm/internal/failslab.h"
#include "ww/ww_mutex.h"

namespace vm {
namespace {

using testing::kPage;

// Fails nothing: tells the test that the bind reached the pre-allocation under the VM resv, and
// records the BO's reference count where the fast path allocates its out-fence (after the
// locked-BO references are taken, before the tree changes).
class Observer final : public internal::FailslabHook {
 public:
  explicit Observer(const Bo& bo) : bo_(bo) {}
  bool ShouldFail(const char* site) override {
    entered_.store(true, std::memory_order_release);
    if (std::string_view(site) == "inline out-fence") {
      refs_at_fast_path_.store(bo_.refs_for_testing(), std::memory_order_relaxed);
    }
    return false;
  }
  bool entered() const { return entered_.load(std::memory_order_acquire); }
  int refs_at_fast_path() const { return refs_at_fast_path_.load(std::memory_order_relaxed); }

 private:
  const Bo& bo_;
  std::atomic<bool> entered_{false};
  std::atomic<int> refs_at_fast_path_{-1};
};

class BindBackoffTest : public testing::BindFixture {};

TEST_F(BindBackoffTest, FastPathAfterABackOffReferencesTheBosItHoldsLocked) {
  const BindOp map = BindOp::Map(0, 4 * kPage, a_.get(), 0);
  ASSERT_TRUE(queue_->Submit({&map, 1}).ok());
  vm_->WaitIdle();
  const int64_t inline_before = vm_->binds_run_inline();
  const int before = a_->refs_for_testing();  // ours, and the VM's through the mapped VA

  // An older ticket holds the BO's resv: the unmap's exec, younger and holding the VM resv, backs
  // off on it (instead of sleeping), unlocks the VM resv and waits for the BO alone.
  ww::WwAcquireContext older(&fence::ReservationWwClass());
  ASSERT_TRUE(a_->resv().Lock(&older).ok());
  Observer observer(*a_);
  internal::SetFailslabHook(&observer);
  absl::StatusOr<fence::FenceRef> out;
  std::thread binder([&] {
    const BindOp unmap = BindOp::Unmap(0, 4 * kPage);
    out = queue_->Submit({&unmap, 1});
  });
  while (!observer.entered()) std::this_thread::yield();  // the bind holds the VM resv
  // The VM resv unlocked again: the bind backed off; it takes the BO first on its retry.
  while (vm_->gpuvm().resv().lock().IsLocked()) std::this_thread::yield();
  a_->resv().Unlock();
  binder.join();
  internal::SetFailslabHook(nullptr);
  older.Done();

  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(vm_->binds_run_inline(), inline_before + 1);  // the fast path ran
  // The tree's references are all still there before ApplyBind; one more is the bind's own.
  EXPECT_EQ(observer.refs_at_fast_path(), before + 1);
  EXPECT_FALSE(testing::TranslateOnce(vm_->page_table(), 0).valid);
  vm_->WaitIdle();
  EXPECT_EQ(a_->refs_for_testing(), 1);  // the unmap's grace period passed; references dropped
}

}  // namespace
}  // namespace vm
