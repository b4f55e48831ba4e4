// vm::BindRanges, the per-range tracker of pending bind work: checked against a page model.
#include "vm/bind_ranges.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "fence/fence_context.h"

namespace vm {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPages = 128;

// Random ranges recorded one after another (some starting exactly where an interval starts, some
// inside one, some covering several): each page's fence is the last recorded over it, and
// Collect returns exactly the distinct unsignalled fences over a range. (Before the fix, a range
// starting exactly at an interval's start left an empty interval and lost the new one.)
TEST(BindRangesTest, LastRecordedFencePerPage) {
  fence::FenceContext ctx;
  BindRanges ranges;
  std::vector<fence::FenceRef> model(kPages);
  std::mt19937 rng(99);
  for (int n = 0; n < 3000; ++n) {
    const uint64_t first = rng() % kPages;
    const uint64_t len = 1 + rng() % std::min<uint64_t>(16, kPages - first);
    const AddrRange r{first * kPage, len * kPage};
    std::vector<fence::FenceRef> deps;
    bool error = false;
    ranges.Collect({&r, 1}, deps, &error);
    ASSERT_FALSE(error);
    std::vector<fence::Fence*> want;
    for (uint64_t p = first; p < first + len; ++p) {
      fence::Fence* f = model[p].get();
      if (f != nullptr && !f->IsSignaledFlag() &&
          std::find(want.begin(), want.end(), f) == want.end()) {
        want.push_back(f);
      }
    }
    std::vector<fence::Fence*> got;
    for (auto& d : deps) got.push_back(d.get());
    std::sort(want.begin(), want.end());
    std::sort(got.begin(), got.end());
    ASSERT_EQ(got, want) << "record " << n;
    BindRanges::Nodes nodes;
    ASSERT_TRUE(ranges.Reserve(1, nodes).ok());
    fence::FenceRef f = ctx.NewFence();
    ranges.Record({&r, 1}, f, nodes);
    for (uint64_t p = first; p < first + len; ++p) model[p] = f;
    if (rng() % 3 == 0) {  // some work finishes
      const fence::FenceRef& done = model[rng() % kPages];
      if (done != nullptr && !done->IsSignaledFlag()) done->Signal();
    }
    for (uint64_t p = 0; p < kPages; ++p) {
      fence::Fence* at = ranges.LastAt(p * kPage);
      if (at != nullptr) {
        ASSERT_EQ(at, model[p].get()) << "record " << n << " page " << p;
      }
      if (model[p] != nullptr && !model[p]->IsSignaledFlag()) {
        ASSERT_EQ(at, model[p].get()) << "record " << n << " page " << p;
      }
    }
  }
}

}  // namespace
}  // namespace vm
