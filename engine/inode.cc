#include "engine/inode.h"

#include <cstring>

#include "common/bytes.h"
#include "common/crc32c.h"

namespace kelpie {
namespace {
constexpr char kMagic[8] = {'K', 'E', 'L', 'P', 'I', 'N', 'O', 'D'};
constexpr size_t kNameOffset = 64;
constexpr size_t kTagOffset = kNameOffset + kMaxVdiNameLength + 1;  // 320
constexpr size_t kCrcOffset = kInodeHeaderSize - 4;                 // covers [0, kCrcOffset)
}  // namespace

uint64_t max_vdi_size(uint32_t object_shift) {
  return uint64_t{kMaxMapObjects} * kMapEntriesPerObject << object_shift;
}

std::vector<uint8_t> encode_inode(const Inode& inode) {
  std::vector<uint8_t> out(kInodeObjectSize, 0);
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, 8);
  put_le32(p + 8, kInodeFormatVersion);
  put_le32(p + 12, inode.id);
  put_le32(p + 16, inode.family);
  put_le32(p + 20, inode.parent);
  put_le32(p + 24, inode.snapshot_id);
  p[28] = static_cast<uint8_t>(inode.object_shift);
  p[29] = inode.copies;
  p[30] = inode.min_copies;
  put_le64(p + 32, inode.size_bytes);
  put_le64(p + 40, static_cast<uint64_t>(inode.created_unix_s));
  p[48] = static_cast<uint8_t>(inode.name.size());
  std::memcpy(p + kNameOffset, inode.name.data(), inode.name.size());
  p[49] = static_cast<uint8_t>(inode.tag.size());
  std::memcpy(p + kTagOffset, inode.tag.data(), inode.tag.size());
  put_le32(p + kCrcOffset, crc32c(p, kCrcOffset));
  for (size_t k = 0; k < kMaxMapObjects && k < inode.map_table.size(); ++k) {
    put_le32(p + kInodeHeaderSize + 4 * k, inode.map_table[k]);
  }
  return out;
}

Result<Inode> decode_inode(std::span<const uint8_t> bytes) {
  if (bytes.size() < kInodeHeaderSize + kMaxMapObjects * 4) return Status::error(EINVAL, "inode truncated");
  const uint8_t* p = bytes.data();
  if (std::memcmp(p, kMagic, 8) != 0) return Status::error(EINVAL, "inode: bad magic");
  if (get_le32(p + kCrcOffset) != crc32c(p, kCrcOffset)) return Status::error(EINVAL, "inode: bad crc");
  if (get_le32(p + 8) != kInodeFormatVersion) return Status::error(EINVAL, "inode: unsupported version");
  Inode inode;
  inode.id = get_le32(p + 12);
  inode.family = get_le32(p + 16);
  inode.parent = get_le32(p + 20);
  inode.snapshot_id = get_le32(p + 24);
  inode.object_shift = p[28];
  inode.copies = p[29];
  inode.min_copies = p[30];
  inode.size_bytes = get_le64(p + 32);
  inode.created_unix_s = static_cast<int64_t>(get_le64(p + 40));
  size_t name_length = p[48];
  inode.name.assign(reinterpret_cast<const char*>(p + kNameOffset), name_length);
  size_t tag_length = std::min<size_t>(p[49], kMaxTagLength);
  inode.tag.assign(reinterpret_cast<const char*>(p + kTagOffset), tag_length);
  if (inode.object_shift < kMinObjectShift || inode.object_shift > kMaxObjectShift ||
      inode.size_bytes > max_vdi_size(inode.object_shift) || inode.id == kNoVdi) {
    return Status::error(EINVAL, "inode: field out of range");
  }
  inode.map_table.resize(kMaxMapObjects);
  for (size_t k = 0; k < kMaxMapObjects; ++k) inode.map_table[k] = get_le32(p + kInodeHeaderSize + 4 * k);
  return inode;
}

namespace {
Status validate_characters(std::string_view text, const char* what) {
  for (char c : text) {
    if (c == '@' || c == '/') return Status::error(EINVAL, std::string(what) + " must not contain '@' or '/'");
    if (c <= ' ' || c > '~') {
      return Status::error(EINVAL, std::string(what) + " must be printable ASCII without spaces");
    }
  }
  return Status::ok();
}
}  // namespace

Status validate_tag(std::string_view tag) {
  if (tag.empty()) return Status::error(EINVAL, "snapshot tag must not be empty");
  if (tag.size() > kMaxTagLength) {
    return Status::error(EINVAL, "snapshot tag is longer than " + std::to_string(kMaxTagLength) + " bytes");
  }
  return validate_characters(tag, "snapshot tag");
}

Status validate_vdi_name(std::string_view name) {
  if (name.empty()) return Status::error(EINVAL, "VDI name must not be empty");
  if (name.size() > kMaxVdiNameLength) {
    return Status::error(EINVAL, "VDI name is longer than " + std::to_string(kMaxVdiNameLength) + " bytes");
  }
  return validate_characters(name, "VDI name");
}

}  // namespace kelpie
