// Several bind queues per VM converge per range (issue 12): >= 10^4 random binds (10^4 in the
// default config; fewer under sanitizers, see kBinds) from 3 threads on 3 queues, most with an
// in-fence that a signaller thread signals in random order; once every out-fence has signalled,
// the page table equals the VA tree page by page. Seeded: UDRM_BIND_SEED=<n> replays a run; the
// seed is printed with any failure.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "base/sanitizers.h"
#include "fence/fence_context.h"
#include "tests/vm/bind_test_util.h"

namespace vm {
namespace {

using testing::CheckConverged;
using testing::kPage;

constexpr int kQueues = 3;
constexpr uint64_t kPages = 512;  // the VA window: 2 MiB
constexpr uint64_t kBoPages = 64;
// The default config runs 10^4 binds; TSan and ASan run slower by ~10x, so they run fewer.
constexpr int kBinds = UDRM_SANITIZER ? 2000 : 10000;
constexpr int kRounds = 20;
constexpr size_t kMaxGates = 48;  // unsignalled in-fences at a time (bounds the jobs in flight)
// The signaller waits until this many are unsignalled, then signals a random one: an in-fence
// stays unsignalled while, on average, dozens of later binds are submitted.
constexpr size_t kHeldGates = 24;

// In-fences waiting to be signalled, in no order; a signaller thread signals random ones.
class GatePool {
 public:
  explicit GatePool(uint64_t seed) : rng_(seed) {}
  // Blocks while kMaxGates are unsignalled (back-pressure on the submitters).
  fence::FenceRef New() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(this, &GatePool::HasRoomLocked));
    fence::FenceRef f = ctx_.NewFence();
    gates_.push_back(f);
    return f;
  }
  void Close() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    closed_ = true;
  }
  // Signals random gates (once kHeldGates are waiting, or closed) until closed and empty.
  void SignalAll() ABSL_LOCKS_EXCLUDED(mu_) {
    for (;;) {
      fence::FenceRef f;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(this, &GatePool::ReadyLocked));
        if (gates_.empty()) return;
        const size_t i = rng_() % gates_.size();
        f = std::move(gates_[i]);
        gates_[i] = std::move(gates_.back());
        gates_.pop_back();
        // A random delay: sometimes let the submitters run ahead.
        if (rng_() % 4 == 0) {
          mu_.Unlock();
          std::this_thread::yield();
          mu_.Lock();
        }
      }
      f->Signal();
    }
  }

 private:
  bool HasRoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return gates_.size() < kMaxGates;
  }
  bool ReadyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return gates_.size() >= kHeldGates || closed_;
  }

  absl::Mutex mu_;
  fence::FenceContext ctx_;
  std::vector<fence::FenceRef> gates_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
};

BindOp RandomOp(std::mt19937_64& rng, const std::array<Ref<Bo>, 3>& bos) {
  const bool big = rng() % 4 == 0;  // 64 KiB pages
  const uint64_t unit = big ? 16 : 1;
  const uint64_t len = unit * (1 + rng() % (big ? 3 : 32));
  const uint64_t first = unit * (rng() % ((kPages - len) / unit + 1));
  const PageSize size = big ? PageSize::k64K : PageSize::k4K;
  switch (rng() % 3) {
    case 0:
      return BindOp::Unmap(first * kPage, len * kPage);
    case 1:
      return BindOp::MapNull(first * kPage, len * kPage, size);
    default: {
      const uint64_t off = unit * (rng() % ((kBoPages - len) / unit + 1));
      return BindOp::Map(first * kPage, len * kPage, bos[rng() % bos.size()].get(), off * kPage,
                         size);
    }
  }
}

uint64_t Seed() {
  if (const char* s = std::getenv("UDRM_BIND_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

// One round: kBinds / kRounds binds from 3 threads on 3 queues, their in-fences signalled in
// random order; waits for every out-fence. Returns "" or the first error.
std::string RunRound(uint64_t seed, std::array<std::unique_ptr<BindQueue>, kQueues>& queues,
                     const std::array<Ref<Bo>, 3>& bos) {
  GatePool gates(seed);
  std::array<std::vector<fence::FenceRef>, kQueues> outs;
  std::array<std::string, kQueues> errors;
  std::vector<std::thread> submitters;
  for (int q = 0; q < kQueues; ++q) {
    submitters.emplace_back([&, q] {
      std::mt19937_64 rng(seed + 1 + q);
      for (int n = q; n < kBinds / kRounds; n += kQueues) {
        std::vector<BindOp> ops;
        const int count = 1 + static_cast<int>(rng() % 3);
        for (int i = 0; i < count; ++i) ops.push_back(RandomOp(rng, bos));
        std::vector<fence::FenceRef> in;
        if (rng() % 4 != 0) in.push_back(gates.New());
        absl::StatusOr<fence::FenceRef> f = queues[q]->Submit(ops, in);
        if (!f.ok()) {
          errors[q] = "bind " + std::to_string(n) + ": " + f.status().ToString();
          return;
        }
        outs[q].push_back(*std::move(f));
      }
    });
  }
  std::thread signaller([&] { gates.SignalAll(); });
  for (auto& t : submitters) t.join();
  gates.Close();
  signaller.join();
  for (int q = 0; q < kQueues; ++q) {
    if (!errors[q].empty()) return "queue " + std::to_string(q) + ": " + errors[q];
    for (const fence::FenceRef& f : outs[q]) {
      if (absl::Status s = f->Wait(); !s.ok()) return s.ToString();
      if (!f->error().ok()) return "out-fence error: " + f->error().ToString();
    }
  }
  return "";
}

// The page table converges to the tree at the end of every round (a reordering bug shows at a
// round's end, when the last binds of each page ran in the wrong order: several rounds give it
// several chances).
TEST(BindConvergeTest, ThreeQueuesRandomInFenceOrder) {
  const uint64_t seed = Seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (replay with UDRM_BIND_SEED)");
  RcuReaderThread rcu;
  std::unique_ptr<BindVm> vm = *BindVm::Create("converge", {});
  std::array<std::unique_ptr<BindQueue>, kQueues> queues;
  for (auto& q : queues) q = *BindQueue::Create(*vm);
  std::array<Ref<Bo>, 3> bos;
  for (auto& b : bos) b = Bo::Create(kBoPages * kPage);
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_EQ(RunRound(seed * 1000 + round, queues, bos), "") << "round " << round;
    ASSERT_FALSE(vm->unusable()) << "round " << round;
    ASSERT_EQ(CheckConverged(*vm, 0, kPages * kPage), "") << "round " << round;
  }
  EXPECT_GT(vm->gpuvm().va_count(), 0u);
  for (auto& q : queues) q.reset();
  vm.reset();
  for (auto& b : bos) EXPECT_EQ(b->refs_for_testing(), 1);
}

}  // namespace
}  // namespace vm
