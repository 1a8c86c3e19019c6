// Pure parsing and validation of NBD messages: no I/O, unit-tested on their own.
//
// Every length read from the wire is checked against the buffer it claims to
// describe before it is used, so a hostile client can only earn an error.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nbdserver/protocol.h"

namespace kelpie::nbd {

// NBD_OPT_INFO / NBD_OPT_GO payload: export name and requested info types.
struct InfoRequest {
  std::string export_name;
  std::vector<uint16_t> info_types;
};
// nullopt when the payload is malformed (reply NBD_REP_ERR_INVALID).
std::optional<InfoRequest> parse_info_request(std::span<const uint8_t> data);

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload.
struct MetaContextRequest {
  std::string export_name;
  std::vector<std::string> queries;
};
std::optional<MetaContextRequest> parse_meta_context_request(std::span<const uint8_t> data);

// The 28-byte transmission request header.
struct Request {
  uint32_t magic = 0;
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};
constexpr size_t kRequestHeaderSize = 28;
Request parse_request_header(std::span<const uint8_t, kRequestHeaderSize> bytes);

struct ExportState {
  uint64_t size_bytes = 0;
  bool read_only = false;
  bool structured_replies = false;
  bool base_allocation = false;  // meta context negotiated
};

// The NBD errno for a request that must be refused, or 0 if it may run.
// Callers still read (and discard) a refused WRITE's payload.
uint32_t validate_request(const Request& request, const ExportState& state);

// True when the command carries a payload of `length` bytes after its header.
inline bool has_payload(const Request& request) { return request.type == kCmdWrite; }

}  // namespace kelpie::nbd
