#include "base/log.h"

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"

namespace udrm::log {
namespace {

struct Installed {
  absl::Mutex mu;
  std::shared_ptr<const Sink> sink ABSL_GUARDED_BY(mu);  // null: spdlog
  // The default sink's loggers, by name, created on first use.
  absl::flat_hash_map<std::string, std::shared_ptr<spdlog::logger>> loggers ABSL_GUARDED_BY(mu);
};

Installed& Current() {
  static Installed* installed = new Installed;  // never destroyed: messages may come from static
  return *installed;                            // destructors
}

std::shared_ptr<spdlog::logger> SpdLogger(Installed& c, std::string_view name)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu) {
  auto [it, inserted] = c.loggers.try_emplace(std::string(name));  // logging is rare
  if (inserted) it->second = spdlog::default_logger()->clone(std::string(name));
  return it->second;
}

spdlog::level::level_enum ToSpdlogLevel(Level level) {
  switch (level) {
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarn: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
  }
  return spdlog::level::warn;
}

}  // namespace

void SetSink(Sink sink) {
  auto next = sink ? std::make_shared<const Sink>(std::move(sink)) : nullptr;
  Installed& c = Current();
  absl::MutexLock l(&c.mu);
  c.sink.swap(next);
  // `next` (the old sink) is released after the lock, by the last Write still holding it.
}

void Write(Level level, std::string_view logger, std::string_view message) {
  std::shared_ptr<const Sink> sink;
  std::shared_ptr<spdlog::logger> spd;
  {
    Installed& c = Current();
    absl::MutexLock l(&c.mu);
    sink = c.sink;
    if (sink == nullptr) spd = SpdLogger(c, logger);
  }
  if (sink != nullptr) {
    (*sink)(level, logger, message);
  } else {
    spd->log(ToSpdlogLevel(level), "{}", message);
  }
}

}  // namespace udrm::log
