#include "sched/trace.h"

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

void ChromeTraceSink::Record(const TraceRecord& r) {
  absl::MutexLock l(&mu_);
  events_.push_back(Stored{r.event, std::string(r.scheduler), r.context, r.seqno, r.dep_context,
                           r.dep_seqno, absl::ToUnixMicros(r.time)});
}

size_t ChromeTraceSink::size() const {
  absl::MutexLock l(&mu_);
  return events_.size();
}

std::string ChromeTraceSink::ToJson() const {
  absl::MutexLock l(&mu_);
  std::string out = "{\"traceEvents\":[";
  for (size_t i = 0; i < events_.size(); ++i) {
    const Stored& e = events_[i];
    const std::string name(TraceEventName(e.event));
    absl::StrAppend(&out, i == 0 ? "" : ",", "{\"name\":\"", name, "\",\"ph\":\"i\",");
    absl::StrAppend(&out, "\"s\":\"t\",\"pid\":1,\"tid\":\"", e.scheduler, "\",\"ts\":");
    absl::StrAppend(&out, e.micros, ",\"args\":{\"fence\":\"", e.context, ":", e.seqno, "\"");
    if (e.event == TraceEvent::kAddDependency) {
      absl::StrAppend(&out, ",\"dep\":\"", e.dep_context, ":", e.dep_seqno, "\"");
    }
    absl::StrAppend(&out, "}}");
  }
  absl::StrAppend(&out, "]}");
  return out;
}

}  // namespace sched
