// The layout of one object file in the data directory (docs/format.md).
//
//   [0, 4 KiB)              header: magic, format version, object id, object size, crc;
//                           at 64 the version record (copy version + its own crc)
//   [4 KiB, 68 KiB)         crc32c table: one little-endian u32 per 4 KiB data block
//   [68 KiB, 68 KiB + size) data
//
// A crc entry of 0 means "never written": the block must read as zeros. Files are
// preallocated at creation so an overwrite never meets ENOSPC half-way.
#pragma once

#include <cstdint>
#include <span>

#include "common/status.h"
#include "engine/object_id.h"
#include "engine/object_version.h"

namespace kelpie {

constexpr uint64_t kBlockSize = 4096;
constexpr uint64_t kMaxObjectSize = uint64_t{64} << 20;
constexpr uint64_t kHeaderSize = 4096;
constexpr uint64_t kCrcTableOffset = kHeaderSize;
constexpr uint64_t kCrcTableSize = kMaxObjectSize / kBlockSize * 4;  // 64 KiB
constexpr uint64_t kDataOffset = kCrcTableOffset + kCrcTableSize;
constexpr uint32_t kObjectFormatVersion = 1;
// The version record: generation u64, sequence u64, crc32c of those 16 bytes. It has
// its own crc so it can be rewritten alone (a versioned write) without touching the
// fixed header. 20 zero bytes mean "no version" {0, 0}: files written before the
// record existed read that way, and {0, 0} is always encoded so.
constexpr uint64_t kVersionRecordOffset = 64;
constexpr uint64_t kVersionRecordSize = 20;
constexpr uint64_t kEncodedHeaderSize = kVersionRecordOffset + kVersionRecordSize;

struct ObjectHeader {
  ObjectId id;
  uint32_t object_size = 0;
  ObjectVersion version;
};

// Encodes the fixed header and the version record into the first
// kEncodedHeaderSize bytes of `out` (rest untouched; callers pass zeros).
// REQUIRES: out.size() >= kEncodedHeaderSize, or >= 64 with an empty version.
void encode_object_header(const ObjectHeader& header, std::span<uint8_t> out);
// EINVAL on bad magic, format version, crc or version-record crc; the message says
// which. Input shorter than kEncodedHeaderSize (but >= 64) has version {0, 0}.
Result<ObjectHeader> decode_object_header(std::span<const uint8_t> in);

// The version record alone (kVersionRecordSize bytes), written at kVersionRecordOffset.
void encode_version_record(const ObjectVersion& version, std::span<uint8_t> out);
// EINVAL when the record is neither all zeros nor matches its crc.
Result<ObjectVersion> decode_version_record(std::span<const uint8_t> in);

// CRC32C of a 4 KiB block of zeros.
uint32_t zero_block_crc();
// True when `stored` vouches for a block whose crc computed to `computed`.
inline bool block_crc_matches(uint32_t stored, uint32_t computed) {
  return stored == computed || (stored == 0 && computed == zero_block_crc());
}

}  // namespace kelpie
