// Split/merge (drm_gpuvm_sm_map / sm_unmap): every row of the table in the reference §1.3, in the
// list form and the callback form, ops checked field by field.
#include <gtest/gtest.h>

#include "tests/vm/gpuvm_test_util.h"
#include "vm/gpuvm_ops.h"

namespace vm {
namespace {

// Records the callback-form steps; optionally applies each at once (the msm way).
class Recorder final : public SmSteps {
 public:
  Recorder(Gpuvm* apply_to, VaPool* pool) : vm_(apply_to), pool_(pool) {}
  absl::Status StepMap(const OpMap& op) override {
    ops.push_back(op);
    if (vm_ != nullptr) ApplyMap(*vm_, pool_->New(), op);
    return absl::OkStatus();
  }
  absl::Status StepRemap(const OpRemap& op) override {
    ops.push_back(op);
    if (vm_ != nullptr) {
      ApplyRemap(*vm_, op.prev ? pool_->New() : nullptr, op.next ? pool_->New() : nullptr, op);
    }
    return absl::OkStatus();
  }
  absl::Status StepUnmap(const OpUnmap& op) override {
    ops.push_back(op);
    if (vm_ != nullptr) ApplyUnmap(*vm_, op);
    return fail_unmap ? absl::AbortedError("driver") : absl::OkStatus();
  }
  Ops ops;
  bool fail_unmap = false;

 private:
  Gpuvm* vm_;
  VaPool* pool_;
};

// The tree as (addr, range, bo, offset) tuples, kernel node excluded.
std::vector<OpMap> Snapshot(const Gpuvm& vm) {
  std::vector<OpMap> out;
  for (Gpuva* va : vm.All()) {
    if (va != &vm.kernel_node()) out.push_back({va->addr, va->range, va->bo, va->offset});
  }
  return out;
}

class SmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vm_ = *Gpuvm::Create("sm", 0, 1000, 900, 100);
    a_ = Bo::Create(1000);
    b_ = Bo::Create(1000);
  }
  void TearDown() override {
    VaPool::Clear(*vm_);
    vm_.reset();
    a_.reset();
    b_.reset();
    EXPECT_EQ(Gpuvm::live_count(), 0);
  }
  Gpuva* Add(uint64_t addr, uint64_t end, Bo* bo, uint64_t offset) {
    Gpuva* va = pool_.New(addr, end - addr, bo, offset);
    EXPECT_TRUE(vm_->Insert(va).ok());
    return va;
  }
  // Checks the list form against `want`, then that the callback form (not applying) gives the
  // same sequence, and that applying the list equals applying the callbacks immediately.
  void CheckMap(OpMap req, const Ops& want) {
    auto ops = SmMapOpsCreate(*vm_, MapRequest{req});
    ASSERT_TRUE(ops.ok()) << ops.status();
    ASSERT_EQ(ops->size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ((*ops)[i], want[i]) << "op " << i;
    Recorder dry(nullptr, nullptr);
    ASSERT_TRUE(SmMap(*vm_, MapRequest{req}, dry).ok());
    EXPECT_EQ(dry.ops, *ops);
    // Apply the list to this VM; replay the callback form applying at once on a copy.
    auto copy = *Gpuvm::Create("copy", 0, 1000, 900, 100);
    VaPool copy_pool;
    for (const OpMap& m : Snapshot(*vm_)) ASSERT_TRUE(copy->Insert(copy_pool.New(m.addr, m.range, m.bo, m.offset)).ok());
    Recorder live(copy.get(), &copy_pool);
    ASSERT_TRUE(SmMap(*copy, MapRequest{req}, live).ok());
    ApplyOps(*vm_, *ops, pool_);
    EXPECT_EQ(Snapshot(*copy), Snapshot(*vm_));
    VaPool::Clear(*copy);
  }
  void CheckUnmap(uint64_t addr, uint64_t range, const Ops& want) {
    auto ops = SmUnmapOpsCreate(*vm_, addr, range);
    ASSERT_TRUE(ops.ok()) << ops.status();
    EXPECT_EQ(*ops, want);
    Recorder dry(nullptr, nullptr);
    ASSERT_TRUE(SmUnmap(*vm_, addr, range, dry).ok());
    EXPECT_EQ(dry.ops, *ops);
  }

  Ref<Gpuvm> vm_;
  Ref<Bo> a_, b_;
  VaPool pool_;
};

// Row-by-row: existing VA [20,40) -> A+100, plus touching neighbours that must not be visited.
struct Row {
  const char* name;
  uint64_t req_addr, req_end;
  bool stops;  // the walk stops at the VA (else it continues to [45,60))
};

// Expected ops for one row with a request of bo/offset (keep computed by the test's own rule:
// the VA maps `bo` contiguously with the request).
Ops Expected(Gpuva* va, Gpuva* after, OpMap req) {
  Ops out;
  auto keep_for = [&](Gpuva* v) {
    return v->bo != nullptr && v->bo == req.bo &&
           static_cast<int64_t>(v->offset - v->addr) == static_cast<int64_t>(req.offset - req.addr);
  };
  const uint64_t req_end = req.addr + req.range;
  for (Gpuva* v : {va, after}) {
    if (v == nullptr || v->addr >= req_end || v->end() <= req.addr) continue;
    std::optional<OpMap> prev, next;
    if (v->addr < req.addr) prev = OpMap{v->addr, req.addr - v->addr, v->bo, v->offset};
    if (v->end() > req_end) {
      next = OpMap{req_end, v->end() - req_end, v->bo, v->offset + (req_end - v->addr)};
    }
    OpUnmap u{v, keep_for(v)};
    if (prev || next) {
      out.push_back(OpRemap{prev, next, u});
    } else {
      out.push_back(u);
    }
  }
  out.push_back(req);
  return out;
}

// The nine rows of the table (position of the VA's start and end vs. the request's).
const Row kRows[] = {
    {"start==, end==", 20, 40, true},  {"start==, end<", 20, 50, false},
    {"start==, end>", 20, 30, true},   {"start<, end==", 25, 40, true},
    {"start<, end<", 25, 50, false},   {"start<, end>", 25, 30, true},
    {"start>, end==", 10, 40, true},   {"start>, end<", 10, 50, false},
    {"start>, end>", 10, 30, true},
};

// Every row, each with: keep (same BO, contiguous), other offset, other BO, sparse VA and a
// sparse request. Also checks the hand-written expectations of the first variant literally.
TEST_F(SmTest, EveryRowOfTheTable) {
  for (const Row& row : kRows) {
    for (int variant = 0; variant < 5; ++variant) {
      SCOPED_TRACE(::testing::Message() << row.name << " variant " << variant);
      Bo* va_bo = variant == 3 ? nullptr : a_.get();
      Add(0, 10, a_.get(), 0);  // touches the [10,..) requests: must not be visited
      Gpuva* va = Add(20, 40, va_bo, 100);
      // In a stop row `after` starts where the VA ends, at or after the request's end: the
      // walk must not visit it.
      Gpuva* after = Add(row.stops ? 40 : 45, 60, b_.get(), 0);
      OpMap req{row.req_addr, row.req_end - row.req_addr, a_.get(), 100 + row.req_addr - 20};
      if (variant == 1) req.offset += 1;
      if (variant == 2) req.bo = b_.get();
      if (variant == 4) req = OpMap{req.addr, req.range, nullptr, 0};
      Ops want = Expected(va, row.stops ? nullptr : after, req);
      CheckMap(req, want);
      VaPool::Clear(*vm_);
    }
  }
}

// The literal table: keep flags and offsets of prev/next, without the helper's arithmetic.
TEST_F(SmTest, LiteralRows) {
  Bo* a = a_.get();
  auto run = [&](OpMap req, Ops want) {
    Gpuva* va = Add(20, 40, a, 100);
    for (Op& op : want) {
      if (auto* u = std::get_if<OpUnmap>(&op)) u->va = va;
      if (auto* r = std::get_if<OpRemap>(&op)) r->unmap.va = va;
    }
    CheckMap(req, want);
    VaPool::Clear(*vm_);
  };
  const OpMap same{20, 20, a, 100};
  run(same, {OpUnmap{nullptr, true}, same});  // identical: UNMAP(keep) + MAP (the code)
  run({20, 30, a, 100}, {OpUnmap{nullptr, true}, OpMap{20, 30, a, 100}});
  run({20, 10, a, 100},
      {OpRemap{std::nullopt, OpMap{30, 10, a, 110}, {nullptr, true}}, OpMap{20, 10, a, 100}});
  run({25, 15, a, 105},
      {OpRemap{OpMap{20, 5, a, 100}, std::nullopt, {nullptr, true}}, OpMap{25, 15, a, 105}});
  run({25, 25, a, 7},
      {OpRemap{OpMap{20, 5, a, 100}, std::nullopt, {nullptr, false}}, OpMap{25, 25, a, 7}});
  run({25, 5, a, 105}, {OpRemap{OpMap{20, 5, a, 100}, OpMap{30, 10, a, 110}, {nullptr, true}},
                        OpMap{25, 5, a, 105}});
  run({10, 30, a, 90}, {OpUnmap{nullptr, true}, OpMap{10, 30, a, 90}});
  run({10, 40, b_.get(), 90}, {OpUnmap{nullptr, false}, OpMap{10, 40, b_.get(), 90}});
  run({10, 20, a, 90},
      {OpRemap{std::nullopt, OpMap{30, 10, a, 110}, {nullptr, true}}, OpMap{10, 20, a, 90}});
}

// A request over several VAs: any number of UNMAPs between at most two REMAPs.
TEST_F(SmTest, SpanningRequest) {
  Gpuva* v1 = Add(10, 20, a_.get(), 0);
  Gpuva* v2 = Add(20, 30, nullptr, 0);
  Gpuva* v3 = Add(30, 40, b_.get(), 0);
  Gpuva* v4 = Add(40, 50, a_.get(), 500);
  OpMap req{15, 30, b_.get(), 0};
  CheckMap(req, {OpRemap{OpMap{10, 5, a_.get(), 0}, std::nullopt, {v1, false}},
                 OpUnmap{v2, false}, OpUnmap{v3, false},
                 OpRemap{std::nullopt, OpMap{45, 5, a_.get(), 505}, {v4, false}}, req});
}

// sm_unmap: REMAP for VAs sticking out, UNMAP for VAs inside, keep always false, no MAP.
TEST_F(SmTest, UnmapRows) {
  Gpuva* va = Add(20, 40, a_.get(), 100);
  CheckUnmap(20, 20, {OpUnmap{va, false}});
  CheckUnmap(10, 40, {OpUnmap{va, false}});
  CheckUnmap(25, 5, {OpRemap{OpMap{20, 5, a_.get(), 100}, OpMap{30, 10, a_.get(), 110}, {va, false}}});
  CheckUnmap(10, 20, {OpRemap{std::nullopt, OpMap{30, 10, a_.get(), 110}, {va, false}}});
  CheckUnmap(30, 20, {OpRemap{OpMap{20, 10, a_.get(), 100}, std::nullopt, {va, false}}});
  CheckUnmap(0, 20, {});
  CheckUnmap(40, 10, {});
}

// Bad input fails before any step, and nothing changes.
TEST_F(SmTest, InvalidRequestsNoStep) {
  Add(20, 40, a_.get(), 100);
  Recorder r(nullptr, nullptr);
  EXPECT_EQ(SmMap(*vm_, {{890, 20, a_.get(), 0}}, r).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SmMap(*vm_, {{20, 0, a_.get(), 0}}, r).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SmMap(*vm_, {{20, 10, a_.get(), 995}}, r).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SmUnmap(*vm_, UINT64_MAX - 5, 10, r).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SmUnmap(*vm_, 950, 10, r).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SmMapOpsCreate(*vm_, {{1000, 10, nullptr, 0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(r.ops.empty());
  EXPECT_EQ(vm_->va_count(), 2u);
}

// The first failing step aborts the walk and is returned.
TEST_F(SmTest, FirstErrorAborts) {
  Add(10, 20, a_.get(), 0);
  Add(20, 30, a_.get(), 0);
  Recorder r(nullptr, nullptr);
  r.fail_unmap = true;
  EXPECT_EQ(SmMap(*vm_, {{10, 20, b_.get(), 0}}, r).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(r.ops.size(), 1u);
}

// Prefetch: one op per overlapping VA.
TEST_F(SmTest, PrefetchOps) {
  Gpuva* v1 = Add(10, 20, a_.get(), 0);
  Gpuva* v2 = Add(30, 40, nullptr, 0);
  auto ops = PrefetchOpsCreate(*vm_, 15, 20);
  ASSERT_TRUE(ops.ok());
  EXPECT_EQ(*ops, (Ops{OpPrefetch{v1}, OpPrefetch{v2}}));
}

// drm_gpuva_op_remap_to_unmap_range: the hole a remap leaves.
TEST_F(SmTest, RemapToUnmapRange) {
  Gpuva* va = Add(20, 40, a_.get(), 100);
  OpRemap r{OpMap{20, 5, a_.get(), 100}, OpMap{30, 10, a_.get(), 110}, {va, false}};
  EXPECT_EQ(RemapToUnmapRange(r).addr, 25u);
  EXPECT_EQ(RemapToUnmapRange(r).range, 5u);
  r.prev.reset();
  EXPECT_EQ(RemapToUnmapRange(r).addr, 20u);
}

// madvise: BO-backed VAs are skipped; a NULL VA crossing the start is split with a MAP of the
// part inside, and one equal to the request yields nothing.
TEST_F(SmTest, MadviseSplitsOnlyNullVasAtBoundaries) {
  Add(0, 10, a_.get(), 0);
  Gpuva* n1 = Add(10, 30, nullptr, 0);
  Gpuva* n2 = Add(30, 50, nullptr, 0);
  auto ops = MadviseOpsCreate(*vm_, {{20, 20, nullptr, 0}});
  ASSERT_TRUE(ops.ok());
  EXPECT_EQ(*ops, (Ops{OpRemap{OpMap{10, 10, nullptr, 0}, std::nullopt, {n1, false}},
                       OpMap{20, 10, nullptr, 0},
                       OpRemap{std::nullopt, OpMap{40, 10, nullptr, 10}, {n2, false}},
                       OpMap{30, 10, nullptr, 0}}));
  auto none = MadviseOpsCreate(*vm_, {{10, 20, nullptr, 0}});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto skip = MadviseOpsCreate(*vm_, {{0, 5, nullptr, 0}});
  ASSERT_TRUE(skip.ok());
  EXPECT_TRUE(skip->empty());
}

}  // namespace
}  // namespace vm
