// sched::log — the scheduler's name for udrm's one log sink (base/log.h).
//
// What it is: a forwarding header kept for existing users. The sink is process-wide and shared
// by every layer: sched::log::SetSink(s) is udrm::log::SetSink(s), so a sink installed here also
// receives the fence layer's messages (logger "udrm.fence"); the scheduler's own messages use
// the logger name "udrm.sched". By default messages go to spdlog; SetSink(nullptr) returns to it.
//
// Thread-safety: as base/log.h — SetSink and Write may be called from any thread, concurrently;
// a replaced sink may still be running a message when SetSink returns. The sink is called on the
// logging thread and must not call back into udrm.
#ifndef UDRM_SCHED_LOG_H_
#define UDRM_SCHED_LOG_H_

#include <string_view>

#include "base/log.h"

namespace sched::log {

using Level = ::udrm::log::Level;
using Sink = ::udrm::log::Sink;

// udrm::log::SetSink: installs `sink` for every later message; null restores spdlog.
void SetSink(Sink sink);

// udrm::log::Write with the logger name "udrm.sched".
void Write(Level level, std::string_view message);

}  // namespace sched::log

#endif  // UDRM_SCHED_LOG_H_
