// udrm::StatusTag: a status is recognised by its tag, never by its message text.
#include "base/status_tag.h"

#include "gtest/gtest.h"

namespace udrm {
namespace {

// The tag survives a change of message; the same code and message without the tag is not tagged.
TEST(StatusTagTest, TagNotMessageIdentifiesTheError) {
  absl::Status tagged = WithTag(absl::AbortedError("back off"), StatusTag::kBackoff);
  EXPECT_TRUE(HasTag(tagged, StatusTag::kBackoff));
  EXPECT_FALSE(HasTag(tagged, StatusTag::kAlreadyHeld));

  absl::Status renamed(tagged.code(), "a reworded message");
  tagged.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& v) { renamed.SetPayload(url, v); });
  EXPECT_TRUE(HasTag(renamed, StatusTag::kBackoff));
  EXPECT_FALSE(HasTag(absl::AbortedError("back off"), StatusTag::kBackoff));
  EXPECT_FALSE(HasTag(absl::OkStatus(), StatusTag::kBackoff));
}

}  // namespace
}  // namespace udrm
