#include "base/status_tag.h"

#include "absl/strings/cord.h"
#include "base/check.h"

namespace udrm {
namespace {

constexpr absl::string_view kTypeUrl = "type.udrm/udrm.StatusTag";

}  // namespace

absl::Status WithTag(absl::Status status, StatusTag tag) {
  UDRM_CHECK(!status.ok(), "WithTag on an OK status");
  status.SetPayload(kTypeUrl,
                    absl::Cord(absl::string_view(reinterpret_cast<const char*>(&tag), 1)));
  return status;
}

bool HasTag(const absl::Status& status, StatusTag tag) {
  if (status.ok()) return false;
  auto payload = status.GetPayload(kTypeUrl);
  return payload.has_value() &&
         *payload == absl::string_view(reinterpret_cast<const char*>(&tag), 1);
}

}  // namespace udrm
