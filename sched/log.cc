#include "sched/log.h"

#include <utility>

namespace sched::log {

void SetSink(Sink sink) { ::udrm::log::SetSink(std::move(sink)); }

void Write(Level level, std::string_view message) {
  ::udrm::log::Write(level, "udrm.sched", message);
}

}  // namespace sched::log
