#include "sched/log.h"

#include <memory>

#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"

namespace sched::log {
namespace {

constexpr std::string_view kLogger = "udrm.sched";

spdlog::logger& SpdLogger() {
  // Never destroyed: messages may come from static destructors.
  static auto* logger =
      new std::shared_ptr<spdlog::logger>(spdlog::default_logger()->clone(std::string(kLogger)));
  return **logger;
}

void ToSpdlog(Level level, std::string_view, std::string_view message) {
  spdlog::level::level_enum l = spdlog::level::warn;
  switch (level) {
    case Level::kDebug: l = spdlog::level::debug; break;
    case Level::kInfo: l = spdlog::level::info; break;
    case Level::kWarn: l = spdlog::level::warn; break;
    case Level::kError: l = spdlog::level::err; break;
  }
  SpdLogger().log(l, "{}", message);
}

struct Installed {
  absl::Mutex mu;
  std::shared_ptr<const Sink> sink ABSL_GUARDED_BY(mu);  // null: spdlog
};

Installed& Current() {
  static Installed* installed = new Installed;  // never destroyed, as above
  return *installed;
}

}  // namespace

void SetSink(Sink sink) {
  auto next = sink ? std::make_shared<const Sink>(std::move(sink)) : nullptr;
  Installed& c = Current();
  absl::MutexLock l(&c.mu);
  c.sink.swap(next);
  // `next` (the old sink) is released after the lock, by the last Write still holding it.
}

void Write(Level level, std::string_view message) {
  std::shared_ptr<const Sink> sink;
  {
    Installed& c = Current();
    absl::MutexLock l(&c.mu);
    sink = c.sink;
  }
  if (sink == nullptr) {
    ToSpdlog(level, kLogger, message);
  } else {
    (*sink)(level, kLogger, message);
  }
}

}  // namespace sched::log
