#include "common/uuid.h"

#include <sys/random.h>

#include <cstdio>

namespace kelpie {

Uuid make_uuid() {
  Uuid uuid{};
  size_t got = 0;
  while (got < uuid.size()) {
    ssize_t n = getrandom(uuid.data() + got, uuid.size() - got, 0);
    KELPIE_ASSERT(n > 0);
    got += static_cast<size_t>(n);
  }
  uuid[6] = (uuid[6] & 0x0f) | 0x40;
  uuid[8] = (uuid[8] & 0x3f) | 0x80;
  return uuid;
}

std::string uuid_to_string(const Uuid& u) {
  char text[37];
  std::snprintf(text, sizeof(text),
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                u[15]);
  return text;
}

}  // namespace kelpie
