// Parsing of human sizes ("10G", "4M", "512") for the CLI and daemon flags.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kelpie {

// Accepts a decimal integer with an optional binary suffix K, M, G, T or P
// (case-insensitive, optional trailing "iB" or "B"). Returns EINVAL with a
// message naming the text on anything else, and ERANGE on overflow of 2^63.
Result<uint64_t> parse_size(std::string_view text);

// "10 GiB", "4 MiB", "1536 B": the largest unit that divides the size exactly.
std::string format_size(uint64_t bytes);

}  // namespace kelpie
