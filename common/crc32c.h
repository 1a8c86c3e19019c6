// CRC-32C (Castagnoli), the checksum of every 4 KiB block on disk.
// Uses the SSE4.2 instruction when the CPU has it, a table otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kelpie {

// Returns the CRC-32C of data[0..size) continuing from `crc` (0 to start).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace kelpie
