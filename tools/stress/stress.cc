#include "tools/stress/stress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace stress {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t HashName(std::string_view s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

Options current;
std::atomic<int64_t> deadline_ns{0};

struct Reporter {
  absl::Mutex mu;
  std::thread thread;
  absl::Notification* stop = nullptr;
};
Reporter reporter;

void Report(const std::string& label, absl::Time start, absl::Time end, absl::Duration stall,
            absl::Notification* stop) {
  const bool tty = isatty(fileno(stderr)) != 0;
  const absl::Duration period = tty ? absl::Milliseconds(250) : absl::Seconds(5);
  int64_t last_ops = Progress::ops();
  absl::Time last_change = absl::Now();
  while (!stop->WaitForNotificationWithTimeout(period)) {
    const absl::Time now = absl::Now();
    const int64_t ops = Progress::ops();
    if (ops != last_ops) {
      last_ops = ops;
      last_change = now;
    } else if (now - last_change > stall) {
      Fail(absl::StrFormat("no operation completed for %s (deadlock or lost wake-up?)",
                           absl::FormatDuration(stall)));
    }
    const double total = absl::ToDoubleSeconds(end - start);
    const double done = std::min(absl::ToDoubleSeconds(now - start), total);
    const double rate = ops / std::max(absl::ToDoubleSeconds(now - start), 1e-3);
    if (tty) {
      const int width = 30;
      const int fill = total > 0 ? static_cast<int>(width * done / total) : width;
      std::fprintf(stderr, "\r%-7s [%s%s] %3.0fs/%.0fs  %lld ops  %.0f/s   ", label.c_str(),
                   std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(), done,
                   total, static_cast<long long>(ops), rate);
    } else {
      std::fprintf(stderr, "udrm_stress: %s %.0fs/%.0fs %lld ops %.0f/s\n", label.c_str(), done,
                   total, static_cast<long long>(ops), rate);
    }
    std::fflush(stderr);
  }
  if (tty) std::fprintf(stderr, "\n");
}

}  // namespace

std::atomic<int64_t> Progress::ops_{0};

std::mt19937_64 Options::Rng(uint64_t stream) const {
  return std::mt19937_64(SplitMix64(seed ^ SplitMix64(HashName(scenario) + stream)));
}

const Options& CurrentOptions() { return current; }
void SetCurrentOptions(const Options& options) { current = options; }

void Fail(std::string_view invariant) {
  const Options& o = current;
  std::fprintf(stderr,
               "\nudrm_stress: VIOLATION in scenario %s, seed %llu: %.*s\n"
               "udrm_stress: rerun the same workload with: ./bazelw run //tools:udrm_stress -- "
               "--scenario=%s --seed=%llu --threads=%d --duration=%s --drop_armed=%d\n",
               o.scenario.c_str(), static_cast<unsigned long long>(o.seed),
               static_cast<int>(invariant.size()), invariant.data(), o.scenario.c_str(),
               static_cast<unsigned long long>(o.seed), o.threads,
               absl::FormatDuration(o.duration).c_str(), o.drop_armed ? 1 : 0);
  std::fflush(stderr);
  std::fflush(stdout);
  std::_Exit(1);
}

bool Running() {
  return absl::GetCurrentTimeNanos() < deadline_ns.load(std::memory_order_relaxed);
}
void SetDeadline(absl::Time end) {
  deadline_ns.store(absl::ToUnixNanos(end), std::memory_order_relaxed);
}

void Probe::Finish(fence::Fence& f, std::string_view what, absl::Duration timeout) {
  if (!f.Wait(timeout).ok()) {
    Fail(absl::StrFormat("%s did not signal within %s", std::string(what), absl::FormatDuration(timeout)));
  }
  if (f.RemoveCallback(&node)) Fail(absl::StrFormat("%s signalled but kept our callback", std::string(what)));
  const int n = runs.load(std::memory_order_relaxed);
  if (n != 1) Fail(absl::StrFormat("%s: its callback ran %d times, not once", std::string(what), n));
}

void Progress::Start(std::string label, absl::Time end, absl::Duration stall) {
  absl::MutexLock l(&reporter.mu);
  ops_.store(0, std::memory_order_relaxed);
  reporter.stop = new absl::Notification;
  reporter.thread = std::thread(Report, std::move(label), absl::Now(), end, stall, reporter.stop);
}

void Progress::Stop() {
  absl::MutexLock l(&reporter.mu);
  reporter.stop->Notify();
  reporter.thread.join();
  delete reporter.stop;
  reporter.stop = nullptr;
}

}  // namespace stress
