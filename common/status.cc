#include "common/status.h"

#include <cstring>

namespace kelpie {

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  std::string text = message_;
  if (!text.empty()) text += " ";
  text += "(";
  text += std::strerror(code_);
  text += ")";
  return text;
}

}  // namespace kelpie
