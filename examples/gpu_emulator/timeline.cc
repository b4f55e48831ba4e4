#include "examples/gpu_emulator/timeline.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gpu_emulator {

std::vector<int> PackRows(const std::vector<const Span*>& spans, int max_rows, int* rows_used) {
  std::vector<int> row(spans.size(), 0);
  std::vector<absl::Time> row_end;
  for (size_t i = 0; i < spans.size(); ++i) {
    int r = -1;
    for (size_t k = 0; k < row_end.size() && r < 0; ++k) {
      if (row_end[k] <= spans[i]->begin) r = static_cast<int>(k);
    }
    if (r < 0 && static_cast<int>(row_end.size()) < max_rows) {
      r = static_cast<int>(row_end.size());
      row_end.push_back(absl::InfinitePast());
    }
    if (r < 0) r = static_cast<int>(std::min_element(row_end.begin(), row_end.end()) - row_end.begin());
    row[i] = r;
    row_end[r] = std::max(row_end[r], spans[i]->end);
  }
  *rows_used = std::max<int>(1, static_cast<int>(row_end.size()));
  return row;
}

int Timeline::AddLane(std::string name) {
  absl::MutexLock l(&mu_);
  const int lane = static_cast<int>(lanes_.size());
  lane_by_name_.emplace(name, lane);
  lanes_.push_back(std::move(name));
  return lane;
}

void Timeline::AddLegend(std::string color, std::string label) {
  absl::MutexLock l(&mu_);
  legend_.push_back({std::move(color), std::move(label)});
}

bool Timeline::Full() {
  if (records_.size() + spans_.size() + marks_.size() < kMaxEvents) return false;
  ++dropped_;
  return true;
}

void Timeline::Record(const sched::TraceRecord& r) {
  if (r.event == sched::TraceEvent::kQueue) return;  // the context's own span starts there
  absl::MutexLock l(&mu_);
  const auto it = lane_by_name_.find(std::string(r.scheduler));
  if (it == lane_by_name_.end() || Full()) return;
  sched::TraceRecord copy = r;
  copy.scheduler = {};  // only valid during Record
  records_.emplace_back(it->second, copy);
}

void Timeline::NameJob(const fence::Fence& finished, std::string name, std::string detail,
                       std::string color, bool failed) {
  absl::MutexLock l(&mu_);
  names_[{finished.context(), finished.seqno()}] =
      Named{std::move(name), std::move(detail), std::move(color), failed};
}

void Timeline::AddSpan(Span s) {
  absl::MutexLock l(&mu_);
  if (!Full()) spans_.push_back(std::move(s));
}

void Timeline::AddMark(Mark m) {
  absl::MutexLock l(&mu_);
  if (!Full()) marks_.push_back(std::move(m));
}

uint64_t Timeline::dropped() const {
  absl::MutexLock l(&mu_);
  return dropped_;
}

Timeline::Snapshot Timeline::Build() const {
  absl::MutexLock l(&mu_);
  Snapshot out{lanes_, spans_, marks_, legend_};
  // In time order: records are stamped before the lock is taken, so they may arrive swapped.
  std::vector<std::pair<int, sched::TraceRecord>> records = records_;
  std::stable_sort(records.begin(), records.end(),
                   [](const auto& a, const auto& b) { return a.second.time < b.second.time; });
  // A job's span on its scheduler's lane: its time executing on the ring. The rings execute their
  // jobs in order, one at a time, so that is from max(its run, the lane's previous done) to its
  // done — how sched accounts a job's GPU time too.
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, absl::Time> run_at;
  std::vector<absl::Time> last_done(lanes_.size(), absl::InfinitePast());
  for (const auto& [lane, r] : records) {
    const std::pair<uint64_t, uint64_t> key{r.context, r.seqno};
    const auto named = names_.find(key);
    const std::string fence = absl::StrCat("fence ", r.context, ":", r.seqno);
    switch (r.event) {
      case sched::TraceEvent::kRun:
        run_at[key] = r.time;
        break;
      case sched::TraceEvent::kDone: {
        const auto run = run_at.find(key);
        if (run == run_at.end()) break;
        const absl::Time begin = std::max(run->second, last_done[lane]);
        last_done[lane] = r.time;
        Span s{lane, "job", fence, begin, r.time, "#888888", false};
        if (named != names_.end()) {
          s.name = named->second.name;
          s.detail = absl::StrCat(named->second.detail, ", ", fence, ", handed to the ring ",
                                  absl::FormatDuration(r.time - run->second), " before done");
          s.color = named->second.color;
          s.failed = named->second.failed;
        }
        out.spans.push_back(std::move(s));
        run_at.erase(run);
        break;
      }
      case sched::TraceEvent::kAddDependency:
        out.marks.push_back({lane, absl::StrCat("add_dep ", fence, " waits for ", r.dep_context,
                                                ":", r.dep_seqno),
                             r.time, false});
        break;
      case sched::TraceEvent::kUnschedulable:
        out.marks.push_back({lane, absl::StrCat("unschedulable ", fence), r.time, false});
        break;
      case sched::TraceEvent::kQueue:
        break;
    }
  }
  return out;
}

std::string Timeline::ToChromeJson() const {
  const Snapshot snap = Build();
  // Names and details are generated by this program (no quotes, backslashes or control
  // characters), so they are written as they are.
  std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  absl::StrAppend(&out, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,",
                  "\"args\":{\"name\":\"udrm gpu_emulator\"}}");
  // Tracks: lane l, row r is tid kRowsPerLane * l + r + 1.
  constexpr int kRowsPerLane = 1000;
  std::vector<std::vector<const Span*>> by_lane(snap.lanes.size());
  for (const Span& s : snap.spans) by_lane[s.lane].push_back(&s);
  for (size_t l = 0; l < snap.lanes.size(); ++l) {
    auto& spans = by_lane[l];
    std::stable_sort(spans.begin(), spans.end(),
                     [](const Span* a, const Span* b) { return a->begin < b->begin; });
    int rows = 1;
    const std::vector<int> row = PackRows(spans, kRowsPerLane, &rows);
    for (int r = 0; r < rows; ++r) {
      const int tid = kRowsPerLane * static_cast<int>(l) + r + 1;
      const std::string name = r == 0 ? snap.lanes[l] : absl::StrCat(snap.lanes[l], " #", r + 1);
      absl::StrAppend(&out, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":", tid,
                      ",\"args\":{\"name\":\"", name, "\"}}");
      absl::StrAppend(&out, ",\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":",
                      tid, ",\"args\":{\"sort_index\":", tid, "}}");
    }
    for (size_t i = 0; i < spans.size(); ++i) {
      const Span& s = *spans[i];
      absl::StrAppend(&out, ",\n",
                      absl::StrFormat("{\"name\":\"%s\",\"ph\":\"X\",\"pid\":1,\"tid\":%d,"
                                      "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"detail\":\"%s\","
                                      "\"failed\":%s}}",
                                      s.name, kRowsPerLane * s.lane + row[i] + 1, Micros(s.begin),
                                      std::max(0.0, Micros(s.end) - Micros(s.begin)), s.detail,
                                      s.failed ? "true" : "false"));
    }
  }
  for (const Mark& m : snap.marks) {
    absl::StrAppend(&out, ",\n",
                    absl::StrFormat("{\"name\":\"%s\",\"ph\":\"i\",\"s\":\"t\",\"pid\":1,"
                                    "\"tid\":%d,\"ts\":%.3f}",
                                    m.name, kRowsPerLane * m.lane + 1, Micros(m.at)));
  }
  out += "\n]}\n";
  return out;
}

}  // namespace gpu_emulator
