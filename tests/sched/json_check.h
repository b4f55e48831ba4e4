// A strict JSON validity check for tests (RFC 8259 grammar; no semantic checks): true if `s` is
// one JSON value with nothing after it.
#ifndef UDRM_TESTS_SCHED_JSON_CHECK_H_
#define UDRM_TESTS_SCHED_JSON_CHECK_H_

#include <cctype>
#include <string_view>

namespace sched::testing {

class JsonCheck {
 public:
  static bool IsValid(std::string_view s) {
    JsonCheck c(s);
    return c.Value(0) && (c.Ws(), c.i_ == s.size());
  }

 private:
  explicit JsonCheck(std::string_view s) : s_(s) {}
  bool At(char ch) const { return i_ < s_.size() && s_[i_] == ch; }
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool Lit(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool Value(int depth) {
    if (depth > 64) return false;
    Ws();
    if (i_ >= s_.size()) return false;
    switch (s_[i_]) {
      case '{': return Object(depth);
      case '[': return Array(depth);
      case '"': return String();
      case 't': return Lit("true");
      case 'f': return Lit("false");
      case 'n': return Lit("null");
      default: return Number();
    }
  }
  bool Object(int depth) {
    ++i_;
    Ws();
    if (At('}')) return ++i_, true;
    for (;;) {
      Ws();
      if (!At('"') || !String()) return false;
      Ws();
      if (!At(':')) return false;
      ++i_;
      if (!Value(depth + 1)) return false;
      Ws();
      if (At('}')) return ++i_, true;
      if (!At(',')) return false;
      ++i_;
    }
  }
  bool Array(int depth) {
    ++i_;
    Ws();
    if (At(']')) return ++i_, true;
    for (;;) {
      if (!Value(depth + 1)) return false;
      Ws();
      if (At(']')) return ++i_, true;
      if (!At(',')) return false;
      ++i_;
    }
  }
  bool String() {
    ++i_;  // the opening quote
    while (i_ < s_.size()) {
      const unsigned char ch = s_[i_++];
      if (ch == '"') return true;
      if (ch < 0x20) return false;  // control characters must be escaped
      if (ch != '\\') continue;
      if (i_ >= s_.size()) return false;
      const char e = s_[i_++];
      if (e == 'u') {
        for (int k = 0; k < 4; ++k, ++i_) {
          if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) return false;
        }
      } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
        return false;
      }
    }
    return false;
  }
  bool Digits() {
    const size_t start = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    return i_ > start;
  }
  bool Number() {
    if (At('-')) ++i_;
    if (At('0')) {
      ++i_;
    } else if (!Digits()) {
      return false;
    }
    if (At('.')) {
      ++i_;
      if (!Digits()) return false;
    }
    if (At('e') || At('E')) {
      ++i_;
      if (At('+') || At('-')) ++i_;
      if (!Digits()) return false;
    }
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace sched::testing

#endif  // UDRM_TESTS_SCHED_JSON_CHECK_H_
