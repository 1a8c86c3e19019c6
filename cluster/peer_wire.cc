#include "cluster/peer_wire.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "common/bytes.h"
#include "common/crc32c.h"

namespace kelpie {
namespace {

constexpr size_t kListedObjectSize = 16 + 16 + 4;
// Error messages are for people: a line or two, never megabytes.
constexpr size_t kMaxMessageBytes = 4096;

bool known_op(uint16_t op) { return op >= 1 && op <= static_cast<uint16_t>(PeerOp::kHold); }

Status malformed(const std::string& what) { return Status::error(EPROTO, "malformed peer frame: " + what); }

// Bounds-checked big-endian reader over a fields block (sizes are checked
// against request_fields_size() before, so reads here can not run off the end).
class FieldReader {
 public:
  explicit FieldReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  uint16_t u16() { return get_be16(take(2)); }
  uint32_t u32() { return get_be32(take(4)); }
  uint64_t u64() { return get_be64(take(8)); }
  const uint8_t* raw(size_t n) { return take(n); }
  Result<ObjectId> id() {
    auto parsed = ObjectId::decode(take(16));
    if (!parsed) return malformed("bad object id: " + parsed.status().message());
    return parsed;
  }
  ObjectVersion version() {
    ObjectVersion v;
    v.generation = u64();
    v.sequence = u64();
    return v;
  }

 private:
  const uint8_t* take(size_t n) {
    KELPIE_ASSERT(position_ + n <= bytes_.size());
    const uint8_t* p = bytes_.data() + position_;
    position_ += n;
    return p;
  }
  std::span<const uint8_t> bytes_;
  size_t position_ = 0;
};

}  // namespace

class PeerFrameBuilder {
 public:
  PeerFrameBuilder(PeerFrame& frame, const PeerFrameHeader& header) : frame_(frame), header_(header) {
    frame_.head_size_ = kPeerHeaderSize;
  }
  void u16(uint16_t v) { put_be16(take(2), v); }
  void u32(uint32_t v) { put_be32(take(4), v); }
  void u64(uint64_t v) { put_be64(take(8), v); }
  void raw(const uint8_t* p, size_t n) { std::memcpy(take(n), p, n); }
  void id(const ObjectId& id) { id.encode(take(16)); }
  void version(const ObjectVersion& v) {
    u64(v.generation);
    u64(v.sequence);
  }
  void extra(Buffer bytes) { frame_.extra_ = std::move(bytes); }
  void data(std::span<const uint8_t> bytes) { frame_.data_ = bytes; }

  // Writes the header (lengths and crc) once everything else is in place.
  void finish() {
    uint8_t* h = frame_.head_.data();
    size_t payload = frame_.size() - kPeerHeaderSize;
    KELPIE_ASSERT(payload <= kMaxPeerPayload);
    std::memcpy(h, kPeerMagic, 4);
    put_be16(h + 4, header_.version);
    put_be16(h + 6, static_cast<uint16_t>(header_.op));
    put_be32(h + 8, header_.flags);
    put_be64(h + 12, header_.request_id);
    put_be64(h + 20, header_.epoch);
    put_be32(h + 28, static_cast<uint32_t>(header_.status));
    put_be32(h + 32, static_cast<uint32_t>(payload));
    put_be32(h + 36, 0);
    uint32_t crc = crc32c(h, frame_.head_size_);
    crc = crc32c(frame_.extra_.data(), frame_.extra_.size(), crc);
    crc = crc32c(frame_.data_.data(), frame_.data_.size(), crc);
    put_be32(h + 36, crc);
  }

 private:
  uint8_t* take(size_t n) {
    KELPIE_ASSERT(frame_.head_size_ + n <= frame_.head_.size());
    uint8_t* p = frame_.head_.data() + frame_.head_size_;
    frame_.head_size_ += n;
    return p;
  }
  PeerFrame& frame_;
  PeerFrameHeader header_;
};

std::span<iovec> PeerFrame::iov() {
  size_t n = 0;
  iov_[n++] = {head_.data(), head_size_};
  if (extra_.size() > 0) iov_[n++] = {extra_.data(), extra_.size()};
  if (!data_.empty()) iov_[n++] = {const_cast<uint8_t*>(data_.data()), data_.size()};
  return {iov_.data(), n};
}

PeerFrame encode_hello(const PeerHello& hello, uint64_t request_id) {
  PeerFrame frame;
  PeerFrameHeader header;
  header.version = hello.protocol_version;
  header.op = PeerOp::kHello;
  header.request_id = request_id;
  PeerFrameBuilder b(frame, header);
  b.u16(hello.protocol_version);
  b.u16(0);
  b.raw(hello.cluster.data(), 16);
  b.raw(hello.sender.data(), 16);
  b.raw(hello.expected_receiver.data(), 16);
  b.finish();
  return frame;
}

PeerFrame encode_request(const PeerRequest& r, uint64_t request_id) {
  KELPIE_ASSERT(r.op != PeerOp::kHello);
  KELPIE_ASSERT(r.data.empty() || r.op == PeerOp::kWrite || r.op == PeerOp::kAdmin);
  PeerFrame frame;
  PeerFrameHeader header;
  header.op = r.op;
  header.flags = r.flags;
  header.request_id = request_id;
  header.epoch = r.epoch;
  PeerFrameBuilder b(frame, header);
  switch (r.op) {
    case PeerOp::kRead:
      b.id(r.id);
      b.u64(r.offset);
      b.u64(r.length);
      break;
    case PeerOp::kWrite:
      b.id(r.id);
      b.u64(r.offset);
      b.u32(r.object_size);
      b.u32(0);
      b.version(r.version);
      if ((r.flags & kPeerFlagHeld) != 0) b.u64(r.hold_token);
      break;
    case PeerOp::kHold:
      b.id(r.id);
      b.u64(r.hold_token);
      b.u32(r.lease_ms);
      b.u32(0);
      break;
    case PeerOp::kZero:
      b.id(r.id);
      b.u64(r.offset);
      b.u64(r.length);
      b.version(r.version);
      break;
    case PeerOp::kCreateFrom:
      b.id(r.id);
      b.id(r.src);
      b.version(r.version);
      break;
    case PeerOp::kRemove:
      b.id(r.id);
      b.version(r.version);
      break;
    case PeerOp::kFetchObject:
    case PeerOp::kObjectVersion:
      b.id(r.id);
      break;
    case PeerOp::kSync:
    case PeerOp::kListObjects:
    case PeerOp::kAdmin:
    case PeerOp::kHello:
      break;
  }
  b.data(r.data);
  b.finish();
  return frame;
}

PeerFrame encode_reply(PeerOp op, uint64_t request_id, const PeerReply& reply) {
  PeerFrame frame;
  PeerFrameHeader header;
  header.op = op;
  header.request_id = request_id;
  header.epoch = reply.epoch;
  header.status = reply.status;
  if (op == PeerOp::kListObjects && reply.status == 0 && reply.recovered_through) {
    header.flags = kPeerFlagRecoveredThrough;  // the list has a 16-byte trailer
  }
  if (op == PeerOp::kObjectVersion && reply.durable && (reply.status == 0 || reply.status == ENOENT)) {
    header.flags = kPeerFlagDurable;  // the asked-for durability was honoured
  }
  PeerFrameBuilder b(frame, header);
  if (reply.status != 0) {
    size_t n = std::min(reply.message.size(), kMaxMessageBytes);
    if (n > 0) {
      Buffer text = Buffer::get(n);
      std::memcpy(text.data(), reply.message.data(), n);
      b.extra(std::move(text));
    }
    b.finish();
    return frame;
  }
  switch (op) {
    case PeerOp::kRead:
    case PeerOp::kAdmin:
      b.data(reply.data.span());
      break;
    case PeerOp::kFetchObject:
      b.version(reply.version);
      b.u32(reply.object_size);
      b.u32(0);
      b.data(reply.data.span());
      break;
    case PeerOp::kObjectVersion:
      b.version(reply.version);
      b.u32(reply.object_size);
      b.u32(0);
      break;
    case PeerOp::kListObjects: {
      KELPIE_ASSERT(reply.objects.size() <= (kMaxPeerPayload - 20) / kListedObjectSize);
      b.u32(static_cast<uint32_t>(reply.objects.size()));
      const size_t trailer = reply.recovered_through ? 16 : 0;
      if (!reply.objects.empty() || trailer > 0) {
        Buffer list = Buffer::get(reply.objects.size() * kListedObjectSize + trailer);
        uint8_t* p = list.data();
        for (const ListedObject& o : reply.objects) {
          o.id.encode(p);
          put_be64(p + 16, o.version.generation);
          put_be64(p + 24, o.version.sequence);
          put_be32(p + 32, o.object_size);
          p += kListedObjectSize;
        }
        if (reply.recovered_through) {
          put_be64(p, *reply.recovered_through);
          put_be64(p + 8, reply.recovered_earlier);
        }
        b.extra(std::move(list));
      }
      break;
    }
    default:
      break;
  }
  b.finish();
  return frame;
}

Result<PeerFrameHeader> decode_header(std::span<const uint8_t, kPeerHeaderSize> bytes) {
  const uint8_t* h = bytes.data();
  if (std::memcmp(h, kPeerMagic, 4) != 0) return malformed("bad magic");
  PeerFrameHeader header;
  header.version = get_be16(h + 4);
  uint16_t op = get_be16(h + 6);
  if (!known_op(op)) return malformed("unknown op " + std::to_string(op));
  header.op = static_cast<PeerOp>(op);
  header.flags = get_be32(h + 8);
  header.request_id = get_be64(h + 12);
  header.epoch = get_be64(h + 20);
  header.status = static_cast<int32_t>(get_be32(h + 28));
  header.payload_length = get_be32(h + 32);
  header.crc = get_be32(h + 36);
  if (header.op == PeerOp::kHello) {
    if (header.payload_length > kMaxHelloPayload) return malformed("hello payload too long");
    return header;
  }
  if (header.version != kPeerProtocolVersion) {
    return malformed("protocol version " + std::to_string(header.version) + " (expected " +
                     std::to_string(kPeerProtocolVersion) + ")");
  }
  if (header.payload_length > kMaxPeerPayload) {
    return malformed("payload length " + std::to_string(header.payload_length) + " over the limit");
  }
  return header;
}

size_t request_fields_size(PeerOp op, uint32_t flags) {
  switch (op) {
    case PeerOp::kHello: return 52;
    case PeerOp::kRead: return 32;
    case PeerOp::kWrite: return (flags & kPeerFlagHeld) != 0 ? 56 : 48;
    case PeerOp::kHold: return 32;
    case PeerOp::kZero:
    case PeerOp::kCreateFrom: return 48;
    case PeerOp::kRemove: return 32;
    case PeerOp::kFetchObject:
    case PeerOp::kObjectVersion: return 16;
    case PeerOp::kSync:
    case PeerOp::kListObjects:
    case PeerOp::kAdmin: return 0;
  }
  return 0;
}

size_t reply_fields_size(PeerOp op, int32_t status) {
  if (status != 0) return 0;
  switch (op) {
    case PeerOp::kListObjects: return 4;
    case PeerOp::kFetchObject:
    case PeerOp::kObjectVersion: return 24;
    default: return 0;
  }
}

uint32_t frame_crc(std::span<const uint8_t, kPeerHeaderSize> header, std::span<const uint8_t> fields,
                   std::span<const uint8_t> tail) {
  uint8_t copy[kPeerHeaderSize];
  std::memcpy(copy, header.data(), kPeerHeaderSize);
  put_be32(copy + 36, 0);
  uint32_t crc = crc32c(copy, kPeerHeaderSize);
  crc = crc32c(fields.data(), fields.size(), crc);
  return crc32c(tail.data(), tail.size(), crc);
}

Result<PeerHello> decode_hello(const PeerFrameHeader& header, std::span<const uint8_t> fields) {
  // Only the version is read from a hello of another version: its layout may differ.
  PeerHello hello;
  hello.protocol_version = header.version;
  if (header.version != kPeerProtocolVersion) return hello;
  if (fields.size() != request_fields_size(PeerOp::kHello, 0)) return malformed("hello of the wrong size");
  FieldReader r(fields);
  if (r.u16() != header.version) return malformed("hello versions disagree");
  r.u16();
  std::memcpy(hello.cluster.data(), r.raw(16), 16);
  std::memcpy(hello.sender.data(), r.raw(16), 16);
  std::memcpy(hello.expected_receiver.data(), r.raw(16), 16);
  return hello;
}

Result<PeerRequest> decode_request(const PeerFrameHeader& header, std::span<const uint8_t> fields,
                                   std::span<const uint8_t> tail) {
  if (header.op == PeerOp::kHello) return malformed("hello inside a session");
  if (fields.size() != request_fields_size(header.op, header.flags)) return malformed("request fields of the wrong size");
  bool may_have_tail = header.op == PeerOp::kWrite || header.op == PeerOp::kAdmin;
  if (!tail.empty() && !may_have_tail) return malformed("unexpected request payload");
  PeerRequest r;
  r.op = header.op;
  r.epoch = header.epoch;
  r.flags = header.flags;
  FieldReader f(fields);
  auto read_id = [&](ObjectId& out) -> Status {
    auto id = f.id();
    if (!id) return id.status();
    out = *id;
    return Status::ok();
  };
  Status st;
  switch (header.op) {
    case PeerOp::kRead:
      st = read_id(r.id);
      r.offset = f.u64();
      r.length = f.u64();
      if (st && r.length > kMaxPeerPayload) return malformed("read length over the limit");
      break;
    case PeerOp::kWrite:
      st = read_id(r.id);
      r.offset = f.u64();
      r.object_size = f.u32();
      f.u32();
      r.version = f.version();
      if ((r.flags & kPeerFlagHeld) != 0) r.hold_token = f.u64();
      r.length = tail.size();
      break;
    case PeerOp::kHold:
      st = read_id(r.id);
      r.hold_token = f.u64();
      r.lease_ms = f.u32();
      f.u32();
      break;
    case PeerOp::kZero:
      st = read_id(r.id);
      r.offset = f.u64();
      r.length = f.u64();
      r.version = f.version();
      break;
    case PeerOp::kCreateFrom:
      st = read_id(r.id);
      if (st) st = read_id(r.src);
      r.version = f.version();
      break;
    case PeerOp::kRemove:
      st = read_id(r.id);
      r.version = f.version();
      break;
    case PeerOp::kFetchObject:
    case PeerOp::kObjectVersion:
      st = read_id(r.id);
      break;
    default:
      break;
  }
  if (!st) return st;
  r.data = tail;
  return r;
}

Result<PeerReply> decode_reply(const PeerFrameHeader& header, std::span<const uint8_t> fields, Buffer tail) {
  if (fields.size() != reply_fields_size(header.op, header.status)) return malformed("reply fields of the wrong size");
  PeerReply reply;
  reply.status = header.status;
  reply.epoch = header.epoch;
  reply.durable = header.op == PeerOp::kObjectVersion && (header.flags & kPeerFlagDurable) != 0 &&
                  (header.status == 0 || header.status == ENOENT);
  if (header.status != 0) {
    if (tail.size() > kMaxMessageBytes) return malformed("error message too long");
    reply.message.assign(reinterpret_cast<const char*>(tail.data()), tail.size());
    return reply;
  }
  FieldReader f(fields);
  switch (header.op) {
    case PeerOp::kRead:
    case PeerOp::kAdmin:
      reply.data = std::move(tail);
      return reply;
    case PeerOp::kFetchObject:
    case PeerOp::kObjectVersion:
      reply.version = f.version();
      reply.object_size = f.u32();
      if (header.op == PeerOp::kFetchObject) {
        reply.data = std::move(tail);
      } else if (tail.size() != 0) {
        return malformed("unexpected reply payload");
      }
      return reply;
    case PeerOp::kListObjects: {
      uint64_t count = f.u32();
      const bool has_trailer = (header.flags & kPeerFlagRecoveredThrough) != 0;
      const size_t trailer = has_trailer ? 16 : 0;
      if (count * kListedObjectSize + trailer != tail.size()) {
        return malformed("object list of the wrong size");
      }
      if (has_trailer) {
        const uint8_t* p = tail.data() + count * kListedObjectSize;
        reply.recovered_through = get_be64(p);
        reply.recovered_earlier = get_be64(p + 8);
      }
      reply.objects.reserve(count);
      for (size_t i = 0; i < count; ++i) {
        const uint8_t* p = tail.data() + i * kListedObjectSize;
        auto id = ObjectId::decode(p);
        if (!id) return malformed("bad object id in list");
        reply.objects.push_back({*id, {get_be64(p + 16), get_be64(p + 24)}, get_be32(p + 32)});
      }
      return reply;
    }
    default:
      if (tail.size() != 0) return malformed("unexpected reply payload");
      return reply;
  }
}

namespace {

// Splits a whole frame into header, fields and tail, checking sizes and crc.
struct FrameParts {
  PeerFrameHeader header;
  std::span<const uint8_t> fields;
  std::span<const uint8_t> tail;
};

Result<FrameParts> split_frame(std::span<const uint8_t> frame, bool is_request) {
  if (frame.size() < kPeerHeaderSize) return malformed("truncated header");
  auto header_bytes = frame.first<kPeerHeaderSize>();
  auto header = decode_header(header_bytes);
  if (!header) return header.status();
  if (frame.size() - kPeerHeaderSize != header->payload_length) return malformed("length does not match the frame");
  size_t fields = is_request ? request_fields_size(header->op, header->flags) : reply_fields_size(header->op, header->status);
  if (header->op == PeerOp::kHello && header->version != kPeerProtocolVersion) fields = 0;
  if (header->payload_length < fields) return malformed("payload shorter than the op's fields");
  FrameParts parts{*header, frame.subspan(kPeerHeaderSize, fields), frame.subspan(kPeerHeaderSize + fields)};
  if (frame_crc(header_bytes, parts.fields, parts.tail) != header->crc) return malformed("bad crc");
  return parts;
}

}  // namespace

Result<DecodedRequest> decode_request_frame(std::span<const uint8_t> frame) {
  auto parts = split_frame(frame, true);
  if (!parts) return parts.status();
  DecodedRequest out;
  out.header = parts->header;
  if (parts->header.op == PeerOp::kHello) {
    auto hello = decode_hello(parts->header, parts->fields);
    if (!hello) return hello.status();
    out.hello = *hello;
    out.request.op = PeerOp::kHello;
    return out;
  }
  auto request = decode_request(parts->header, parts->fields, parts->tail);
  if (!request) return request.status();
  out.request = *request;
  return out;
}

Result<PeerReply> decode_reply_frame(std::span<const uint8_t> frame) {
  auto parts = split_frame(frame, false);
  if (!parts) return parts.status();
  Buffer tail = Buffer::get(parts->tail.size());
  if (!parts->tail.empty()) std::memcpy(tail.data(), parts->tail.data(), parts->tail.size());
  return decode_reply(parts->header, parts->fields, std::move(tail));
}

std::vector<uint8_t> flatten(PeerFrame& frame) {
  std::vector<uint8_t> out;
  out.reserve(frame.size());
  for (const iovec& v : frame.iov()) {
    auto* p = static_cast<const uint8_t*>(v.iov_base);
    out.insert(out.end(), p, p + v.iov_len);
  }
  return out;
}

}  // namespace kelpie
