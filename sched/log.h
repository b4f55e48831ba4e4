// sched::log — where the library's log messages go.
//
// What it is: udrm logs rarely (contract-adjacent misuse, truncated credits, a cancelled armed
// job) and never with a scheduler lock held. By default messages go to spdlog, through a
// library-owned logger named "udrm.sched" cloned from spdlog's default logger. An embedder that
// has its own logging installs a Sink instead; SetSink(nullptr) returns to spdlog.
//
// Thread-safety: SetSink and Write may be called from any thread, concurrently. A message being
// written while SetSink runs goes to the old sink or the new one, never to neither; a sink that
// was replaced may still be running a message when SetSink returns (it stays alive until that
// call returns). The sink is called on the logging thread and must not call back into udrm.
#ifndef UDRM_SCHED_LOG_H_
#define UDRM_SCHED_LOG_H_

#include <functional>
#include <string>
#include <string_view>

namespace sched::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// One message: its level, the logger's name ("udrm.sched") and the formatted text.
using Sink = std::function<void(Level level, std::string_view logger, std::string_view message)>;

// Installs `sink` for every later message; null restores the default (spdlog).
void SetSink(Sink sink);

// Sends one formatted message to the current sink.
void Write(Level level, std::string_view message);

}  // namespace sched::log

#endif  // UDRM_SCHED_LOG_H_
