#include "fence/fence_chain.h"

#include <algorithm>
#include <typeinfo>
#include <utility>

#include "base/check.h"
#include "fence/fence_context.h"
#include "fence/internal/chain_index.h"

namespace fence {

std::shared_ptr<FenceChain> FenceChain::Create(FenceRef prev, FenceRef fence, uint64_t seqno) {
  UDRM_CHECK(fence != nullptr, "FenceChain::Create needs a fence");
  FenceChain* prev_chain = Cast(prev.get());
  uint64_t context;
  uint64_t prev_seqno = 0;
  if (prev_chain != nullptr && SeqnoIsLater(seqno, prev->seqno(), SeqnoWidth::k64)) {
    context = prev->context();
    prev_seqno = prev->seqno();
  } else {
    context = FenceContext::Allocate();
    if (prev_chain != nullptr) seqno = std::max(prev->seqno(), seqno);
  }
  return std::make_shared<FenceChain>(std::move(prev), std::move(fence), context, seqno,
                                      prev_seqno);
}

FenceChain::FenceChain(FenceRef prev, FenceRef fence, uint64_t context, uint64_t seqno,
                       uint64_t prev_seqno)
    : Fence(context, seqno, SeqnoWidth::k64),
      index_(JoinIndex(prev.get(), context, seqno, this)),
      prev_(std::move(prev)),
      prev_seqno_(prev_seqno),
      fence_(std::move(fence)) {}

std::shared_ptr<internal::ChainIndex> FenceChain::JoinIndex(Fence* prev, uint64_t context,
                                                            uint64_t seqno, FenceChain* self) {
  FenceChain* prev_chain = Cast(prev);
  // Only the run's newest node extends it: an index stays one line of predecessors.
  if (prev_chain != nullptr && prev->context() == context && prev->seqno() < seqno &&
      prev_chain->index_->AppendAfter(prev, seqno, self)) {
    return prev_chain->index_;
  }
  auto index = std::make_shared<internal::ChainIndex>();
  index->Start(seqno, self);
  return index;
}

FenceRef FenceChain::IndexedAtOrAfter(uint64_t seqno) const {
  // Every node in range is older than this one, so its make_shared has returned.
  return index_->FirstLiveAtOrAfter(seqno, this->seqno());
}

FenceChain::~FenceChain() {
  index_->Erase(seqno(), this);
  // Release the links one by one: recursion through ~FenceChain would overflow the stack on a
  // long timeline. Only links nobody else holds are ours to take apart.
  FenceRef prev;
  {
    absl::MutexLock l(&prev_mu_);
    prev = std::move(prev_);
  }
  while (prev != nullptr && prev.use_count() == 1) {
    FenceChain* link = Cast(prev.get());
    if (link == nullptr) break;
    FenceRef next;
    {
      absl::MutexLock l(&link->prev_mu_);
      next = std::move(link->prev_);
    }
    prev = std::move(next);
  }
}

FenceChain* FenceChain::Cast(Fence* f) {
  // FenceChain is final: an exact type test is the dynamic_cast, without its class-graph walk.
  return f != nullptr && typeid(*f) == typeid(FenceChain) ? static_cast<FenceChain*>(f) : nullptr;
}

const FenceRef& FenceChain::Contained(const FenceRef& f) {
  FenceChain* chain = Cast(f.get());
  return chain != nullptr ? chain->fence_ : f;
}

FenceRef FenceChain::prev() const {
  absl::MutexLock l(&prev_mu_);
  return prev_;
}

FenceRef FenceChain::Walk(const FenceRef& f) {
  FenceChain* chain = Cast(f.get());
  if (chain == nullptr) return nullptr;
  for (;;) {
    FenceRef prev = chain->prev();
    if (prev == nullptr) return nullptr;
    FenceChain* prev_chain = Cast(prev.get());
    FenceRef replacement;
    if (prev_chain != nullptr) {
      if (!prev_chain->fence_->IsSignaled()) return prev;
      replacement = prev_chain->prev();
    } else if (!prev->IsSignaled()) {
      return prev;
    }
    // cmpxchg(&chain->prev, prev, replacement): another walker may have unhooked it already.
    FenceRef dropped;
    {
      absl::MutexLock l(&chain->prev_mu_);
      if (chain->prev_ == prev) {
        dropped = std::move(chain->prev_);
        chain->prev_ = std::move(replacement);
      }
    }
  }
}

absl::Status FenceChain::FindSeqno(FenceRef* f, uint64_t seqno) {
  if (seqno == 0) return absl::OkStatus();
  FenceChain* head = Cast(f->get());
  if (head == nullptr || head->seqno() < seqno) {
    return absl::InvalidArgumentError("timeline point not yet submitted");
  }
  const uint64_t context = head->context();
  // The kernel's loop visits the head, then each earlier link whose fence is unsignalled, and
  // stops at the first one outside the context, not a chain, or with prev_seqno < seqno. Within
  // a run seqnos increase, so the node T that signals `seqno` (prev_seqno < seqno <= its seqno)
  // is the stop unless it has signalled; then the stop is the first unsignalled link before it.
  // Every node between the lookup's start and T has prev_seqno >= seqno and cannot stop it, so
  // the index jumps straight to T, or, if T is gone (GC unhooked and freed it, so it had
  // signalled), to the oldest live node after it, and Walk() goes on from there.
  FenceRef it;             // the visited node once the walk has left the head
  const FenceRef* at = f;  // the visited node: the head (*f, not copied), then `it`
  for (;;) {
    FenceChain* link = Cast(at->get());
    if (link == nullptr || (*at)->context() != context || link->prev_seqno_ < seqno) break;
    FenceRef from = link->IndexedAtOrAfter(seqno);
    if (from == nullptr) {
      // Nothing live in this run from T on: T is in an earlier run (this one branched off it),
      // or T and every node between it and *at were unhooked (signalled) and freed.
      it = Walk(*at);
    } else {
      auto* found = static_cast<FenceChain*>(from.get());
      if (found->prev_seqno_ < seqno && !found->fence_->IsSignaled()) {
        *f = std::move(from);
        return absl::OkStatus();
      }
      it = Walk(from);
    }
    at = &it;
    if (it == nullptr) break;
  }
  if (at == f) return absl::OkStatus();
  *f = std::move(it);
  return absl::OkStatus();
}

bool FenceChain::PollSignaled() {
  for (FenceRef it = shared_from_this(); it != nullptr; it = Walk(it)) {
    if (!Contained(it)->IsSignaled()) return false;
  }
  return true;
}

bool FenceChain::ArmNextLink() {
  FenceRef head = shared_from_this();
  for (FenceRef it = head; it != nullptr; it = Walk(it)) {
    self_while_armed_ = head;
    if (Contained(it)->AddCallback(&cb_, [this](Fence&) { OnLinkSignaled(); }).ok()) return true;
  }
  self_while_armed_ = nullptr;
  return false;
}

bool FenceChain::EnableSignalingHook() { return ArmNextLink(); }

void FenceChain::OnLinkSignaled() {
  FenceRef keep_alive = std::move(self_while_armed_);
  if (!ArmNextLink()) Signal();
}

}  // namespace fence
