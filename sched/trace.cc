#include "sched/trace.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace sched {

std::string_view TraceEventName(TraceEvent e) {
  switch (e) {
    case TraceEvent::kQueue:
      return "drm_sched_job_queue";
    case TraceEvent::kAddDependency:
      return "drm_sched_job_add_dep";
    case TraceEvent::kUnschedulable:
      return "drm_sched_job_unschedulable";
    case TraceEvent::kRun:
      return "drm_sched_job_run";
    case TraceEvent::kDone:
      return "drm_sched_job_done";
  }
  return "unknown";
}

namespace {

// JSON string contents: quotes, backslashes and control characters escaped.
void AppendEscaped(std::string* out, std::string_view s) {
  for (const char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (u < 0x20) {
          absl::StrAppend(out, "\\u00", absl::Hex(u, absl::kZeroPad2));
        } else {
          out->push_back(c);
        }
    }
  }
}

}  // namespace

ChromeTraceSink::ChromeTraceSink(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

void ChromeTraceSink::Record(const TraceRecord& r) {
  Stored s{r.event, std::string(r.scheduler), r.context, r.seqno, r.dep_context, r.dep_seqno,
           absl::ToUnixMicros(r.time)};
  absl::MutexLock l(&mu_);
  if (ring_.size() < capacity_) {
    ring_.push_back(std::move(s));
    return;
  }
  ring_[next_] = std::move(s);
  next_ = (next_ + 1) % capacity_;
  ++dropped_;
}

size_t ChromeTraceSink::size() const {
  absl::MutexLock l(&mu_);
  return ring_.size();
}

uint64_t ChromeTraceSink::dropped() const {
  absl::MutexLock l(&mu_);
  return dropped_;
}

std::string ChromeTraceSink::ToJson() const {
  absl::MutexLock l(&mu_);
  std::string out = "{\"traceEvents\":[";
  // kRun time by job (context, seqno), for the duration event written at its kDone.
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, int64_t> run_at;
  bool first = true;
  auto begin_event = [&](std::string_view name, std::string_view ph, const Stored& e,
                         int64_t ts) {
    absl::StrAppend(&out, first ? "" : ",", "{\"name\":\"");
    first = false;
    AppendEscaped(&out, name);
    out.append("\",\"ph\":\"").append(ph).append("\",\"pid\":1,\"tid\":\"");
    AppendEscaped(&out, e.scheduler);
    absl::StrAppend(&out, "\",\"ts\":", ts);
  };
  for (size_t i = 0; i < ring_.size(); ++i) {
    const Stored& e = ring_[(next_ + i) % ring_.size()];  // oldest first
    begin_event(TraceEventName(e.event), "i", e, e.micros);
    absl::StrAppend(&out, ",\"s\":\"t\",\"args\":{\"fence\":\"", e.context, ":", e.seqno, "\"");
    if (e.event == TraceEvent::kAddDependency) {
      absl::StrAppend(&out, ",\"dep\":\"", e.dep_context, ":", e.dep_seqno, "\"");
    }
    absl::StrAppend(&out, "}}");
    const auto key = std::make_pair(e.context, e.seqno);
    if (e.event == TraceEvent::kRun) run_at[key] = e.micros;
    if (e.event != TraceEvent::kDone) continue;
    const auto it = run_at.find(key);
    if (it == run_at.end()) continue;  // its run event was overwritten
    begin_event("drm_sched_job", "X", e, it->second);
    absl::StrAppend(&out, ",\"dur\":", e.micros - it->second, ",\"args\":{\"fence\":\"",
                    e.context, ":", e.seqno, "\"}}");
    run_at.erase(it);
  }
  absl::StrAppend(&out, "]}");
  return out;
}

}  // namespace sched
