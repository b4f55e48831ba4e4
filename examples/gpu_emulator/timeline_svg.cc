// Timeline::ToSvg: the lanes as a picture — an overview of the whole run and a zoomed panel
// (around the first timeout/reset/fault if there was one, else the middle of the run), each with
// a time axis, one band per lane, spans as labelled rectangles (tooltips carry the details) and
// marks as ticks (fence signals, dependencies) or red lines (timeouts, resets, faults); a span
// that failed is outlined with a dashed black line.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "examples/gpu_emulator/timeline.h"

namespace gpu_emulator {
namespace {

constexpr double kWidth = 1600, kGutter = 120, kRight = 24;
constexpr double kRowH = 15, kLanePad = 5, kMarkStrip = 4, kAxisH = 22;
constexpr int kMaxRows = 4;

std::string Escape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// 1, 2 or 5 times a power of ten, giving about `n` ticks over `range_ms`.
double TickStep(double range_ms, int n) {
  const double raw = range_ms / n;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0}) {
    if (m * p >= raw) return m * p;
  }
  return 10 * p;
}

struct Panel {
  absl::Time t0, t1;
  double y;
  std::string heading;
};

class SvgWriter {
 public:
  SvgWriter(const std::vector<std::string>& lanes, const std::vector<Span>& spans,
            const std::vector<Mark>& marks, absl::Time start)
      : lanes_(lanes), marks_(marks), start_(start), by_lane_(lanes.size()) {
    for (const Span& s : spans) by_lane_[s.lane].push_back(&s);
    for (auto& v : by_lane_) {
      std::sort(v.begin(), v.end(), [](const Span* a, const Span* b) { return a->begin < b->begin; });
    }
  }

  // Draws one panel; returns its height.
  double Draw(const Panel& p, std::string& out) {
    const double span_ms = std::max(1e-3, absl::ToDoubleMilliseconds(p.t1 - p.t0));
    auto x_of = [&](absl::Time t) {
      const double ms = absl::ToDoubleMilliseconds(t - p.t0);
      return kGutter + std::clamp(ms / span_ms, 0.0, 1.0) * (kWidth - kGutter - kRight);
    };
    double y = p.y;
    absl::StrAppend(&out, absl::StrFormat(
                              "<text x=\"8\" y=\"%.1f\" class=\"h\">%s</text>\n", y + 14,
                              Escape(p.heading)));
    y += 20;
    const double axis_y = y + kAxisH;
    // Lane bands first, so the grid and the spans draw over them.
    std::vector<double> lane_y, lane_h;
    std::vector<std::vector<int>> rows(lanes_.size());
    double ly = axis_y + 4;
    std::vector<std::vector<const Span*>> visible(lanes_.size());
    for (size_t l = 0; l < lanes_.size(); ++l) {
      for (const Span* s : by_lane_[l]) {
        if (s->end >= p.t0 && s->begin <= p.t1) visible[l].push_back(s);
      }
      int n = 1;
      rows[l] = PackRows(visible[l], kMaxRows, &n);
      lane_y.push_back(ly);
      lane_h.push_back(n * kRowH + kMarkStrip + 2 * kLanePad);
      absl::StrAppend(&out, absl::StrFormat(
          "<rect x=\"0\" y=\"%.1f\" width=\"%.0f\" height=\"%.1f\" fill=\"%s\"/>\n"
          "<text x=\"8\" y=\"%.1f\" class=\"lane\">%s</text>\n",
          ly, kWidth, lane_h[l], l % 2 ? "#ffffff" : "#f1f3f5", ly + lane_h[l] / 2 + 4,
          Escape(lanes_[l])));
      ly += lane_h[l];
    }
    // Time axis and grid.
    const double step = TickStep(span_ms, 10);
    const double first = std::ceil(absl::ToDoubleMilliseconds(p.t0 - start_) / step) * step;
    for (double ms = first; start_ + absl::Milliseconds(ms) <= p.t1; ms += step) {
      const double x = x_of(start_ + absl::Milliseconds(ms));
      absl::StrAppend(&out, absl::StrFormat(
          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n"
          "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\">%s ms</text>\n",
          x, axis_y - 4, x, ly, x, axis_y - 8, absl::StrFormat("%g", ms)));
    }
    absl::StrAppend(&out, absl::StrFormat(
        "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" class=\"axis\"/>\n", kGutter,
        axis_y, kWidth - kRight, axis_y));
    // Spans.
    for (size_t l = 0; l < lanes_.size(); ++l) {
      for (size_t i = 0; i < visible[l].size(); ++i) {
        const Span& s = *visible[l][i];
        const double x0 = x_of(s.begin), x1 = std::max(x_of(s.end), x0 + 1.0);
        const double ry = lane_y[l] + kLanePad + rows[l][i] * kRowH;
        absl::StrAppend(&out, absl::StrFormat(
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"%s>"
            "<title>%s (%s) %.3f ms</title></rect>\n",
            x0, ry + 1, x1 - x0, kRowH - 2, s.color,
            s.failed ? " stroke=\"#000\" stroke-width=\"1.5\" stroke-dasharray=\"3,2\"" : "", Escape(s.name),
            Escape(s.detail), absl::ToDoubleMilliseconds(s.end - s.begin)));
        if ((x1 - x0) > 6.5 * s.name.size() + 4) {
          absl::StrAppend(&out, absl::StrFormat(
              "<text x=\"%.1f\" y=\"%.1f\" class=\"span\">%s</text>\n", x0 + 2, ry + kRowH - 4,
              Escape(s.name)));
        }
      }
    }
    // Marks: ticks in the lane's bottom strip; alerts as red lines with their label, labels that
    // would overlap the previous one on the lane moved one line down.
    std::vector<double> label_end(lanes_.size(), -1);
    std::vector<int> label_line(lanes_.size(), 0);
    for (const Mark& m : marks_) {
      if (m.at < p.t0 || m.at > p.t1) continue;
      const double x = x_of(m.at), top = lane_y[m.lane], bottom = top + lane_h[m.lane];
      if (m.alert) {
        int& line = label_line[m.lane];
        line = x + 3 < label_end[m.lane] ? line + 1 : 0;
        const double width = 6.2 * m.name.size();
        label_end[m.lane] = std::max(label_end[m.lane], x + 3 + width);
        const bool left = x + 3 + width > kWidth;  // would run off the picture: end at the line
        absl::StrAppend(&out, absl::StrFormat(
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"alert\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" class=\"alert\"%s>%s</text>\n",
            x, top, x, bottom, left ? x - 3 : x + 3, top + 11 + 11 * line,
            left ? " text-anchor=\"end\"" : "", Escape(m.name)));
      } else {
        absl::StrAppend(&out, absl::StrFormat(
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"mark\"/>\n", x,
            bottom - kLanePad - kMarkStrip, x, bottom - kLanePad));
      }
    }
    return ly - p.y + 10;
  }

 private:
  const std::vector<std::string>& lanes_;
  const std::vector<Mark>& marks_;
  const absl::Time start_;
  std::vector<std::vector<const Span*>> by_lane_;
};

}  // namespace

std::string Timeline::ToSvg(const std::string& title) const {
  const Snapshot snap = Build();
  absl::Time end = start_ + absl::Milliseconds(1);
  for (const Span& s : snap.spans) end = std::max(end, s.end);
  for (const Mark& m : snap.marks) end = std::max(end, m.at);
  // The zoomed window: around the alerts (a hang, its timeout and reset; a fault) of the first
  // second after the first one, or a tenth of the run (at most 100 ms) in its middle.
  absl::Time first = absl::InfiniteFuture(), last = absl::InfinitePast();
  std::string first_what;
  for (const Mark& m : snap.marks) {
    if (m.alert && m.at < first) {
      first = m.at;
      first_what = m.name;
    }
  }
  for (const Mark& m : snap.marks) {
    if (m.alert && m.at >= first && m.at - first < absl::Seconds(1)) last = std::max(last, m.at);
  }
  absl::Duration zoom = std::min((end - start_) / 10, absl::Milliseconds(100));
  absl::Time z0 = start_ + (end - start_) / 2 - zoom / 2;
  std::string center_what = "the middle of the run";
  if (first != absl::InfiniteFuture()) {
    zoom = std::max(absl::Milliseconds(100), (last - first) * 1.6);
    z0 = std::max(start_, first - (last - first) * 0.3 - absl::Milliseconds(20));
    center_what = first_what;
  }
  const Panel overview{start_, end, 56, "whole run"};
  std::string body;
  SvgWriter writer(snap.lanes, snap.spans, snap.marks, start_);
  const double h1 = writer.Draw(overview, body);
  const Panel detail{z0, z0 + zoom, overview.y + h1 + 10,
                     absl::StrFormat("zoom: %.1f ms from %.1f ms (%s)", absl::ToDoubleMilliseconds(zoom),
                                     absl::ToDoubleMilliseconds(z0 - start_), center_what)};
  const double h2 = writer.Draw(detail, body);
  // Legend, on one line under the title.
  std::string legend;
  double lx = 8;
  for (const Legend& e : snap.legend) {
    absl::StrAppend(&legend, absl::StrFormat(
        "<rect x=\"%.0f\" y=\"34\" width=\"12\" height=\"12\" fill=\"%s\"%s/>"
        "<text x=\"%.0f\" y=\"44\" class=\"legend\">%s</text>\n",
        lx, e.color,
        // A white entry is the sample of the failed-span outline.
        e.color == "#ffffff" ? " stroke=\"#000\" stroke-width=\"1.5\" stroke-dasharray=\"3,2\"" : "",
        lx + 16, Escape(e.label)));
    lx += 16 + 7.5 * e.label.size() + 14;
  }
  const double height = detail.y + h2 + 10;
  return absl::StrCat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
      absl::StrFormat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                      "viewBox=\"0 0 %.0f %.0f\">\n",
                      kWidth, height, kWidth, height),
      "<style>text{font-family:sans-serif;font-size:11px;fill:#222}"
      ".h{font-size:13px;font-weight:bold}.title{font-size:15px;font-weight:bold}"
      ".lane,.legend{font-size:12px}.tick{font-size:10px;fill:#555;text-anchor:middle}"
      ".span{font-size:10px;fill:#fff}.alert{stroke:#d62728;stroke-width:2;fill:#d62728}"
      "text.alert{stroke:none;font-weight:bold}.grid{stroke:#ccc;stroke-width:0.5}"
      ".axis{stroke:#444;stroke-width:1}.mark{stroke:#333;stroke-width:0.6}</style>\n",
      absl::StrFormat("<rect width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n", kWidth, height),
      "<text x=\"8\" y=\"20\" class=\"title\">", Escape(title), "</text>\n", legend, body,
      "</svg>\n");
}

}  // namespace gpu_emulator
