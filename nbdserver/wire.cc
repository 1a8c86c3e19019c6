#include "nbdserver/wire.h"

#include "common/bytes.h"

namespace kelpie::nbd {
namespace {

// A bounds-checked cursor over an option payload.
class Cursor {
 public:
  explicit Cursor(std::span<const uint8_t> data) : data_(data) {}
  bool u16(uint16_t* v) {
    if (left() < 2) return false;
    *v = get_be16(data_.data() + pos_);
    pos_ += 2;
    return true;
  }
  bool u32(uint32_t* v) {
    if (left() < 4) return false;
    *v = get_be32(data_.data() + pos_);
    pos_ += 4;
    return true;
  }
  bool string(uint32_t length, std::string* out) {
    if (left() < length) return false;
    out->assign(reinterpret_cast<const char*>(data_.data() + pos_), length);
    pos_ += length;
    return true;
  }
  size_t left() const { return data_.size() - pos_; }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

}  // namespace

std::optional<InfoRequest> parse_info_request(std::span<const uint8_t> data) {
  Cursor c(data);
  InfoRequest request;
  uint32_t name_length;
  uint16_t count;
  if (!c.u32(&name_length) || name_length > kMaxExportNameLength ||
      !c.string(name_length, &request.export_name) || !c.u16(&count)) {
    return std::nullopt;
  }
  if (c.left() != size_t{count} * 2) return std::nullopt;
  for (uint16_t i = 0; i < count; ++i) {
    uint16_t type = 0;
    c.u16(&type);
    request.info_types.push_back(type);
  }
  return request;
}

std::optional<MetaContextRequest> parse_meta_context_request(std::span<const uint8_t> data) {
  Cursor c(data);
  MetaContextRequest request;
  uint32_t name_length, count;
  if (!c.u32(&name_length) || name_length > kMaxExportNameLength ||
      !c.string(name_length, &request.export_name) || !c.u32(&count)) {
    return std::nullopt;
  }
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t length;
    std::string query;
    if (!c.u32(&length) || length > kMaxExportNameLength || !c.string(length, &query)) return std::nullopt;
    request.queries.push_back(std::move(query));
  }
  if (c.left() != 0) return std::nullopt;
  return request;
}

Request parse_request_header(std::span<const uint8_t, kRequestHeaderSize> b) {
  return Request{get_be32(b.data()),      get_be16(b.data() + 4),  get_be16(b.data() + 6),
                 get_be64(b.data() + 8), get_be64(b.data() + 16), get_be32(b.data() + 24)};
}

uint32_t validate_request(const Request& r, const ExportState& state) {
  constexpr uint16_t kKnownFlags =
      kCmdFlagFua | kCmdFlagNoHole | kCmdFlagDf | kCmdFlagReqOne | kCmdFlagFastZero;
  if ((r.flags & ~kKnownFlags) != 0) return kEinval;
  if ((r.flags & kCmdFlagNoHole) && r.type != kCmdWriteZeroes) return kEinval;
  if ((r.flags & kCmdFlagFastZero) && r.type != kCmdWriteZeroes) return kEinval;
  if ((r.flags & kCmdFlagDf) && (r.type != kCmdRead || !state.structured_replies)) return kEinval;
  if ((r.flags & kCmdFlagReqOne) && r.type != kCmdBlockStatus) return kEinval;

  bool past_end = r.offset > state.size_bytes || r.length > state.size_bytes - r.offset;
  switch (r.type) {
    case kCmdRead:
      if (r.length > kMaxPayload) return (r.flags & kCmdFlagDf) ? kEoverflow : kEinval;
      return past_end ? kEinval : 0;
    case kCmdWrite:
      if (state.read_only) return kEperm;
      if (r.length > kMaxPayload) return kEinval;
      return past_end ? kEnospc : 0;
    case kCmdWriteZeroes:
      if (state.read_only) return kEperm;
      return past_end ? kEnospc : 0;
    case kCmdTrim:
      if (state.read_only) return kEperm;
      return past_end ? kEinval : 0;
    case kCmdCache:
      return past_end ? kEinval : 0;
    case kCmdBlockStatus:
      if (!state.structured_replies || !state.base_allocation) return kEinval;
      return past_end || r.length == 0 ? kEinval : 0;
    case kCmdFlush:
      return r.offset != 0 || r.length != 0 ? kEinval : 0;
    case kCmdDisc:
      return 0;
    default:
      return kEinval;
  }
}

}  // namespace kelpie::nbd
