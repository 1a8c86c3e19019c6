#include "engine/object_file.h"

#include <cstring>
#include <vector>

#include "common/bytes.h"
#include "common/crc32c.h"

namespace kelpie {
namespace {
constexpr char kMagic[8] = {'K', 'E', 'L', 'P', 'O', 'B', 'J', '1'};
constexpr size_t kEncodedSize = 64;
}  // namespace

void encode_version_record(const ObjectVersion& version, std::span<uint8_t> out) {
  KELPIE_ASSERT(out.size() >= kVersionRecordSize);
  uint8_t* p = out.data();
  std::memset(p, 0, kVersionRecordSize);
  if (version.empty()) return;  // all zeros: the encoding of "no version"
  put_le64(p, version.generation);
  put_le64(p + 8, version.sequence);
  put_le32(p + 16, crc32c(p, 16));
}

Result<ObjectVersion> decode_version_record(std::span<const uint8_t> in) {
  if (in.size() < kVersionRecordSize) return Status::error(EINVAL, "version record truncated");
  const uint8_t* p = in.data();
  static constexpr uint8_t kZeros[kVersionRecordSize] = {};
  if (std::memcmp(p, kZeros, kVersionRecordSize) == 0) return ObjectVersion{};
  if (get_le32(p + 16) != crc32c(p, 16)) {
    return Status::error(EINVAL, "object header: bad version record crc");
  }
  return ObjectVersion{get_le64(p), get_le64(p + 8)};
}

void encode_object_header(const ObjectHeader& header, std::span<uint8_t> out) {
  KELPIE_ASSERT(out.size() >= kEncodedHeaderSize ||
                (out.size() >= kEncodedSize && header.version.empty()));
  uint8_t* p = out.data();
  std::memset(p, 0, kEncodedSize);
  std::memcpy(p, kMagic, 8);
  put_le32(p + 8, kObjectFormatVersion);
  header.id.encode(p + 12);
  put_le32(p + 28, header.object_size);
  put_le32(p + 60, crc32c(p, 60));
  if (out.size() >= kEncodedHeaderSize) {
    encode_version_record(header.version, out.subspan(kVersionRecordOffset));
  }
}

Result<ObjectHeader> decode_object_header(std::span<const uint8_t> in) {
  if (in.size() < kEncodedSize) return Status::error(EINVAL, "object header truncated");
  const uint8_t* p = in.data();
  if (std::memcmp(p, kMagic, 8) != 0) return Status::error(EINVAL, "object header: bad magic");
  if (get_le32(p + 60) != crc32c(p, 60)) return Status::error(EINVAL, "object header: bad crc");
  if (get_le32(p + 8) != kObjectFormatVersion) {
    return Status::error(EINVAL, "object header: unsupported version " +
                                     std::to_string(get_le32(p + 8)));
  }
  auto id = ObjectId::decode(p + 12);
  if (!id) return id.status();
  ObjectHeader header{*id, get_le32(p + 28), {}};
  if (header.object_size == 0 || header.object_size % kBlockSize != 0 ||
      header.object_size > kMaxObjectSize) {
    return Status::error(EINVAL, "object header: bad object size");
  }
  if (in.size() >= kEncodedHeaderSize) {  // shorter: no record, as bytes past EOF read as zeros
    auto version = decode_version_record(in.subspan(kVersionRecordOffset));
    if (!version) return version.status();
    header.version = *version;
  }
  return header;
}

uint32_t zero_block_crc() {
  static const uint32_t crc = [] {
    std::vector<uint8_t> zeros(kBlockSize, 0);
    return crc32c(zeros.data(), zeros.size());
  }();
  return crc;
}

}  // namespace kelpie
