// Connection: fixed-newstyle negotiation.
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/bytes.h"
#include "common/log.h"
#include "engine/vdi_directory.h"
#include "nbdserver/connection.h"

namespace kelpie::nbd {
namespace {
constexpr int kMaxOptions = 4096;  // a client that haggles forever is cut off

void put_string(std::vector<uint8_t>& out, const std::string& s) {
  out.insert(out.end(), s.begin(), s.end());
}
void append_be16(std::vector<uint8_t>& out, uint16_t v) {
  uint8_t b[2];
  put_be16(b, v);
  out.insert(out.end(), b, b + 2);
}
void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  uint8_t b[4];
  put_be32(b, v);
  out.insert(out.end(), b, b + 4);
}
void append_be64(std::vector<uint8_t>& out, uint64_t v) {
  uint8_t b[8];
  put_be64(b, v);
  out.insert(out.end(), b, b + 8);
}
}  // namespace

Connection::Connection(int fd, VdiDirectory& directory, const ReactorPool& reactors)
    : stream_(fd), directory_(directory), reactors_(reactors) {}

uint16_t Connection::transmission_flags() const {
  uint16_t flags = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendTrim | kTxSendWriteZeroes |
                   kTxCanMultiConn | kTxSendCache | kTxSendFastZero;
  if (state_.structured_replies) flags |= kTxSendDf;
  if (state_.read_only) flags |= kTxReadOnly;
  return flags;
}

Task<bool> Connection::attach(const std::string& name, std::string* refusal) {
  std::shared_ptr<Vdi> vdi = directory_.find(name);
  if (!vdi) co_return false;
  if (AttachPolicy* policy = directory_.attach_policy()) {
    // The policy returns the object pinned (attached already counted).
    Result<std::shared_ptr<Vdi>> admitted = co_await policy->attach(name, vdi);
    if (!admitted) {
      if (refusal) *refusal = admitted.status().message();
      co_return false;
    }
    vdi_ = *admitted;
    attached_name_ = name;
  } else {
    vdi_ = std::move(vdi);
    vdi_->attached.fetch_add(1);
  }
  state_.size_bytes = vdi_->size();
  state_.read_only = vdi_->read_only();  // snapshots ("NAME@TAG") are read-only exports
  co_return true;
}

Task<std::optional<Connection::Next>> Connection::sync_directory(uint32_t option) {
  AttachPolicy* policy = directory_.attach_policy();
  if (!policy) co_return std::optional<Next>{};  // one node: the directory is current
  Status st = co_await policy->sync();
  if (st) co_return std::optional<Next>{};
  if (option == kOptExportName) {
    // NBD_OPT_EXPORT_NAME has no error reply: the only answer is to close.
    KELPIE_LOG_INFO("nbd: EXPORT_NAME while the VDI directory can not be read; closing");
    co_return Next::kClose;
  }
  Status sent = co_await send_option_error(option, kRepErrUnknown,
                                           "the VDI directory can not be read: " + st.message());
  co_return sent.is_ok() ? Next::kNegotiate : Next::kClose;
}

Task<Status> Connection::send_option_reply(uint32_t option, uint32_t type,
                                           std::span<const uint8_t> data) {
  uint8_t header[20];
  put_be64(header, kOptionReplyMagic);
  put_be32(header + 8, option);
  put_be32(header + 12, type);
  put_be32(header + 16, static_cast<uint32_t>(data.size()));
  iovec iov[2] = {{header, sizeof(header)}, {const_cast<uint8_t*>(data.data()), data.size()}};
  co_return co_await stream_.write_all(std::span<iovec>(iov, data.empty() ? 1 : 2));
}

Task<Status> Connection::send_option_error(uint32_t option, uint32_t type, const std::string& message) {
  co_return co_await send_option_reply(
      option, type, std::span(reinterpret_cast<const uint8_t*>(message.data()), message.size()));
}

Task<Connection::Next> Connection::negotiate() {
  uint8_t greeting[18];
  put_be64(greeting, kNbdMagic);
  put_be64(greeting + 8, kOptionMagic);
  put_be16(greeting + 16, kFlagFixedNewstyle | kFlagNoZeroes);
  if (!(co_await stream_.write_all(greeting)).is_ok()) co_return Next::kClose;
  uint8_t client_flags[4];
  if (!(co_await stream_.read_exact(client_flags)).is_ok()) co_return Next::kClose;
  uint32_t flags = get_be32(client_flags);
  if ((flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) != 0) {
    KELPIE_LOG_WARN("nbd: client sent unknown handshake flags {:#x}; closing", flags);
    co_return Next::kClose;
  }
  no_zeroes_ = (flags & kClientFlagNoZeroes) != 0;

  for (int i = 0; i < kMaxOptions; ++i) {
    uint8_t header[16];
    if (!(co_await stream_.read_exact(header)).is_ok()) co_return Next::kClose;
    if (get_be64(header) != kOptionMagic) {
      KELPIE_LOG_WARN("nbd: bad option magic; closing");
      co_return Next::kClose;
    }
    uint32_t option = get_be32(header + 8);
    uint32_t length = get_be32(header + 12);
    if (length > kMaxOptionLength) {
      // Reading it would cost memory or time a client has not earned: refuse and end.
      KELPIE_LOG_WARN("nbd: option {} of {} bytes exceeds the limit; closing", option, length);
      (void)co_await send_option_error(option, kRepErrTooBig, "option too long");
      co_return Next::kClose;
    }
    Buffer data = Buffer::get(length);
    if (!(co_await stream_.read_exact(data.span())).is_ok()) co_return Next::kClose;
    Next next = co_await handle_option(option, data.span());
    if (next != Next::kNegotiate) co_return next;
  }
  KELPIE_LOG_WARN("nbd: client exceeded {} options; closing", kMaxOptions);
  co_return Next::kClose;
}

Task<Connection::Next> Connection::handle_option(uint32_t option, std::span<const uint8_t> data) {
  auto reply_status = [](Status st) { return st.is_ok() ? Next::kNegotiate : Next::kClose; };
  switch (option) {
    case kOptExportName:
      co_return co_await handle_export_name(data);
    case kOptAbort:
      (void)co_await send_option_reply(option, kRepAck, {});
      co_return Next::kClose;
    case kOptList: {
      if (!data.empty()) co_return reply_status(co_await send_option_error(option, kRepErrInvalid, "LIST takes no data"));
      if (auto failed = co_await sync_directory(option)) co_return *failed;
      for (const auto& listed : directory_.list()) {
        std::vector<uint8_t> entry;
        append_be32(entry, static_cast<uint32_t>(listed.name.size()));
        put_string(entry, listed.name);
        if (!(co_await send_option_reply(option, kRepServer, entry)).is_ok()) co_return Next::kClose;
      }
      co_return reply_status(co_await send_option_reply(option, kRepAck, {}));
    }
    case kOptStructuredReply:
      if (!data.empty()) {
        co_return reply_status(co_await send_option_error(option, kRepErrInvalid, "STRUCTURED_REPLY takes no data"));
      }
      state_.structured_replies = true;
      co_return reply_status(co_await send_option_reply(option, kRepAck, {}));
    case kOptInfo:
    case kOptGo:
      co_return co_await handle_info(option, data);
    case kOptListMetaContext:
    case kOptSetMetaContext:
      co_return co_await handle_meta_context(option, data);
    default:
      co_return reply_status(co_await send_option_error(option, kRepErrUnsup, "option not supported"));
  }
}

Task<Connection::Next> Connection::handle_export_name(std::span<const uint8_t> data) {
  std::string name(reinterpret_cast<const char*>(data.data()), data.size());
  bool attached = data.size() <= kMaxExportNameLength;
  if (attached) {
    if (auto failed = co_await sync_directory(kOptExportName)) co_return *failed;
    attached = co_await attach(name, nullptr);
  }
  if (!attached) {
    // NBD_OPT_EXPORT_NAME has no error reply: the only answer is to close.
    KELPIE_LOG_INFO("nbd: unknown export requested with EXPORT_NAME; closing");
    co_return Next::kClose;
  }
  uint8_t reply[10 + 124] = {};
  put_be64(reply, state_.size_bytes);
  put_be16(reply + 8, transmission_flags());
  size_t length = no_zeroes_ ? 10 : sizeof(reply);
  if (!(co_await stream_.write_all(std::span<const uint8_t>(reply, length))).is_ok()) co_return Next::kClose;
  co_return Next::kTransmit;
}

Task<Connection::Next> Connection::handle_info(uint32_t option, std::span<const uint8_t> data) {
  auto request = parse_info_request(data);
  if (!request) {
    co_return (co_await send_option_error(option, kRepErrInvalid, "malformed INFO/GO request")).is_ok()
        ? Next::kNegotiate : Next::kClose;
  }
  if (auto failed = co_await sync_directory(option)) co_return *failed;
  std::shared_ptr<Vdi> vdi = directory_.find(request->export_name);
  if (!vdi) {
    co_return (co_await send_option_error(option, kRepErrUnknown,
                                          "no VDI named '" + request->export_name.substr(0, 256) + "'"))
            .is_ok() ? Next::kNegotiate : Next::kClose;
  }
  if (option == kOptGo) {
    std::string refusal;
    bool attached = co_await attach(request->export_name, &refusal);
    if (!attached) {
      if (refusal.empty()) refusal = "VDI '" + request->export_name.substr(0, 256) + "' went away";
      co_return (co_await send_option_error(option, kRepErrPolicy, refusal)).is_ok() ? Next::kNegotiate
                                                                                      : Next::kClose;
    }
  }
  std::vector<uint8_t> info;
  append_be16(info, kInfoExport);
  append_be64(info, vdi->size());
  ExportState saved = state_;
  state_.size_bytes = vdi->size();
  state_.read_only = vdi->read_only();
  append_be16(info, transmission_flags());
  state_ = saved;
  if (!(co_await send_option_reply(option, kRepInfo, info)).is_ok()) co_return Next::kClose;
  for (uint16_t type : request->info_types) {
    info.clear();
    if (type == kInfoName) {
      append_be16(info, kInfoName);
      put_string(info, request->export_name);
    } else if (type == kInfoDescription) {
      append_be16(info, kInfoDescription);
      put_string(info, std::string(vdi->read_only() ? "Kelpie snapshot '" : "Kelpie VDI '") +
                           request->export_name + "'");
    } else {
      continue;  // block size is always sent below; unknown types are ignored
    }
    if (!(co_await send_option_reply(option, kRepInfo, info)).is_ok()) co_return Next::kClose;
  }
  info.clear();
  append_be16(info, kInfoBlockSize);
  append_be32(info, kMinBlockSize);
  append_be32(info, kPreferredBlockSize);
  append_be32(info, kMaxPayload);
  if (!(co_await send_option_reply(option, kRepInfo, info)).is_ok()) co_return Next::kClose;
  if (!(co_await send_option_reply(option, kRepAck, {})).is_ok()) co_return Next::kClose;
  if (option == kOptInfo) co_return Next::kNegotiate;
  co_return Next::kTransmit;
}

Task<Connection::Next> Connection::handle_meta_context(uint32_t option, std::span<const uint8_t> data) {
  auto done = [](Status st) { return st.is_ok() ? Next::kNegotiate : Next::kClose; };
  if (!state_.structured_replies) {
    co_return done(co_await send_option_error(option, kRepErrInvalid, "negotiate structured replies first"));
  }
  auto request = parse_meta_context_request(data);
  if (!request) co_return done(co_await send_option_error(option, kRepErrInvalid, "malformed meta context request"));
  if (auto failed = co_await sync_directory(option)) co_return *failed;
  if (!directory_.find(request->export_name)) {
    co_return done(co_await send_option_error(option, kRepErrUnknown, "unknown export"));
  }
  bool selected = false;
  bool listing = option == kOptListMetaContext;
  if (listing && request->queries.empty()) selected = true;
  for (const std::string& q : request->queries) {
    if (q == "base:allocation" || (listing && q == "base:")) selected = true;
  }
  if (option == kOptSetMetaContext) state_.base_allocation = selected;
  if (selected) {
    std::vector<uint8_t> reply;
    append_be32(reply, kBaseAllocationContextId);
    put_string(reply, "base:allocation");
    if (!(co_await send_option_reply(option, kRepMetaContext, reply)).is_ok()) co_return Next::kClose;
  }
  co_return done(co_await send_option_reply(option, kRepAck, {}));
}

}  // namespace kelpie::nbd
