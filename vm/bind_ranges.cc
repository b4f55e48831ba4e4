#include "vm/bind_ranges.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "base/check.h"
#include "vm/internal/failslab.h"

namespace vm {

void BindRanges::Collect(std::span<const AddrRange> ranges, std::vector<fence::FenceRef>& deps,
                         bool* saw_error) {
  if (map_.size() >= sweep_at_) Sweep();
  for (const AddrRange& r : ranges) {
    const uint64_t lo = r.addr;
    const uint64_t hi = r.addr + r.range;
    auto it = map_.upper_bound(lo);
    if (it != map_.begin() && std::prev(it)->second.end > lo) --it;
    while (it != map_.end() && it->first < hi) {
      const fence::FenceRef& f = it->second.fence;
      if (f->IsSignaledFlag()) {
        if (!f->error().ok()) {
          *saw_error = true;
          ++it;
          continue;  // kept: later binds over it must see the error too
        }
        it = map_.erase(it);
        continue;
      }
      if (std::find(deps.begin(), deps.end(), f) == deps.end()) deps.push_back(f);
      ++it;
    }
  }
}

absl::Status BindRanges::Reserve(size_t ranges, Nodes& nodes) {
  if (internal::ShouldFailAlloc("range tracker")) {
    return absl::ResourceExhaustedError("bind: allocating range-tracker nodes failed");
  }
  nodes.nodes_.reserve(nodes.nodes_.size() + 2 * ranges);
  Map scratch;
  for (size_t i = 0; i < 2 * ranges; ++i) {
    scratch.emplace(i, Span{});
    nodes.nodes_.push_back(scratch.extract(scratch.begin()));
  }
  return absl::OkStatus();
}

void BindRanges::Record(std::span<const AddrRange> ranges, const fence::FenceRef& fence,
                        Nodes& nodes) {
  for (const AddrRange& r : ranges) RecordOne(r, fence, nodes);
}

void BindRanges::RecordOne(AddrRange r, const fence::FenceRef& fence, Nodes& nodes) {
  const uint64_t lo = r.addr;
  const uint64_t hi = r.addr + r.range;
  auto take = [&]() -> Map::node_type {
    UDRM_CHECK(!nodes.nodes_.empty(), "BindRanges::Record: nodes not reserved");
    Map::node_type n = std::move(nodes.nodes_.back());
    nodes.nodes_.pop_back();
    return n;
  };
  auto it = map_.upper_bound(lo);
  if (it != map_.begin() && std::prev(it)->second.end > lo) --it;
  if (it != map_.end() && it->first < lo) {  // starts before the range: keep its head
    if (it->second.end > hi) {               // [s, e) contains [lo, hi): split off the tail [hi, e)
      Map::node_type tail = take();
      tail.key() = hi;
      tail.mapped() = Span{it->second.end, it->second.fence};
      UDRM_CHECK(map_.insert(std::move(tail)).inserted, "BindRanges: overlapping intervals");
    }
    it->second.end = lo;  // keep the head [s, lo)
    ++it;
  }
  while (it != map_.end() && it->first < hi) {
    if (it->second.end > hi) {  // sticks out at the end: re-key it to [hi, e), no allocation
      Map::node_type n = map_.extract(it);
      n.key() = hi;
      UDRM_CHECK(map_.insert(std::move(n)).inserted, "BindRanges: overlapping intervals");
      break;
    }
    it = map_.erase(it);  // covered: the new job depends on it, transitively on what it waited
  }
  Map::node_type n = take();
  n.key() = lo;
  n.mapped() = Span{hi, fence};
  UDRM_CHECK(map_.insert(std::move(n)).inserted, "BindRanges: overlapping intervals");
}

fence::Fence* BindRanges::LastAt(uint64_t addr) const {
  auto it = map_.upper_bound(addr);
  if (it == map_.begin()) return nullptr;
  --it;
  return it->second.end > addr ? it->second.fence.get() : nullptr;
}

void BindRanges::Sweep() {
  for (auto it = map_.begin(); it != map_.end();) {
    const fence::FenceRef& f = it->second.fence;
    it = f->IsSignaledFlag() && f->error().ok() ? map_.erase(it) : std::next(it);
  }
  sweep_at_ = 2 * map_.size() + 64;
}

}  // namespace vm
