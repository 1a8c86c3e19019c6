// 128-bit random UUIDs (version 4) for node and cluster identity.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace kelpie {

using Uuid = std::array<uint8_t, 16>;

// A new random v4 UUID from getrandom(2).
Uuid make_uuid();
// Canonical 8-4-4-4-12 lower-case hex form.
std::string uuid_to_string(const Uuid& uuid);

}  // namespace kelpie
