// udrm::log — where every udrm layer's log messages go.
//
// What it is: udrm logs rarely (contract-adjacent misuse, truncated credits, a cancelled armed
// job, a fence released with callbacks pending) and never with a scheduler lock held. Each layer
// writes under its own logger name ("udrm.fence", "udrm.sched", ...). By default messages go to
// spdlog, through one library-owned logger per name, cloned from spdlog's default logger. An
// embedder that has its own logging installs a Sink instead; SetSink(nullptr) returns to spdlog.
// The sink is process-wide: one SetSink() call captures every layer (sched/log.h forwards here).
//
// Thread-safety: SetSink and Write may be called from any thread, concurrently. A message being
// written while SetSink runs goes to the old sink or the new one, never to neither; a sink that
// was replaced may still be running a message when SetSink returns (it stays alive until that
// call returns). The sink is called on the logging thread, with no udrm lock held by the logging
// code, and must not call back into udrm. Neither call blocks beyond one short critical section
// (and the sink or spdlog itself).
#ifndef UDRM_BASE_LOG_H_
#define UDRM_BASE_LOG_H_

#include <functional>
#include <string_view>

namespace udrm::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// One message: its level, the logger's name (e.g. "udrm.fence") and the formatted text.
using Sink = std::function<void(Level level, std::string_view logger, std::string_view message)>;

// Installs `sink` for every later message of every layer; null restores the default (spdlog).
void SetSink(Sink sink);

// Sends one formatted message from logger `logger` to the current sink. `logger` names a layer
// and should be a literal: the default sink keeps one spdlog logger per distinct name.
void Write(Level level, std::string_view logger, std::string_view message);

}  // namespace udrm::log

#endif  // UDRM_BASE_LOG_H_
