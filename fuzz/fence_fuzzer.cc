// Fuzz target: fence chain and merge operations on three timelines, single-threaded, each step
// followed by the invariants: a chain node is signalled exactly when every fence up to its point
// is; a merge or array is signalled exactly when all its members are, and an array carries an
// error exactly when a member does; unwrapping a chain yields every unsignalled fence of it and
// nothing foreign; FindSeqno answers null only for a signalled point; every callback runs once.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "fence/fence_array.h"
#include "fence/fence_chain.h"
#include "fence/fence_context.h"
#include "fence/unwrap.h"
#include "fuzz/input.h"

namespace {

constexpr char kTarget[] = "fence_fuzzer";
constexpr int kTimelines = 3;
constexpr size_t kMaxPoints = 16;

struct Timeline {
  fence::FenceContext ctx{"fuzz"};
  std::vector<fence::FenceRef> base;
  std::vector<fence::FenceRef> chain;
  size_t signalled = 0;
  bool UpTo(size_t n) const { return signalled >= n; }
};

struct Counted {
  fence::FenceRef fence;
  std::vector<fence::FenceRef> leaves;  // what it waits for
  bool array = false;
  fence::FenceCallback cb;
  int runs = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  Timeline tl[kTimelines];
  std::vector<std::unique_ptr<Counted>> counted;
  auto all_signalled = [](const std::vector<fence::FenceRef>& v) {
    return std::all_of(v.begin(), v.end(), [](const auto& f) { return f->IsSignaledFlag(); });
  };
  auto check_all = [&] {
    for (const Timeline& t : tl) {
      for (size_t i = 0; i < t.chain.size(); ++i) {
        FUZZ_CHECK(kTarget, t.chain[i]->IsSignaled() == t.UpTo(i + 1));
      }
    }
    for (const auto& c : counted) {
      FUZZ_CHECK(kTarget, c->fence->IsSignaled() == all_signalled(c->leaves));
      FUZZ_CHECK(kTarget, c->runs == (c->fence->IsSignaledFlag() ? 1 : 0));
      if (c->array && c->fence->IsSignaledFlag()) {
        const bool any = std::any_of(c->leaves.begin(), c->leaves.end(),
                                     [](const auto& f) { return !f->error().ok(); });
        FUZZ_CHECK(kTarget, any == !c->fence->error().ok());
      }
    }
  };
  auto pick = [&](std::vector<fence::FenceRef>* leaves) -> fence::FenceRef {
    Timeline& t = tl[in.Below(kTimelines)];
    if (t.base.empty()) return nullptr;
    const size_t i = in.Below(static_cast<uint32_t>(t.base.size()));
    if (in.Bool()) {
      leaves->push_back(t.base[i]);
      return t.base[i];
    }
    for (size_t k = 0; k <= i; ++k) leaves->push_back(t.base[k]);
    return t.chain[i];
  };
  for (int n = 0; n < 200 && !in.empty(); ++n) {
    const uint8_t op = in.Byte() % 7;
    Timeline& t = tl[in.Below(kTimelines)];
    if (op == 0 && t.base.size() < kMaxPoints) {  // extend a timeline
      t.base.push_back(t.ctx.NewFence());
      t.chain.push_back(fence::FenceChain::Create(t.chain.empty() ? nullptr : t.chain.back(),
                                                  t.base.back(), t.base.size()));
    } else if (op == 1 && t.signalled < t.base.size()) {  // signal the next point
      fence::Fence& f = *t.base[t.signalled++];
      if (in.Below(4) == 0) f.SetError(absl::AbortedError("fuzz"));
      FUZZ_CHECK(kTarget, f.Signal());
      FUZZ_CHECK(kTarget, !f.Signal());
    } else if (op == 2 || op == 3) {  // merge (2) or array of leaves (3)
      auto c = std::make_unique<Counted>();
      c->array = op == 3;
      std::vector<fence::FenceRef> members;
      const int k = 1 + static_cast<int>(in.Below(4));
      for (int j = 0; j < k; ++j) {
        std::vector<fence::FenceRef> leaves;
        fence::FenceRef f = pick(&leaves);
        if (f == nullptr || (c->array && fence::FenceChain::Cast(f.get()) != nullptr)) continue;
        members.push_back(f);
        c->leaves.insert(c->leaves.end(), leaves.begin(), leaves.end());
      }
      if (members.empty()) continue;
      if (c->array) {
        auto a = fence::FenceArray::Create(members, fence::FenceContext::Allocate(), 1);
        FUZZ_CHECK(kTarget, a.ok());
        c->fence = *a;
      } else {
        c->fence = fence::Merge(members);
      }
      Counted* cp = c.get();
      const absl::Status s = c->fence->AddCallback(&c->cb, [cp](fence::Fence&) { ++cp->runs; });
      if (fence::IsAlreadySignaled(s)) {
        cp->runs = 1;
      } else {
        FUZZ_CHECK(kTarget, s.ok());
      }
      counted.push_back(std::move(c));
    } else if (op == 4 && !t.chain.empty()) {  // unwrap
      const std::vector<fence::FenceRef> leaves = fence::UnwrapLeaves(t.chain.back());
      for (const auto& l : leaves) {
        FUZZ_CHECK(kTarget, std::find(t.base.begin(), t.base.end(), l) != t.base.end());
      }
      for (size_t i = t.signalled; i < t.base.size(); ++i) {
        FUZZ_CHECK(kTarget, std::find(leaves.begin(), leaves.end(), t.base[i]) != leaves.end());
      }
    } else if (op == 5 && !t.chain.empty()) {  // find a point
      const uint64_t s = 1 + in.Below(static_cast<uint32_t>(t.chain.size()));
      fence::FenceRef f = t.chain.back();
      FUZZ_CHECK(kTarget, fence::FenceChain::FindSeqno(&f, s).ok());
      if (f == nullptr) FUZZ_CHECK(kTarget, t.UpTo(s));
      if (f != nullptr) FUZZ_CHECK(kTarget, fence::FenceChain::Cast(f.get()) != nullptr);
      fence::FenceRef beyond = t.chain.back();
      FUZZ_CHECK(kTarget, !fence::FenceChain::FindSeqno(&beyond, t.chain.size() + 1).ok());
    } else if (op == 6 && !t.chain.empty()) {  // walk
      fence::FenceRef f = fence::FenceChain::Walk(t.chain.back());
      if (f != nullptr) FUZZ_CHECK(kTarget, f->context() == t.chain.back()->context());
    }
    check_all();
  }
  for (Timeline& t : tl) {
    while (t.signalled < t.base.size()) t.base[t.signalled++]->Signal();
  }
  check_all();
  return 0;
}
