// Object ids: the wire and on-disk name of every object (docs/format.md).
//
// An id is 128 bits: the owning VDI (32), the clone family's root VDI (32; placement
// hashes it with the index, so every snapshot's object i lives in the same place),
// the object type (8), 24 reserved zero bits, and the index (32). Its text form,
// used as the file name, is 32 lower-case hex digits in that order.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kelpie {

// SplitMix64's finaliser: the fixed, documented mixing function Kelpie hashes with.
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// VDI ids come from a counter starting at 1 and are never reused; 0 means "none".
using VdiId = uint32_t;
constexpr VdiId kNoVdi = 0;

enum class ObjectType : uint8_t {
  kData = 0,   // a slice of the disk: index = offset >> object_shift
  kInode = 1,  // the VDI's inode: index 0
  kMap = 2,    // a slice of the object map: index = object index / kMapEntriesPerObject
  kAttr = 3,   // reserved for VDI attributes
};

struct ObjectId {
  VdiId vdi = kNoVdi;
  VdiId family = kNoVdi;
  ObjectType type = ObjectType::kData;
  uint32_t index = 0;

  static ObjectId data(VdiId vdi, VdiId family, uint32_t index) {
    return {vdi, family, ObjectType::kData, index};
  }
  static ObjectId inode(VdiId vdi, VdiId family) { return {vdi, family, ObjectType::kInode, 0}; }
  static ObjectId map(VdiId vdi, VdiId family, uint32_t index) {
    return {vdi, family, ObjectType::kMap, index};
  }

  std::string to_hex() const;
  // Parses the 32-digit form; EINVAL for anything else (wrong length, bad digit,
  // unknown type, non-zero reserved bits).
  static Result<ObjectId> from_hex(std::string_view text);

  // 16 bytes, big-endian fields, as in the hex form.
  void encode(uint8_t* out) const;
  static Result<ObjectId> decode(const uint8_t* in);

  // Placement key: (family, type, index). Equal for object i of every snapshot and
  // clone of one family. A fixed 64-bit mix (SplitMix64 finaliser), never std::hash.
  uint64_t placement_hash() const;
  // Which reactor of a node owns the object: by clone family only, so every object
  // a VDI (and its snapshots and clones) touches lives on one reactor and its I/O
  // never hops between threads. Different families spread over the reactors.
  uint64_t reactor_key() const { return mix64(uint64_t{family}); }

  bool operator==(const ObjectId&) const = default;
};

struct ObjectIdHash {
  size_t operator()(const ObjectId& id) const noexcept;
};

}  // namespace kelpie
