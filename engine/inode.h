// Inode: the persistent description of one VDI, and its encoding (docs/format.md).
//
// The inode object holds a 4 KiB header and then the map table: for each map
// object k, the VDI id that owns it (0 = that slice of the map is all zeros).
// A map object holds kMapEntriesPerObject little-endian u32 entries: for each data
// object index, the VDI id that owns the data (0 = zeros, never "ask the parent").
// Map objects are copy-on-write like data, so a snapshot copies only this table.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/object_id.h"

namespace kelpie {

constexpr uint32_t kMapEntriesPerObject = 16384;
constexpr uint32_t kMapObjectSize = kMapEntriesPerObject * 4;  // 64 KiB
constexpr uint32_t kMaxMapObjects = 4096;
constexpr uint32_t kInodeHeaderSize = 4096;
constexpr uint32_t kInodeObjectSize = kInodeHeaderSize + kMaxMapObjects * 4 + 4096 * 3;  // 32 KiB
constexpr uint32_t kMinObjectShift = 20;
constexpr uint32_t kMaxObjectShift = 26;
constexpr uint32_t kDefaultObjectShift = 22;
constexpr size_t kMaxVdiNameLength = 255;
constexpr size_t kMaxTagLength = 64;
constexpr uint32_t kInodeFormatVersion = 1;

struct Inode {
  VdiId id = kNoVdi;
  VdiId family = kNoVdi;  // root VDI of the clone family
  VdiId parent = kNoVdi;
  uint32_t snapshot_id = 0;
  uint32_t object_shift = kDefaultObjectShift;
  uint8_t copies = 1;
  uint8_t min_copies = 1;
  uint64_t size_bytes = 0;
  int64_t created_unix_s = 0;
  std::string name;
  std::string tag;               // snapshot tag; empty for a writable VDI
  std::vector<VdiId> map_table;  // kMaxMapObjects entries

  bool is_snapshot() const { return snapshot_id != 0; }

  uint64_t object_size() const { return uint64_t{1} << object_shift; }
  uint64_t object_count() const { return (size_bytes + object_size() - 1) >> object_shift; }
};

// Largest VDI the map can describe with this object size.
uint64_t max_vdi_size(uint32_t object_shift);

// Whole inode object image (kInodeObjectSize bytes).
std::vector<uint8_t> encode_inode(const Inode& inode);
// EINVAL on bad magic, version, crc or field values.
Result<Inode> decode_inode(std::span<const uint8_t> bytes);

// Names: 1..255 bytes of printable ASCII without '@', '/' or spaces.
Status validate_vdi_name(std::string_view name);
// Tags: 1..64 bytes, same character rules as names.
Status validate_tag(std::string_view tag);

}  // namespace kelpie
