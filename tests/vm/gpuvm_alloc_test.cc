// vm::Gpuvm's allocation-free contract (vm/gpuvm.h "Allocation"): after ReserveInserts(n) the
// next n inserts — through Insert, ApplyMap or ApplyRemap, interleaved with any removals —
// allocate nothing, and the VmBo list changes never allocate. VM_BIND (issue 12) updates the VA
// tree at a point where it must not fail for lack of memory. Its own binary: it links
// alloc_count, which replaces the global operator new.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/vm/alloc_count.h"
#include "tests/vm/gpuvm_test_util.h"
#include "vm/gpuvm.h"
#include "vm/gpuvm_ops.h"
#include "vm/vm_bo.h"

namespace vm {
namespace {

using ::vm::testing::CountAllocations;
using Pool = internal::NodePool;

// Applies split/merge steps at once with Gpuvas from a free list that never grows (so applying
// allocates nothing of its own); counts the inserts made.
class ApplyNow final : public SmSteps {
 public:
  explicit ApplyNow(Gpuvm& vm, size_t capacity) : vm_(vm) {
    storage_.resize(capacity);
    free_.reserve(capacity);
    for (Gpuva& va : storage_) free_.push_back(&va);
  }
  ~ApplyNow() { VaPool::Clear(vm_); }
  absl::Status StepMap(const OpMap& op) override {
    ApplyMap(vm_, Take(), op);
    ++inserts;
    return absl::OkStatus();
  }
  absl::Status StepRemap(const OpRemap& op) override {
    Gpuva* old = op.unmap.va;
    ApplyRemap(vm_, op.prev ? Take() : nullptr, op.next ? Take() : nullptr, op);
    inserts += op.prev.has_value() + op.next.has_value();
    free_.push_back(old);
    return absl::OkStatus();
  }
  absl::Status StepUnmap(const OpUnmap& op) override {
    ApplyUnmap(vm_, op);
    free_.push_back(op.va);
    return absl::OkStatus();
  }
  Gpuva* Take() {
    EXPECT_FALSE(free_.empty());
    Gpuva* va = free_.back();
    free_.pop_back();
    *va = Gpuva();
    return va;
  }
  size_t inserts = 0;

 private:
  Gpuvm& vm_;
  std::vector<Gpuva> storage_;
  std::vector<Gpuva*> free_;
};

// The counter sees allocations (so the zero counts below mean something).
TEST(GpuvmAllocTest, CounterWorks) {
  CountAllocations c;
  auto v = std::make_unique<std::vector<int>>(100);
  EXPECT_EQ(c.count(), 2);
}

// NodesForInserts assumes kTreeNodeSlots keys per node: the height reaches 2 exactly at the
// kTreeNodeSlots+1-th insert into an empty tree.
TEST(GpuvmAllocTest, TreeNodeSlotsMatchesTheBtree) {
  auto vm = *Gpuvm::Create("slots", 0, 1 << 20, 0, 0);
  VaPool vas;
  EXPECT_EQ(vm->tree_height(), 0u);
  for (uint64_t i = 0; i < Pool::kTreeNodeSlots; ++i) {
    ASSERT_TRUE(vm->Insert(vas.New(i, 1)).ok());
    EXPECT_EQ(vm->tree_height(), 1u) << i;
  }
  ASSERT_TRUE(vm->Insert(vas.New(Pool::kTreeNodeSlots, 1)).ok());
  EXPECT_EQ(vm->tree_height(), 2u);
  VaPool::Clear(*vm);
}

// The bound in closed form equals the sum it stands for.
TEST(GpuvmAllocTest, NodesForInsertsClosedForm) {
  const size_t k = Pool::kTreeNodeSlots - 1;
  for (size_t h = 0; h < 8; ++h) {
    size_t sum = 0;
    for (size_t i = 0; i < 400; ++i) {
      EXPECT_EQ(Gpuvm::NodesForInserts(h, i), sum) << h << " " << i;
      sum += h + 1 + (i == 0 ? 0 : 1 + (i - 1) / k);
    }
  }
}

enum class Order { kAscending, kDescending, kRandom };

// The worst cases for splits: n inserts into an empty tree (the height grows from 0), in three
// orders, all under one reservation: no allocation, the pool never ran dry.
class SequentialInserts : public ::testing::TestWithParam<Order> {};

TEST_P(SequentialInserts, AllocateNothing) {
  constexpr uint64_t n = 600;
  auto vm = *Gpuvm::Create("seq", 0, n, 0, 0);
  std::vector<uint64_t> keys(n);
  for (uint64_t i = 0; i < n; ++i) keys[i] = i;
  if (GetParam() == Order::kDescending) std::reverse(keys.begin(), keys.end());
  if (GetParam() == Order::kRandom) std::shuffle(keys.begin(), keys.end(), std::mt19937_64(1));
  std::vector<Gpuva> vas(n);
  for (uint64_t i = 0; i < n; ++i) {
    vas[i].addr = keys[i];
    vas[i].range = 1;
  }
  auto res = vm->ReserveInserts(n);
  ASSERT_TRUE(res.ok());
  long allocs;
  {
    CountAllocations c;
    for (Gpuva& va : vas) ASSERT_TRUE(vm->Insert(&va).ok());
    allocs = c.count();
  }
  EXPECT_EQ(allocs, 0);
  EXPECT_EQ(vm->node_pool().misses(), 0);
  EXPECT_EQ(vm->va_count(), n);
  for (Gpuva& va : vas) vm->Remove(&va);
}
INSTANTIATE_TEST_SUITE_P(Orders, SequentialInserts,
                         ::testing::Values(Order::kAscending, Order::kDescending, Order::kRandom));

// VM_BIND's pattern: on trees of 0, 10^3 and 2*10^4 VAs, rounds of 1..16 random map/unmap
// requests applied at once (split/merge callbacks), each round under a reservation of 3
// inserts per request (a map: two remaps of one piece each + the map, or one remap of two
// pieces + the map): nothing allocated, the pool never ran dry, and the reservation covered the
// inserts actually made.
class RandomRequests : public ::testing::TestWithParam<uint64_t> {};

TEST_P(RandomRequests, AllocateNothingUnderAReservation) {
  const uint64_t n = GetParam();
  constexpr uint64_t kTile = 16;
  const uint64_t space = std::max<uint64_t>(n, 64) * kTile;
  auto vm = *Gpuvm::Create("rand", 0, space, 0, 0);
  std::vector<Ref<Bo>> bos;
  for (int i = 0; i < 4; ++i) bos.push_back(Bo::Create(space));
  ApplyNow steps(*vm, 3 * n + 4096);
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(SmMap(*vm, {{i * kTile, kTile, bos[i % 4].get(), i * kTile}}, steps).ok());
  }
  std::mt19937_64 rng(n);
  long allocs = 0;
  for (int round = 0; round < 400; ++round) {
    const size_t requests = 1 + rng() % 16;
    auto res = vm->ReserveInserts(3 * requests);
    ASSERT_TRUE(res.ok());
    const size_t inserts_before = steps.inserts;
    {
      CountAllocations c;
      for (size_t r = 0; r < requests; ++r) {
        const uint64_t range = 1 + rng() % 48;
        const uint64_t addr = rng() % (space - range);
        Bo* bo = bos[rng() % 4].get();
        absl::Status s = rng() % 3 == 0 ? SmUnmap(*vm, addr, range, steps)
                                        : SmMap(*vm, {{addr, range, bo, addr}}, steps);
        ASSERT_TRUE(s.ok());
      }
      allocs += c.count();
    }
    EXPECT_LE(steps.inserts - inserts_before, 3 * requests);
  }
  EXPECT_EQ(allocs, 0);
  EXPECT_EQ(vm->node_pool().misses(), 0);
  EXPECT_EQ(vm->node_pool().reserved(), 0u);
  EXPECT_LE(vm->node_pool().free_blocks(), Pool::kCacheBlocks);
}
INSTANTIATE_TEST_SUITE_P(Sizes, RandomRequests, ::testing::Values(0, 1000, 20000));

// The VmBo lists are intrusive: obtaining a pre-created VmBo, linking, extobj and evict
// membership, the deferred put and DeferredCleanup allocate nothing (immediate mode: the
// fence-signalling path).
TEST(GpuvmAllocTest, VmBoListsAllocateNothing) {
  Gpuvm::Options opts;
  opts.flags = Gpuvm::kImmediateMode;
  auto vm = *Gpuvm::Create("lists", 0, 1 << 20, 0, 0, std::move(opts));
  Ref<Bo> ext = Bo::Create(1 << 20);
  Ref<VmBo> pre = VmBo::Create(*vm, *ext);
  Gpuva va;
  auto res = vm->ReserveInserts(1);
  ASSERT_TRUE(res.ok());
  ASSERT_TRUE(ext->resv().TryLock());
  long allocs;
  {
    CountAllocations c;
    Ref<VmBo> vb = VmBo::ObtainPrealloc(std::move(pre));
    ApplyMap(*vm, &va, OpMap{0x1000, 0x1000, ext.get(), 0});
    {
      absl::MutexLock l(&ext->gpuva_mu());
      vb->Link(&va);
    }
    vb->ExtobjAdd();
    vb->Evict(true);
    EXPECT_TRUE(vb->in_evict_list());
    vb->Evict(false);
    vb.release()->PutDeferred();  // not the last: the link holds one
    VmBo::UnlinkDefer(&va);       // the last: queued on the deferred list
    ApplyUnmap(*vm, OpUnmap{&va, false});
    vm->DeferredCleanup();
    allocs = c.count();
  }
  ext->resv().Unlock();
  EXPECT_EQ(allocs, 0);
  EXPECT_EQ(VmBo::live_count(), 0);
}

// VM_BIND's batched path (vm/bind_steps.cc; vmbind_bench's BM_Batched): every job reserves the
// worst case of its inserts, applies its ops and gives the reservation back, and two jobs may
// hold reservations at once — here a job of 64 maps and a job unmapping them, in turn, next to
// 4000 VAs. The pool keeps the blocks warm across jobs (NodePool::cache_target): after the
// first jobs, a job's reservation, inserts and release allocate nothing — and the pool still
// keeps at most kCacheBlocks free blocks beyond what is reserved. (With the former fixed cache
// of 64 blocks every job allocated most of its reservation again: 1411 blocks here.)
TEST(GpuvmAllocTest, BatchedJobsReuseTheirBlocks) {
  constexpr uint64_t kTile = 16;
  constexpr uint64_t kVas = 4000;
  constexpr size_t kJobInserts = 192;  // a job's worst case: 64 maps, each splitting two VAs
  auto vm = *Gpuvm::Create("jobs", 0, 2 * kVas * kTile, 0, 0);
  std::vector<Ref<Bo>> bos;
  for (int i = 0; i < 4; ++i) bos.push_back(Bo::Create(2 * kVas * kTile));
  ApplyNow steps(*vm, 2 * kVas);
  for (uint64_t i = 0; i < kVas; ++i) {
    ASSERT_TRUE(SmMap(*vm, {{i * kTile, kTile, bos[i % 4].get(), i * kTile}}, steps).ok());
  }
  std::mt19937_64 rng(3);
  std::vector<uint64_t> mapped;
  // One job: 64 maps of one tile at random free places after the tiles, or their unmaps.
  auto job = [&](std::optional<Gpuvm::InsertReservation>& res) {
    auto r = vm->ReserveInserts(kJobInserts);
    ASSERT_TRUE(r.ok());
    res.emplace(*std::move(r));
    if (!mapped.empty()) {
      for (uint64_t addr : mapped) ASSERT_TRUE(SmUnmap(*vm, addr, kTile, steps).ok());
      mapped.clear();
      return;
    }
    for (int op = 0; op < 64; ++op) {
      const uint64_t addr = (kVas + 2 * (rng() % (kVas / 2))) * kTile;
      if (vm->FindFirst(addr, kTile) != nullptr) continue;
      ASSERT_TRUE(SmMap(*vm, {{addr, kTile, bos[rng() % 4].get(), addr}}, steps).ok());
      mapped.push_back(addr);
    }
  };
  std::optional<Gpuvm::InsertReservation> a, b;
  long allocs = 0;
  for (int round = 0; round < 100; ++round) {
    CountAllocations c;
    a.reset();  // the older job's cleanup; the next one reserves while `b` still holds its own
    job(a);
    std::swap(a, b);
    if (round >= 4) allocs += c.count();  // the first jobs fill the pool
  }
  a.reset();
  b.reset();
  std::printf("batched jobs: %ld allocations in 96 jobs after warm-up; cache_target %zu\n", allocs,
              vm->node_pool().cache_target());
  EXPECT_EQ(allocs, 0);
  EXPECT_EQ(vm->node_pool().misses(), 0);
  EXPECT_EQ(vm->node_pool().reserved(), 0u);
  EXPECT_LE(vm->node_pool().cache_target(), Pool::kCacheBlocks);
  EXPECT_LE(vm->node_pool().free_blocks(), Pool::kCacheBlocks);
  EXPECT_EQ(vm->node_pool().chunks(), 0u);  // a small tree: single blocks only
}

// A tree of more than kChunkNodes nodes grows in 2 MiB chunks; under a reservation it still
// allocates nothing (the promise is kept by the free lists, never by a new chunk), and every
// block goes back to the pool — chunks and singles are freed with the VM (ASan: no leak).
TEST(GpuvmAllocTest, BigTreeGrowsInChunks) {
  constexpr uint64_t kTile = 16;
  constexpr uint64_t kVas = 120000;
  auto vm = *Gpuvm::Create("big", 0, kVas * kTile, 0, 0);
  std::vector<Ref<Bo>> bos;
  for (int i = 0; i < 4; ++i) bos.push_back(Bo::Create(kVas * kTile));
  ApplyNow steps(*vm, 2 * kVas);
  for (uint64_t i = 0; i < kVas; ++i) {
    ASSERT_TRUE(SmMap(*vm, {{i * kTile, kTile, bos[i % 4].get(), i * kTile}}, steps).ok());
  }
  EXPECT_GE(vm->node_pool().in_use(), Pool::kChunkNodes);
  EXPECT_GE(vm->node_pool().chunks(), 1u);
  std::mt19937_64 rng(5);
  long allocs = 0;
  for (int round = 0; round < 200; ++round) {
    auto res = vm->ReserveInserts(3 * 16);
    ASSERT_TRUE(res.ok());
    CountAllocations c;
    for (int r = 0; r < 16; ++r) {
      const uint64_t range = 1 + rng() % 48;
      const uint64_t addr = rng() % (kVas * kTile - range);
      absl::Status s = rng() % 3 == 0 ? SmUnmap(*vm, addr, range, steps)
                                      : SmMap(*vm, {{addr, range, bos[rng() % 4].get(), addr}}, steps);
      ASSERT_TRUE(s.ok());
    }
    allocs += c.count();
  }
  EXPECT_EQ(allocs, 0);
  EXPECT_EQ(vm->node_pool().misses(), 0);
}

// A reservation that cannot be filled returns ResourceExhausted and keeps nothing; one that is
// dropped gives its blocks back (the pool keeps at most kCacheBlocks).
TEST(GpuvmAllocTest, ReserveFailureAndRelease) {
  auto vm = *Gpuvm::Create("fail", 0, 1 << 20, 0, 0);
  vm->node_pool_for_testing().FailNextRefillsForTesting(1);
  auto failed = vm->ReserveInserts(100);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(vm->node_pool().reserved(), 0u);
  EXPECT_LE(vm->node_pool().free_blocks(), Pool::kCacheBlocks);
  EXPECT_EQ(vm->ReserveInserts(Gpuvm::kMaxReservedInserts + 1).status().code(),
            absl::StatusCode::kResourceExhausted);

  auto res = vm->ReserveInserts(100);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->blocks(), Gpuvm::NodesForInserts(0, 100));
  EXPECT_GE(vm->node_pool().free_blocks(), res->blocks());
  Gpuvm::InsertReservation moved = *std::move(res);
  res->Release();  // moved-from: nothing
  EXPECT_EQ(vm->node_pool().reserved(), moved.blocks());
  moved.Release();
  moved.Release();  // idempotent
  EXPECT_EQ(vm->node_pool().reserved(), 0u);
  EXPECT_LE(vm->node_pool().free_blocks(), Pool::kCacheBlocks);
}

}  // namespace
}  // namespace vm
