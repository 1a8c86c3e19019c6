// Big- and little-endian coding of integers into byte buffers.
// NBD is big-endian on the wire; Kelpie's on-disk records are little-endian.
#pragma once

#include <cstdint>
#include <cstring>

namespace kelpie {

inline void put_be16(uint8_t* p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
inline void put_be32(uint8_t* p, uint32_t v) {
  for (int i = 3; i >= 0; --i) { p[i] = static_cast<uint8_t>(v); v >>= 8; }
}
inline void put_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i) { p[i] = static_cast<uint8_t>(v); v >>= 8; }
}
inline uint16_t get_be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t get_be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline uint64_t get_be64(const uint8_t* p) {
  return uint64_t{get_be32(p)} << 32 | get_be32(p + 4);
}

inline void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) { p[i] = static_cast<uint8_t>(v); v >>= 8; }
}
inline void put_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) { p[i] = static_cast<uint8_t>(v); v >>= 8; }
}
inline uint32_t get_le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
inline uint64_t get_le64(const uint8_t* p) {
  return uint64_t{get_le32(p)} | uint64_t{get_le32(p + 4)} << 32;
}

}  // namespace kelpie
