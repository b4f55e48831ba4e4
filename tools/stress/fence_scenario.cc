// Scenario "fence": chains, merges, arrays and unwrap under concurrent signalling.
//
// Every thread owns one timeline at a time: kLen plain fences, each wrapped in a FenceChain node
// continuing the timeline. It extends the timeline and signals its fences (in seqno order, some
// with an error) at random moments; once all are signalled it checks the chain and starts a new
// one. Between those steps it works on random timelines of every thread (published on a board):
// unwraps a chain, finds a seqno, merges fences, builds arrays, waits, and races AddCallback /
// RemoveCallback against the signallers.
// Invariants: every fence signals exactly once (our callback counts, Signal() reports who
// signalled); a chain node signals only after every fence up to its seqno; a merge or array
// signals only after all its members, with an error exactly when a member had one (arrays);
// unwrap yields every fence that was unsignalled before and after it, and nothing foreign;
// FindSeqno's answer is null only when the point has signalled; RemoveCallback's answer agrees
// with whether the callback ran.
#include <algorithm>
#include <array>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "fence/fence_array.h"
#include "fence/fence_chain.h"
#include "fence/fence_context.h"
#include "fence/unwrap.h"
#include "tools/stress/stress.h"

namespace stress {
namespace {

constexpr size_t kLen = 24;    // fences per timeline
constexpr size_t kBoard = 16;  // timelines visible to every thread

// One thread's timeline. Slots are written once by the owner before `built` publishes them.
struct Timeline {
  fence::FenceContext ctx{"stress_fence"};
  std::array<fence::FenceRef, kLen> base;
  std::array<std::shared_ptr<fence::FenceChain>, kLen> chain;
  std::array<Probe, kLen> chain_probe;
  std::atomic<size_t> built{0};
  size_t signalled = 0;  // owner only

  // True if base[0..n) have all signalled.
  bool SignalledUpTo(size_t n) const {
    for (size_t i = 0; i < n; ++i) {
      if (!base[i]->IsSignaledFlag()) return false;
    }
    return true;
  }
};

struct Board {
  absl::Mutex mu;
  std::vector<std::shared_ptr<Timeline>> timelines ABSL_GUARDED_BY(mu);

  void Publish(std::shared_ptr<Timeline> t, std::mt19937_64& rng) {
    absl::MutexLock l(&mu);
    if (timelines.size() < kBoard) {
      timelines.push_back(std::move(t));
    } else {
      timelines[Below(rng, kBoard)] = std::move(t);
    }
  }
  std::shared_ptr<Timeline> Pick(std::mt19937_64& rng) {
    absl::MutexLock l(&mu);
    if (timelines.empty()) return nullptr;
    return timelines[Below(rng, timelines.size())];
  }
};

// A pending check on a merge or array: the members must have signalled when it does.
struct Check2 {
  fence::FenceRef fence;
  // Members as (timeline, points up to which it must have signalled); for arrays also leaves.
  std::vector<std::pair<std::shared_ptr<Timeline>, size_t>> upto;
  std::vector<fence::FenceRef> leaves;
  bool is_array = false;
  Probe probe;
};

void VerifyCheck(Check2& c) {
  for (auto& [t, n] : c.upto) {
    Check(t->SignalledUpTo(n), "fence: a merge signalled before one of its members");
  }
  bool any_error = false;
  for (const auto& l : c.leaves) {
    Check(l->IsSignaledFlag(), "fence: a merge or array signalled before one of its members");
    any_error |= !l->error().ok();
  }
  if (!c.is_array) return;
  Check(any_error == !c.fence->error().ok(),
        "fence: an array's error does not match its members' errors");
}

class Worker {
 public:
  Worker(const Options& o, int id, Board& board) : rng_(o.Rng(id)), board_(board) {}

  void Loop() {
    NewTimeline();
    while (Running()) {
      Step();
      Progress::Add();
      Retire(false);
    }
    while (own_->signalled < own_->built.load()) SignalNext();
    FinishTimeline();
  }
  // After every worker has stopped: every pending check must have run exactly once.
  void Drain() { Retire(true); }

 private:
  void Step() {
    switch (Below(rng_, 10)) {
      case 0: case 1: Extend(); break;
      case 2: case 3: SignalNext(); break;
      case 4: UnwrapCheck(); break;
      case 5: FindSeqnoCheck(); break;
      case 6: MergeCheck(); break;
      case 7: ArrayCheck(); break;
      default: CallbackRace(); break;
    }
    if (own_->signalled == kLen) {
      FinishTimeline();
      NewTimeline();
    }
  }

  void NewTimeline() {
    own_ = std::make_shared<Timeline>();
    board_.Publish(own_, rng_);
  }

  void Extend() {
    Timeline& t = *own_;
    const size_t i = t.built.load(std::memory_order_relaxed);
    if (i == kLen) return;
    t.base[i] = t.ctx.NewFence();
    t.chain[i] = fence::FenceChain::Create(i == 0 ? nullptr : t.chain[i - 1], t.base[i], i + 1);
    Timeline* tp = &t;
    const bool armed = t.chain_probe[i].Arm(*t.chain[i], [tp, i](fence::Fence&) {
      Check(tp->SignalledUpTo(i + 1), "fence: a chain node signalled before an earlier fence");
    });
    Check(armed, "fence: a new chain node of an unsignalled fence was already signalled");
    t.built.store(i + 1, std::memory_order_release);
  }

  void SignalNext() {
    Timeline& t = *own_;
    if (t.signalled == t.built.load(std::memory_order_relaxed)) return;
    fence::Fence& f = *t.base[t.signalled++];
    if (OneIn(rng_, 16)) f.SetError(absl::AbortedError("stress"));
    Check(f.Signal(), "fence: a fence was signalled by someone other than its producer");
    Check(!f.Signal(), "fence: a second Signal() reported signalling again");
  }

  void FinishTimeline() {
    Timeline& t = *own_;
    for (size_t i = 0; i < t.built.load(); ++i) {
      t.chain_probe[i].Finish(*t.chain[i], "fence: a chain node (after all its fences signalled)");
    }
  }

  void UnwrapCheck() {
    std::shared_ptr<Timeline> t = board_.Pick(rng_);
    const size_t n = t ? t->built.load(std::memory_order_acquire) : 0;
    if (n == 0) return;
    std::vector<bool> before(n);
    for (size_t i = 0; i < n; ++i) before[i] = !t->base[i]->IsSignaledFlag();
    const std::vector<fence::FenceRef> leaves = fence::UnwrapLeaves(t->chain[n - 1]);
    for (const auto& l : leaves) {
      Check(std::find(t->base.begin(), t->base.begin() + n, l) != t->base.begin() + n,
            "fence: unwrap yielded a fence that is not in the chain");
    }
    for (size_t i = 0; i < n; ++i) {
      if (before[i] && !t->base[i]->IsSignaledFlag()) {
        Check(std::find(leaves.begin(), leaves.end(), t->base[i]) != leaves.end(),
              "fence: unwrap skipped an unsignalled fence");
      }
    }
  }

  void FindSeqnoCheck() {
    std::shared_ptr<Timeline> t = board_.Pick(rng_);
    const size_t n = t ? t->built.load(std::memory_order_acquire) : 0;
    if (n == 0) return;
    const uint64_t s = 1 + Below(rng_, n);
    fence::FenceRef f = t->chain[n - 1];
    Check(fence::FenceChain::FindSeqno(&f, s).ok(), "fence: FindSeqno refused a submitted point");
    if (f == nullptr) {
      Check(t->SignalledUpTo(s), "fence: FindSeqno returned null for a point not signalled");
      return;
    }
    Check(fence::FenceChain::Cast(f.get()) != nullptr && f->context() == t->chain[0]->context(),
          "fence: FindSeqno returned a node of another timeline");
    if (f->seqno() >= s && f->IsSignaledFlag()) {
      Check(t->SignalledUpTo(s), "fence: the node FindSeqno found signalled before its point");
    }
  }

  // A random fence for merging: a plain fence or a chain node, and what it waits for.
  bool RandomMember(fence::FenceRef* f, std::shared_ptr<Timeline>* t, size_t* upto,
                    bool leaves_only) {
    *t = board_.Pick(rng_);
    const size_t n = *t ? (*t)->built.load(std::memory_order_acquire) : 0;
    if (n == 0) return false;
    const size_t i = Below(rng_, n);
    if (leaves_only || OneIn(rng_, 2)) {
      *f = (*t)->base[i];
      *upto = 0;  // checked as a leaf
    } else {
      *f = (*t)->chain[i];
      *upto = i + 1;
    }
    return true;
  }

  void MergeCheck() {
    auto c = std::make_unique<Check2>();
    std::vector<fence::FenceRef> in;
    const int k = 1 + static_cast<int>(Below(rng_, 4));
    for (int j = 0; j < k; ++j) {
      fence::FenceRef f;
      std::shared_ptr<Timeline> t;
      size_t upto;
      if (!RandomMember(&f, &t, &upto, false)) return;
      in.push_back(f);
      if (upto != 0) {
        c->upto.emplace_back(std::move(t), upto);
      } else {
        c->leaves.push_back(f);
      }
    }
    c->fence = fence::Merge(in);
    Arm(std::move(c));
  }

  void ArrayCheck() {
    auto c = std::make_unique<Check2>();
    c->is_array = true;
    const int k = 1 + static_cast<int>(Below(rng_, 4));
    for (int j = 0; j < k; ++j) {
      fence::FenceRef f;
      std::shared_ptr<Timeline> t;
      size_t upto;
      if (!RandomMember(&f, &t, &upto, true)) return;
      c->leaves.push_back(f);
    }
    auto a = fence::FenceArray::Create(c->leaves, fence::FenceContext::Allocate(), 1);
    Check(a.ok(), "fence: FenceArray::Create refused plain fences");
    c->fence = *a;
    Arm(std::move(c));
  }

  void Arm(std::unique_ptr<Check2> c) {
    Check2* p = c.get();
    if (!c->probe.Arm(*c->fence, [p](fence::Fence&) { VerifyCheck(*p); })) {
      VerifyCheck(*c);
      return;
    }
    pending_.push_back(std::move(c));
  }

  // Retires checks whose fence has signalled (all of them when `all`).
  void Retire(bool all) {
    while (!pending_.empty()) {
      Check2& c = *pending_.front();
      if (!all && !c.fence->IsSignaledFlag()) return;
      c.probe.Finish(*c.fence, "fence: a merge/array (after all its members signalled)");
      pending_.pop_front();
    }
  }

  void CallbackRace() {
    std::shared_ptr<Timeline> t = board_.Pick(rng_);
    const size_t n = t ? t->built.load(std::memory_order_acquire) : 0;
    if (n == 0) return;
    fence::FenceRef f = t->base[Below(rng_, n)];
    Probe p;
    if (!p.Arm(*f, [](fence::Fence&) {})) {
      Check(p.runs.load() == 0, "fence: a refused callback ran");
      return;
    }
    if (OneIn(rng_, 2)) std::this_thread::yield();
    const bool removed = f->RemoveCallback(&p.node);
    Check(removed ? p.runs.load() == 0 : p.runs.load() == 1,
          "fence: RemoveCallback's answer disagrees with whether the callback ran");
    if (OneIn(rng_, 4)) {
      auto w = f->Wait(absl::Microseconds(200));
      Check(!w.ok() || f->IsSignaledFlag(), "fence: Wait succeeded on an unsignalled fence");
    }
  }

  std::mt19937_64 rng_;
  Board& board_;
  std::shared_ptr<Timeline> own_;
  std::deque<std::unique_ptr<Check2>> pending_;
};

}  // namespace

void RunFence(const Options& options) {
  Board board;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < options.threads; ++i) {
    workers.push_back(std::make_unique<Worker>(options, i, board));
  }
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->Loop(); });
  for (std::thread& t : threads) t.join();
  for (auto& w : workers) w->Drain();
  workers.clear();
  absl::MutexLock l(&board.mu);
  board.timelines.clear();
}

}  // namespace stress
