// gpu_emulator::Timeline — what happened when, for trace.json and timeline.svg.
//
// Lanes: one per scheduler (named as the scheduler, so its trace records land there) and one per
// context. A scheduler lane gets a span per job from sched's kRun to kDone (the job's time on the
// "hardware"), named and coloured by whoever submitted the job (NameJob); kAddDependency and
// kUnschedulable become instants. Contexts add their own spans (a job or bind from submission to
// its out-fence signalling) and marks (fence signals, timeouts, resets, faults).
//
// Output: ToChromeJson() is the Chrome trace-event format (ui.perfetto.dev, chrome://tracing):
// one process, a thread track per lane ("X" events for spans, "i" for instants, times in
// microseconds from the start) — and, since a track's slices must nest, extra tracks "<lane> #2",
// ... for spans that overlap without nesting (a context's iterations and binds overlap). ToSvg() (timeline_svg.cc) draws the same lanes as a picture.
//
// Thread-safety: every method may be called from any thread; Record is the sched::TraceSink
// entry point (called from scheduler threads and fence signallers, never under a scheduler lock).
// Memory: every event is kept (a 5 s run records a few tens of thousands); beyond kMaxEvents
// events are dropped and counted.
#ifndef UDRM_EXAMPLES_GPU_EMULATOR_TIMELINE_H_
#define UDRM_EXAMPLES_GPU_EMULATOR_TIMELINE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fence/fence.h"
#include "sched/trace.h"

namespace gpu_emulator {

struct Span {
  int lane = 0;
  std::string name;    // drawn inside the rect when it fits
  std::string detail;  // trace args / SVG tooltip
  absl::Time begin, end;
  std::string color;   // "#rrggbb"
  bool failed = false;  // finished with an error: outlined (dashed) in the picture
};

struct Mark {
  int lane = 0;
  std::string name;
  absl::Time at;
  bool alert = false;  // timeouts, resets, faults: a red line across the lane
};

// Rows for spans sorted by begin: each goes to the first row free at its begin, so spans that
// overlap in time get rows of their own — at most `max_rows`; beyond that a span shares the row
// that frees first. `*rows_used` is at least 1.
std::vector<int> PackRows(const std::vector<const Span*>& spans, int max_rows, int* rows_used);

class Timeline final : public sched::TraceSink {
 public:
  static constexpr size_t kMaxEvents = size_t{1} << 20;

  explicit Timeline(absl::Time start) : start_(start) {}

  // Lanes, in display order. Scheduler lanes must be added before the schedulers run.
  int AddLane(std::string name) ABSL_LOCKS_EXCLUDED(mu_);
  // A legend entry for the picture.
  void AddLegend(std::string color, std::string label) ABSL_LOCKS_EXCLUDED(mu_);

  // sched::TraceSink.
  void Record(const sched::TraceRecord& r) override ABSL_LOCKS_EXCLUDED(mu_);
  // Names the job whose finished fence is `finished` on its scheduler's lane. Any time before
  // the output is written.
  void NameJob(const fence::Fence& finished, std::string name, std::string detail,
               std::string color, bool failed) ABSL_LOCKS_EXCLUDED(mu_);
  void AddSpan(Span s) ABSL_LOCKS_EXCLUDED(mu_);
  void AddMark(Mark m) ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t dropped() const ABSL_LOCKS_EXCLUDED(mu_);
  std::string ToChromeJson() const ABSL_LOCKS_EXCLUDED(mu_);
  // Draws the lanes over [start, end of the last event]. `title` is plain text.
  std::string ToSvg(const std::string& title) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Legend {
    std::string color, label;
  };
  struct Named {
    std::string name, detail, color;
    bool failed;
  };
  // Everything drawn: the recorded spans plus the scheduler spans built from run/done pairs.
  struct Snapshot {
    std::vector<std::string> lanes;
    std::vector<Span> spans;
    std::vector<Mark> marks;
    std::vector<Legend> legend;
  };
  Snapshot Build() const ABSL_LOCKS_EXCLUDED(mu_);
  bool Full() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double Micros(absl::Time t) const { return absl::ToDoubleMicroseconds(t - start_); }

  const absl::Time start_;
  mutable absl::Mutex mu_;
  std::vector<std::string> lanes_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> lane_by_name_ ABSL_GUARDED_BY(mu_);
  std::vector<Legend> legend_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<int, sched::TraceRecord>> records_ ABSL_GUARDED_BY(mu_);  // lane, record
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, Named> names_ ABSL_GUARDED_BY(mu_);
  std::vector<Span> spans_ ABSL_GUARDED_BY(mu_);
  std::vector<Mark> marks_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace gpu_emulator

#endif  // UDRM_EXAMPLES_GPU_EMULATOR_TIMELINE_H_
