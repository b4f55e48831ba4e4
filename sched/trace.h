// sched::TraceSink — drm_sched's tracepoints, as a sink interface.
//
// Five events, each keyed by the job's finished fence as context:seqno (the kernel's
// tracepoints use the fence too): kQueue (pushed to its entity), kAddDependency (the scheduler
// waits for `dep`), kUnschedulable (the chosen job waits for credits), kRun (handed to the
// backend), kDone (its hardware fence signalled). A scheduler without a sink pays one branch per
// event. Sinks are called from the submitting thread, the scheduler's executor and the threads
// that signal hardware fences — never with a scheduler lock held — so Record must be thread-safe
// and must not call back into the scheduler.
#ifndef UDRM_SCHED_TRACE_H_
#define UDRM_SCHED_TRACE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sched {

enum class TraceEvent { kQueue, kAddDependency, kUnschedulable, kRun, kDone };
std::string_view TraceEventName(TraceEvent e);

struct TraceRecord {
  TraceEvent event;
  std::string_view scheduler;  // valid during Record only
  uint64_t context = 0;        // the job's finished fence
  uint64_t seqno = 0;
  uint64_t dep_context = 0;    // kAddDependency: the fence waited for
  uint64_t dep_seqno = 0;
  absl::Time time;
};

class TraceSink {
 public:
  virtual ~TraceSink() = default;
  virtual void Record(const TraceRecord& record) = 0;
};

// Keeps the most recent events in a ring buffer of fixed capacity (memory is bounded: older
// events are overwritten and counted in dropped()) and writes them in the Chrome/Perfetto JSON
// trace format (chrome://tracing, ui.perfetto.dev): one instant event per record, one track per
// scheduler, plus one duration event ("ph":"X", named "drm_sched_job") per job whose run and
// done events are both retained, spanning the job's time on the hardware. Every string written
// is JSON-escaped (quotes, backslashes, control characters); other bytes pass through, so names
// should be UTF-8. Thread-safe; Record takes a lock and copies the scheduler name.
class ChromeTraceSink final : public TraceSink {
 public:
  static constexpr size_t kDefaultCapacity = 1 << 16;
  // Keeps at most `capacity` events (at least 1).
  explicit ChromeTraceSink(size_t capacity = kDefaultCapacity);

  void Record(const TraceRecord& record) override ABSL_LOCKS_EXCLUDED(mu_);
  // The retained events, oldest first. Does not clear them.
  std::string ToJson() const ABSL_LOCKS_EXCLUDED(mu_);
  // Events retained (at most capacity()) and events overwritten so far.
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t dropped() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t capacity() const { return capacity_; }

 private:
  struct Stored {
    TraceEvent event;
    std::string scheduler;
    uint64_t context, seqno, dep_context, dep_seqno;
    int64_t micros;
  };
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::vector<Stored> ring_ ABSL_GUARDED_BY(mu_);  // grows to capacity_, then wraps
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;           // the slot the next event overwrites when full
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sched

#endif  // UDRM_SCHED_TRACE_H_
