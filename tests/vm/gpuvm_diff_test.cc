// Randomized differential test of split/merge + apply against a plain per-page model.
//
// Requests: random SmMap (random BO of three, or sparse; random offset) and SmUnmap on a 64-page
// VM whose last 8 pages are the kernel node, so some requests are refused. Every op list is
// checked against the rules (at most two REMAPs, first/last; exactly one MAP, last, equal to the
// request; keep = "same BO, contiguous"; prev/next pieces), applied (list form, or callback form
// applying immediately, alternately; every fourth unmap that removes whole VAs only through one
// Gpuvm::RemoveRun), and the tree is compared with the model after every request.
// The run is kSeeds instances of one parameterized test, instance i seeded with GPUVM_DIFF_SEED + i
// (default base 20261202), so that Bazel's shard_count spreads them over shards: 10^6 requests in
// all by default (10^5 per seed), 4*10^4 under sanitizers (4*10^3 per seed), to stay within the
// suite's time budget. GPUVM_DIFF_REQUESTS sets the requests per seed.
// A failure prints the seed and request index; to reproduce, run instance 0 with that seed:
//   GPUVM_DIFF_SEED=<seed> <test> --gtest_filter='*RandomRequestsMatchModel/0'
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <random>

#include "base/sanitizers.h"
#include "tests/vm/gpuvm_test_util.h"
#include "vm/gpuvm_ops.h"

namespace vm {
namespace {

constexpr uint64_t kPages = 64;
constexpr uint64_t kKernelStart = 56;
constexpr uint64_t kBoPages = 128;

// The model: for every page, whether it is mapped, by what, and where its VA starts.
struct Page {
  bool mapped = false;
  Bo* bo = nullptr;
  uint64_t offset = 0;  // of this page in the BO
  uint64_t va_start = 0;
};

struct Model {
  Page pages[kPages];

  // Pages after `end` of a VA that crossed `end` now start a VA at `end`.
  void CutAt(uint64_t end) {
    if (end >= kPages || !pages[end].mapped || pages[end].va_start >= end) return;
    const uint64_t old = pages[end].va_start;
    for (uint64_t p = end; p < kPages && pages[p].mapped && pages[p].va_start == old; ++p) {
      pages[p].va_start = end;
    }
  }
  void Map(const OpMap& r) {
    CutAt(r.addr + r.range);
    for (uint64_t i = 0; i < r.range; ++i) {
      pages[r.addr + i] = {true, r.bo, r.offset + i, r.addr};
    }
  }
  void Unmap(uint64_t addr, uint64_t range) {
    CutAt(addr + range);
    for (uint64_t i = 0; i < range; ++i) pages[addr + i] = {};
  }
};

uint64_t EnvOr(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : def;
}

// Callback form applying every step at once.
class ApplyNow final : public SmSteps {
 public:
  ApplyNow(Gpuvm& vm, VaPool& pool) : vm_(vm), pool_(pool) {}
  absl::Status StepMap(const OpMap& op) override {
    ops.push_back(op);
    ApplyMap(vm_, pool_.New(), op);
    return absl::OkStatus();
  }
  absl::Status StepRemap(const OpRemap& op) override {
    ops.push_back(op);
    ApplyRemap(vm_, op.prev ? pool_.New() : nullptr, op.next ? pool_.New() : nullptr, op);
    return absl::OkStatus();
  }
  absl::Status StepUnmap(const OpUnmap& op) override {
    ops.push_back(op);
    ApplyUnmap(vm_, op);
    return absl::OkStatus();
  }
  Ops ops;

 private:
  Gpuvm& vm_;
  VaPool& pool_;
};

// A VA's description before the ops ran (the ops point at VAs that may be freed by then).
struct OldVa {
  uint64_t addr, end;
  Bo* bo;
  uint64_t offset;
};

// Checks an op list against the rules. `olds` maps the unmapped VAs, captured before applying.
std::string CheckRules(const Ops& ops, const std::vector<OldVa>& olds, bool is_map,
                       const OpMap& req) {
  size_t remaps = 0, maps = 0;
  const uint64_t req_end = req.addr + req.range;
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    if (auto* m = std::get_if<OpMap>(&op)) {
      ++maps;
      if (!(*m == req) || i + 1 != ops.size()) return "MAP not last or not the request";
      continue;
    }
    const OldVa& v = olds[i];
    // keep: the old VA maps the request's BO contiguously with it.
    const bool keep =
        is_map && v.bo != nullptr && v.bo == req.bo && v.offset + req.addr == req.offset + v.addr;
    if (auto* u = std::get_if<OpUnmap>(&op)) {
      if (u->keep != keep) return "UNMAP keep flag";
      if (v.addr < req.addr || v.end > req_end) return "UNMAP of a VA sticking out";
      continue;
    }
    const auto& r = std::get<OpRemap>(op);
    ++remaps;
    if (r.unmap.keep != keep) return "REMAP keep flag";
    if (i != 0 && i + 2 != ops.size() + (is_map ? 0 : 1)) return "REMAP not first or last";
    const bool want_prev = v.addr < req.addr, want_next = v.end > req_end;
    if (r.prev.has_value() != want_prev || r.next.has_value() != want_next) return "REMAP pieces";
    if (r.prev && !(*r.prev == OpMap{v.addr, req.addr - v.addr, v.bo, v.offset})) return "prev";
    if (r.next &&
        !(*r.next == OpMap{req_end, v.end - req_end, v.bo, v.offset + (req_end - v.addr)})) {
      return "next";
    }
  }
  if (remaps > 2) return "more than two REMAPs";
  if (maps != (is_map ? 1u : 0u)) return "MAP count";
  return "";
}

std::string CompareWithModel(const Gpuvm& vm, const Model& m) {
  uint64_t covered = 0;
  for (Gpuva* va : vm.All()) {
    if (va == &vm.kernel_node()) continue;
    for (uint64_t p = va->addr; p < va->end(); ++p) {
      const Page& pg = m.pages[p];
      if (!pg.mapped || pg.va_start != va->addr || pg.bo != va->bo ||
          (va->bo != nullptr && pg.offset != va->offset + (p - va->addr))) {
        return "tree and model differ at page " + std::to_string(p);
      }
    }
    if (va->end() < kPages && m.pages[va->end()].mapped &&
        m.pages[va->end()].va_start == va->addr) {
      return "model VA longer than tree VA at " + std::to_string(va->addr);
    }
    covered += va->range;
  }
  uint64_t mapped = 0;
  for (const Page& pg : m.pages) mapped += pg.mapped;
  return covered == mapped ? "" : "mapped page counts differ";
}

constexpr int kSeeds = 10;

class GpuvmDiffTest : public ::testing::TestWithParam<int> {};

// 10^6 random requests over all instances, checked after each against the model (see the file
// comment).
TEST_P(GpuvmDiffTest, RandomRequestsMatchModel) {
  const uint64_t requests = EnvOr("GPUVM_DIFF_REQUESTS", UDRM_SANITIZER ? 4000 : 100000);
  const uint64_t seed = EnvOr("GPUVM_DIFF_SEED", 20261202) + static_cast<uint64_t>(GetParam());
  std::printf("seed %llu, %llu requests\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(requests));
  std::mt19937_64 rng(seed);
  auto vm = *Gpuvm::Create("diff", 0, kPages, kKernelStart, kPages - kKernelStart);
  Ref<Bo> bos[3] = {Bo::Create(kBoPages), Bo::Create(kBoPages), Bo::Create(kBoPages)};
  VaPool pool;
  Model model;
  uint64_t refused = 0, ops_total = 0, runs_removed = 0;
  for (uint64_t n = 0; n < requests; ++n) {
    // Short requests, mostly, so that VAs pile up and split.
    const uint64_t addr = rng() % kPages;
    const uint64_t range = 1 + (rng() % 4 == 0 ? rng() % kPages : rng() % 8);
    const bool is_map = rng() % 3 != 0;
    const int which = static_cast<int>(rng() % 4);
    Bo* bo = which == 3 ? nullptr : bos[which].get();
    // Offsets often contiguous with the neighbour (keep = true cases).
    uint64_t offset = rng() % 2 == 0 ? addr : rng() % kBoPages;
    if (bo == nullptr) offset = 0;
    if (offset + range > kBoPages) offset = 0;
    const OpMap req{addr, range, bo, offset};
    const bool valid = addr + range <= kKernelStart;

    absl::StatusOr<Ops> ops = is_map ? SmMapOpsCreate(*vm, MapRequest{req})
                                     : SmUnmapOpsCreate(*vm, addr, range);
    ASSERT_EQ(ops.ok(), valid) << "seed " << seed << " request " << n << ": " << ops.status();
    if (!ops.ok()) {
      ++refused;
      continue;
    }
    std::vector<OldVa> olds;
    for (const Op& op : *ops) {
      const Gpuva* v = nullptr;
      if (auto* u = std::get_if<OpUnmap>(&op)) v = u->va;
      if (auto* r = std::get_if<OpRemap>(&op)) v = r->unmap.va;
      olds.push_back(v ? OldVa{v->addr, v->end(), v->bo, v->offset} : OldVa{});
    }
    const std::string rule = CheckRules(*ops, olds, is_map, req);
    ASSERT_EQ(rule, "") << "seed " << seed << " request " << n;
    ops_total += ops->size();
    // An unmap that removes whole VAs only: every fourth request through one RemoveRun (the
    // VAs an unmap removes are consecutive in the tree), else op by op.
    std::vector<Gpuva*> run;
    for (const Op& op : *ops) {
      if (auto* u = std::get_if<OpUnmap>(&op)) run.push_back(u->va);
    }
    if (n % 4 == 0 && !is_map && run.size() == ops->size()) {
      vm->RemoveRun(run);
      ++runs_removed;
    } else if (n % 2 == 0) {
      ApplyOps(*vm, *ops, pool);
    } else {
      ApplyNow live(*vm, pool);
      ASSERT_TRUE((is_map ? SmMap(*vm, MapRequest{req}, live) : SmUnmap(*vm, addr, range, live)).ok());
      ASSERT_EQ(live.ops.size(), ops->size()) << "seed " << seed << " request " << n;
    }
    if (is_map) {
      model.Map(req);
    } else {
      model.Unmap(addr, range);
    }
    ASSERT_EQ(CompareWithModel(*vm, model), "") << "seed " << seed << " request " << n;
    if (n % 1024 == 0) pool.FreeUnused();
  }
  RecordProperty("requests", std::to_string(requests));
  EXPECT_GT(refused, 0u);
  EXPECT_GT(ops_total, requests);
  EXPECT_GT(runs_removed, 0u);
  VaPool::Clear(*vm);
}

INSTANTIATE_TEST_SUITE_P(Seeds, GpuvmDiffTest, ::testing::Range(0, kSeeds));

}  // namespace
}  // namespace vm
