#include "engine/object_id.h"

#include <gtest/gtest.h>

#include "common/crc32c.h"
#include "engine/object_file.h"

namespace kelpie {
namespace {

TEST(ObjectId, HexRoundTrip) {
  ObjectId id = ObjectId::data(0x12, 0x3, 0xabcdef01);
  EXPECT_EQ(id.to_hex(), "000000120000000300000000abcdef01");
  auto parsed = ObjectId::from_hex(id.to_hex());
  ASSERT_TRUE(parsed.is_ok());
  EXPECT_EQ(*parsed, id);
  ObjectId map = ObjectId::map(7, 7, 2);
  EXPECT_EQ(map.to_hex(), "000000070000000702000000" "00000002");
  EXPECT_EQ(*ObjectId::from_hex(map.to_hex()), map);
}

TEST(ObjectId, RejectsMalformedText) {
  EXPECT_EQ(ObjectId::from_hex("1234").status().code(), EINVAL);
  EXPECT_EQ(ObjectId::from_hex("000000120000000300000000ABCDEF01").status().code(), EINVAL);
  EXPECT_EQ(ObjectId::from_hex("0000001200000003ff00000000000001").status().code(), EINVAL);
  EXPECT_EQ(ObjectId::from_hex("00000012000000030000010000000001").status().code(), EINVAL);
}

TEST(ObjectId, PlacementIgnoresOwningVdi) {
  // Every snapshot's object i lives where the family's object i lives.
  EXPECT_EQ(ObjectId::data(5, 1, 9).placement_hash(), ObjectId::data(8, 1, 9).placement_hash());
  EXPECT_NE(ObjectId::data(5, 1, 9).placement_hash(), ObjectId::data(5, 1, 10).placement_hash());
  EXPECT_NE(ObjectId::data(5, 1, 9).placement_hash(), ObjectId::map(5, 1, 9).placement_hash());
}

TEST(ObjectId, PlacementHashIsFixed) {
  // A wire/on-disk contract: this value must never change between versions.
  EXPECT_EQ(mix64(1), 0x5692161d100b05e5ULL);
}

TEST(ObjectHeader, RoundTripAndCorruption) {
  std::vector<uint8_t> buf(64, 0);
  encode_object_header({ObjectId::data(1, 1, 4), 4u << 20}, buf);
  auto decoded = decode_object_header(buf);
  ASSERT_TRUE(decoded.is_ok());
  EXPECT_EQ(decoded->id, ObjectId::data(1, 1, 4));
  EXPECT_EQ(decoded->object_size, 4u << 20);
  buf[30] ^= 1;
  EXPECT_EQ(decode_object_header(buf).status().code(), EINVAL);
}

TEST(Crc32c, KnownValueAndBlockwiseAgree) {
  const char* text = "123456789";
  EXPECT_EQ(crc32c(text, 9), 0xe3069283u);  // the standard CRC-32C check value
  std::vector<uint8_t> data(7 * 4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
  std::vector<uint32_t> blockwise(7);
  crc32c_blocks(data.data(), 7, 4096, blockwise.data());
  for (size_t b = 0; b < 7; ++b) EXPECT_EQ(blockwise[b], crc32c(data.data() + b * 4096, 4096)) << b;
}

}  // namespace
}  // namespace kelpie
