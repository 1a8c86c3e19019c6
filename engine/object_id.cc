#include "engine/object_id.h"

#include <cstdio>

#include "common/bytes.h"

namespace kelpie {

std::string ObjectId::to_hex() const {
  char text[33];
  std::snprintf(text, sizeof(text), "%08x%08x%02x000000%08x", vdi, family,
                static_cast<unsigned>(type), index);
  return text;
}

void ObjectId::encode(uint8_t* out) const {
  put_be32(out, vdi);
  put_be32(out + 4, family);
  put_be32(out + 8, static_cast<uint32_t>(type) << 24);
  put_be32(out + 12, index);
}

Result<ObjectId> ObjectId::decode(const uint8_t* in) {
  uint32_t type_word = get_be32(in + 8);
  if ((type_word & 0x00ffffff) != 0 || (type_word >> 24) > static_cast<uint32_t>(ObjectType::kAttr)) {
    return Status::error(EINVAL, "invalid object id type field");
  }
  return ObjectId{get_be32(in), get_be32(in + 4), static_cast<ObjectType>(type_word >> 24),
                  get_be32(in + 12)};
}

Result<ObjectId> ObjectId::from_hex(std::string_view text) {
  if (text.size() != 32) return Status::error(EINVAL, "object id must be 32 hex digits");
  uint8_t raw[16];
  for (size_t i = 0; i < 16; ++i) {
    int value = 0;
    for (size_t k = 0; k < 2; ++k) {
      char c = text[2 * i + k];
      int digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else {
        return Status::error(EINVAL, "object id has a character that is not lower-case hex");
      }
      value = value * 16 + digit;
    }
    raw[i] = static_cast<uint8_t>(value);
  }
  return decode(raw);
}

uint64_t ObjectId::placement_hash() const {
  uint64_t key = (uint64_t{family} << 32) ^ (uint64_t{static_cast<uint8_t>(type)} << 56) ^ index;
  return mix64(key);
}

size_t ObjectIdHash::operator()(const ObjectId& id) const noexcept {
  return mix64((uint64_t{id.vdi} << 32 | id.family) ^ mix64(uint64_t{id.index} << 8 |
                                                             static_cast<uint8_t>(id.type)));
}

}  // namespace kelpie
