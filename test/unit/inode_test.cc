// Inode encoding, the object map's limits and VDI name rules.
#include "engine/inode.h"

#include <gtest/gtest.h>

namespace kelpie {
namespace {

TEST(Inode, RoundTrip) {
  Inode inode;
  inode.id = 42;
  inode.family = 40;
  inode.parent = 41;
  inode.object_shift = 20;
  inode.size_bytes = uint64_t{10} << 30;
  inode.created_unix_s = 1700000000;
  inode.name = "vm-disk-1";
  inode.map_table.assign(kMaxMapObjects, 0);
  inode.map_table[0] = 42;
  inode.map_table[3] = 40;
  auto image = encode_inode(inode);
  EXPECT_EQ(image.size(), kInodeObjectSize);
  auto decoded = decode_inode(image);
  ASSERT_TRUE(decoded.is_ok());
  EXPECT_EQ(decoded->id, 42u);
  EXPECT_EQ(decoded->family, 40u);
  EXPECT_EQ(decoded->parent, 41u);
  EXPECT_EQ(decoded->size_bytes, uint64_t{10} << 30);
  EXPECT_EQ(decoded->name, "vm-disk-1");
  EXPECT_EQ(decoded->map_table[0], 42u);
  EXPECT_EQ(decoded->map_table[3], 40u);
  EXPECT_EQ(decoded->object_count(), 10u * 1024);
}

TEST(Inode, CorruptionIsRefused) {
  Inode inode;
  inode.id = 1;
  inode.family = 1;
  inode.size_bytes = 1 << 30;
  inode.name = "x";
  auto image = encode_inode(inode);
  image[33] ^= 0x40;  // size field
  EXPECT_EQ(decode_inode(image).status().code(), EINVAL);
  image = encode_inode(inode);
  image[0] = 'X';
  EXPECT_EQ(decode_inode(image).status().code(), EINVAL);
}

TEST(ObjectMap, CapacityPerObjectSize) {
  // 4096 map objects x 16384 entries: 64 TiB at 1 MiB objects, 4 PiB at 64 MiB.
  EXPECT_EQ(max_vdi_size(20), uint64_t{64} << 40);
  EXPECT_EQ(max_vdi_size(26), uint64_t{4} << 50);
  EXPECT_EQ(kMapObjectSize, 65536u);
}

TEST(VdiName, Rules) {
  EXPECT_TRUE(validate_vdi_name("disk-01_a.b").is_ok());
  EXPECT_EQ(validate_vdi_name("").code(), EINVAL);
  EXPECT_EQ(validate_vdi_name("a@b").code(), EINVAL);
  EXPECT_EQ(validate_vdi_name("a/b").code(), EINVAL);
  EXPECT_EQ(validate_vdi_name("a b").code(), EINVAL);
  EXPECT_EQ(validate_vdi_name(std::string(256, 'a')).code(), EINVAL);
  EXPECT_TRUE(validate_vdi_name(std::string(255, 'a')).is_ok());
}

}  // namespace
}  // namespace kelpie
