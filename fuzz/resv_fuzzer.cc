// Fuzz target: fence::Resv operations — lock/unlock through a ww acquire context, Reserve,
// AddFence of fences of four contexts with every usage, Replace, Copy from a second Resv, and
// signalling — checked against a model of what was added. After every step, for every usage U:
// the unsignalled fences the Resv reports with usage <= U (GetFences) were added with that usage
// (or copied, or made a replacement), and cover everything added with usage <= U that is still
// unsignalled (a fence of its context at least as late, with a usage as strong); TestSignaled
// and GetSingleton agree with them. Contract calls (AddFence without a reservation) are never
// made.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "fence/fence_context.h"
#include "fence/resv.h"
#include "fuzz/input.h"
#include "ww/ww_mutex.h"

namespace {

constexpr char kTarget[] = "resv_fuzzer";
constexpr int kContexts = 4;

struct Model {
  std::vector<fence::Resv::Entry> added;  // every (fence, usage) the Resv may report
};

void CheckResv(const fence::Resv& r, const Model& m) {
  for (int u = 0; u < 4; ++u) {
    const auto usage = static_cast<fence::ResvUsage>(u);
    const std::vector<fence::Resv::Entry> got = r.GetFences(usage);
    for (const auto& e : got) {
      FUZZ_CHECK(kTarget, e.usage <= usage && !e.fence->IsSignaledFlag());
      FUZZ_CHECK(kTarget, std::any_of(m.added.begin(), m.added.end(), [&](const auto& a) {
                   return a.fence == e.fence && a.usage == e.usage;
                 }));
    }
    bool pending = false;
    for (const auto& a : m.added) {
      if (a.usage > usage || a.fence->IsSignaledFlag()) continue;
      pending = true;
      FUZZ_CHECK(kTarget, std::any_of(got.begin(), got.end(), [&](const auto& e) {
                   return e.fence->context() == a.fence->context() &&
                          e.fence->seqno() >= a.fence->seqno() && e.usage <= a.usage;
                 }));
    }
    FUZZ_CHECK(kTarget, r.TestSignaled(usage) == !pending);
    const fence::FenceRef single = r.GetSingleton(usage);
    FUZZ_CHECK(kTarget, (single == nullptr) == got.empty());
    if (got.size() == 1) FUZZ_CHECK(kTarget, single == got[0].fence);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  fence::Resv resv[2];
  Model model[2];
  fence::FenceContext ctx[kContexts];
  std::vector<fence::FenceRef> unsignalled[kContexts];  // per context, in seqno order
  std::optional<ww::WwAcquireContext> ticket;
  bool locked[2] = {false, false};
  auto signal_next = [&](int c) {
    if (unsignalled[c].empty()) return;
    fence::FenceRef f = unsignalled[c].front();
    unsignalled[c].erase(unsignalled[c].begin());
    if (in.Below(4) == 0) f->SetError(absl::AbortedError("fuzz"));
    FUZZ_CHECK(kTarget, f->Signal());
  };
  for (int n = 0; n < 300 && !in.empty(); ++n) {
    const uint8_t op = in.Byte() % 7;
    const int i = in.Below(2);
    fence::Resv& r = resv[i];
    if (op == 0) {  // lock / unlock
      if (locked[i]) {
        r.Unlock();
        locked[i] = false;
        if (!locked[0] && !locked[1]) ticket.reset();
      } else {
        if (!ticket) ticket.emplace(&fence::ReservationWwClass());
        FUZZ_CHECK(kTarget, r.Lock(&*ticket).ok());  // one context, no contention
        locked[i] = true;
      }
    } else if (op == 1 && locked[i]) {  // reserve
      const size_t k = in.Below(4);
      const absl::Status s = r.Reserve(k);
      FUZZ_CHECK(kTarget, s.ok() == (k > 0));
    } else if (op == 2 && locked[i] && r.reserved() > 0) {  // add a fence
      const int c = in.Below(kContexts);
      fence::FenceRef f;
      if (!unsignalled[c].empty() && in.Bool()) {
        f = unsignalled[c][in.Below(static_cast<uint32_t>(unsignalled[c].size()))];
      } else {
        f = ctx[c].NewFence();
        unsignalled[c].push_back(f);
      }
      const auto usage = static_cast<fence::ResvUsage>(in.Below(4));
      const size_t before = r.reserved();
      r.AddFence(f, usage);
      FUZZ_CHECK(kTarget, r.reserved() == before - 1);
      model[i].added.push_back({f, usage});
    } else if (op == 3) {
      signal_next(in.Below(kContexts));
    } else if (op == 4 && locked[i]) {  // replace every fence of a context
      const int c = in.Below(kContexts);
      const int d = in.Below(kContexts);
      fence::FenceRef repl = ctx[d].NewFence();
      unsignalled[d].push_back(repl);
      const auto usage = static_cast<fence::ResvUsage>(in.Below(4));
      bool had = false;
      r.ForEachLocked(fence::ResvUsage::kBookkeep, [&](const fence::FenceRef& f, fence::ResvUsage) {
        had |= f->context() == ctx[c].context();
      });
      r.Replace(ctx[c].context(), repl, usage);
      std::erase_if(model[i].added,
                    [&](const auto& a) { return a.fence->context() == ctx[c].context(); });
      if (had) model[i].added.push_back({repl, usage});
    } else if (op == 5 && locked[i]) {  // copy the other one's fences
      r.Copy(resv[1 - i]);
      model[i] = model[1 - i];
    } else if (op == 6 && locked[i]) {  // locked writer view sees what readers see
      size_t locked_pending = 0;
      r.ForEachLocked(fence::ResvUsage::kBookkeep, [&](const fence::FenceRef& f, fence::ResvUsage) {
        locked_pending += !f->IsSignaledFlag();
      });
      FUZZ_CHECK(kTarget, locked_pending == r.GetFences(fence::ResvUsage::kBookkeep).size());
    }
    CheckResv(resv[0], model[0]);
    CheckResv(resv[1], model[1]);
  }
  for (int i = 0; i < 2; ++i) {
    if (locked[i]) resv[i].Unlock();
  }
  ticket.reset();
  for (int c = 0; c < kContexts; ++c) {
    while (!unsignalled[c].empty()) signal_next(c);
  }
  CheckResv(resv[0], model[0]);
  CheckResv(resv[1], model[1]);
  return 0;
}
