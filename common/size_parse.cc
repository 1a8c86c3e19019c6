#include "common/size_parse.h"

#include <cctype>

namespace kelpie {

Result<uint64_t> parse_size(std::string_view text) {
  auto bad = [&] {
    return Status::error(EINVAL, "invalid size '" + std::string(text) +
                                     "' (expected a number with optional K/M/G/T suffix)");
  };
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return bad();
  uint64_t value = 0;
  size_t i = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
    uint64_t digit = text[i] - '0';
    if (value > ((UINT64_C(1) << 63) - 1 - digit) / 10) {
      return Status::error(ERANGE, "size '" + std::string(text) + "' too large");
    }
    value = value * 10 + digit;
  }
  std::string_view suffix = text.substr(i);
  int shift = 0;
  if (!suffix.empty()) {
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      case 'P': shift = 50; break;
      case 'B': shift = 0; break;
      default: return bad();
    }
    std::string_view rest = suffix.substr(1);
    if (std::toupper(static_cast<unsigned char>(suffix[0])) == 'B') {
      if (!rest.empty()) return bad();
    } else if (!(rest.empty() || rest == "B" || rest == "b" || rest == "iB" || rest == "ib")) {
      return bad();
    }
  }
  if (shift > 0 && value > (((UINT64_C(1) << 63) - 1) >> shift)) {
    return Status::error(ERANGE, "size '" + std::string(text) + "' too large");
  }
  return value << shift;
}

std::string format_size(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int unit = 0;
  while (unit < 5 && bytes != 0 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + " " + kUnits[unit];
}

}  // namespace kelpie
