// Peer frames on the wire (docs/protocol.md): encoding and checked decoding.
//
// A frame is a 40-byte header, then the op's fixed fields, then a variable tail
// (write data, read data, JSON text, the object list, an error message). The
// header's payload length counts fields + tail; its crc32c covers the header (with
// the crc field as zero), the fields and the tail. All integers are big-endian.
//
// Contract:
//  - Encoding never fails for a request/reply the caller built within the limits
//    (asserted): the payload is at most kMaxPeerPayload bytes.
//  - Decoding checks every length before using it and returns EPROTO with a
//    message for anything malformed (bad magic, unknown op, wrong version, a
//    length over kMaxPeerPayload or not matching the op, a bad crc). The caller
//    closes the connection on any such error.
//  - Decoded spans (PeerRequest::data) point into the caller's buffers.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <span>

#include "cluster/peer_protocol.h"
#include "engine/buffer.h"

namespace kelpie {

constexpr size_t kPeerHeaderSize = 40;
constexpr uint8_t kPeerMagic[4] = {'K', 'L', 'P', 'P'};
// Largest fixed-field block of any op (kHello request: 52 bytes).
constexpr size_t kMaxPeerFields = 64;
// A HELLO payload, of any protocol version, is at most this long.
constexpr uint32_t kMaxHelloPayload = 4096;

struct PeerFrameHeader {
  uint16_t version = kPeerProtocolVersion;
  PeerOp op = PeerOp::kRead;
  uint32_t flags = 0;
  uint64_t request_id = 0;
  uint64_t epoch = 0;
  int32_t status = 0;
  uint32_t payload_length = 0;
  uint32_t crc = 0;
};

// An encoded frame, ready for one sendmsg: head (header + fields), then `extra`
// (owned: a list or a message), then `data` (borrowed from the request/reply).
class PeerFrame {
 public:
  // The iovecs to send; valid while this frame and the borrowed data live.
  std::span<iovec> iov();
  size_t size() const { return head_size_ + extra_.size() + data_.size(); }

 private:
  friend class PeerFrameBuilder;
  std::array<uint8_t, kPeerHeaderSize + kMaxPeerFields> head_{};
  size_t head_size_ = 0;
  Buffer extra_;
  std::span<const uint8_t> data_;
  std::array<iovec, 3> iov_{};
};

PeerFrame encode_hello(const PeerHello& hello, uint64_t request_id);
// REQUIRES: request.op != kHello; request.data only for kWrite/kAdmin.
PeerFrame encode_request(const PeerRequest& request, uint64_t request_id);
// `op` and `request_id` are the request's. A non-zero status sends reply.message;
// kEpochMismatch and every other status carry reply.epoch in the header.
PeerFrame encode_reply(PeerOp op, uint64_t request_id, const PeerReply& reply);

// Parses and checks a header: magic, a known op, payload length within
// kMaxPeerPayload (kMaxHelloPayload for a HELLO) and, unless the frame is a
// HELLO (whose version the receiver judges itself), the protocol version.
Result<PeerFrameHeader> decode_header(std::span<const uint8_t, kPeerHeaderSize> bytes);

// How many bytes of fixed fields follow the header. The tail is the rest of the
// payload (payload_length - fields); decode_* check its length per op. A request's
// fields depend on its flags too (kWrite with kPeerFlagHeld carries the hold token).
size_t request_fields_size(PeerOp op, uint32_t flags);
size_t reply_fields_size(PeerOp op, int32_t status);

// crc32c of header bytes (crc field taken as zero), fields and tail.
uint32_t frame_crc(std::span<const uint8_t, kPeerHeaderSize> header, std::span<const uint8_t> fields,
                   std::span<const uint8_t> tail);

// Decoders of the parts after the header (the crc already checked).
Result<PeerHello> decode_hello(const PeerFrameHeader& header, std::span<const uint8_t> fields);
Result<PeerRequest> decode_request(const PeerFrameHeader& header, std::span<const uint8_t> fields,
                                   std::span<const uint8_t> tail);
// `tail` becomes reply.data (kRead, kFetchObject, kAdmin) or is parsed.
Result<PeerReply> decode_reply(const PeerFrameHeader& header, std::span<const uint8_t> fields, Buffer tail);

// Whole-frame helpers (tests, tools): check the frame is exactly one complete,
// well-formed frame, including its crc. Request data points into `frame`.
struct DecodedRequest {
  PeerFrameHeader header;
  PeerRequest request;
  PeerHello hello;  // when header.op == kHello
};
Result<DecodedRequest> decode_request_frame(std::span<const uint8_t> frame);
Result<PeerReply> decode_reply_frame(std::span<const uint8_t> frame);
// The frame as one contiguous byte vector.
std::vector<uint8_t> flatten(PeerFrame& frame);

}  // namespace kelpie
