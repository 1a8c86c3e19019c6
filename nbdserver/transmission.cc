// Connection: the transmission phase.
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/bytes.h"
#include "common/log.h"
#include "engine/vdi_directory.h"
#include "nbdserver/connection.h"

namespace kelpie::nbd {
namespace {

uint32_t to_nbd_error(const Status& st) {
  switch (st.code()) {
    case 0: return 0;
    case EPERM: return kEperm;
    case EINVAL: return kEinval;
    case ENOSPC: return kEnospc;
    case ENOMEM: return kEnomem;
    case EOVERFLOW: return kEoverflow;
    case ENOTSUP: return kEnotsup;
    case ESHUTDOWN: return kEshutdown;
    default: return kEio;
  }
}

uint64_t request_bytes(const Request& r) {
  return r.type == kCmdRead || r.type == kCmdWrite ? r.length : 0;
}

}  // namespace

Task<void> Connection::run() {
  Next next = co_await negotiate();
  if (next == Next::kTransmit) {
    Reactor* home = Reactor::current();
    co_await switch_to(reactors_.owner_of_family(vdi_->family()));
    co_await serve();
    co_await switch_to(*home);  // the server's bookkeeping for this fd lives there
  }
  if (vdi_) {
    vdi_->attached.fetch_sub(1);
    if (!attached_name_.empty()) {
      if (AttachPolicy* policy = directory_.attach_policy()) co_await policy->detach(attached_name_, vdi_);
    }
  }
  ::close(stream_.fd());
}

Task<void> Connection::serve() {
  while (!broken_) {
    while (in_flight_requests_ >= kMaxInFlightRequests || in_flight_bytes_ >= kMaxInFlightBytes) {
      co_await capacity_freed_.wait();
    }
    if (broken_) break;
    uint8_t header[kRequestHeaderSize];
    if (!(co_await stream_.read_exact(header)).is_ok()) break;
    Request request = parse_request_header(header);
    if (request.magic != kRequestMagic) {
      KELPIE_LOG_WARN("nbd: bad request magic {:#x}; closing the connection", request.magic);
      break;
    }
    state_.size_bytes = vdi_->size();
    uint32_t error = validate_request(request, state_);
    if (request.type == kCmdDisc && error == 0) break;
    Buffer payload;
    if (has_payload(request)) {
      if (error != 0) {
        // Skip the payload through a fixed buffer: a refused 4 GiB write costs no memory.
        if (!(co_await stream_.discard(request.length)).is_ok()) break;
      } else {
        payload = Buffer::get(request.length);
        if (!(co_await stream_.read_exact(payload.span())).is_ok()) break;
      }
    }
    if (error != 0) {
      Buffer none;
      co_await send_reply(request, error, none);
      continue;
    }
    ++in_flight_requests_;
    in_flight_bytes_ += request_bytes(request);
    in_flight_.add();
    spawn(handle_request(request, std::move(payload)));
  }
  // Nothing more is read; let every request in flight finish and reply.
  co_await in_flight_.wait();
  ::shutdown(stream_.fd(), SHUT_RDWR);
}

Task<void> Connection::handle_request(Request request, Buffer payload) {
  Buffer read_data;
  Status st = co_await execute(request, payload, read_data);
  if (request.type == kCmdBlockStatus && st.is_ok()) {
    co_await send_block_status(request);
  } else {
    co_await send_reply(request, to_nbd_error(st), read_data);
  }
  --in_flight_requests_;
  in_flight_bytes_ -= request_bytes(request);
  capacity_freed_.set();
  capacity_freed_.reset();
  in_flight_.done();
}

Task<Status> Connection::execute(const Request& r, Buffer& payload, Buffer& read_data) {
  bool fua = (r.flags & kCmdFlagFua) != 0;
  switch (r.type) {
    case kCmdRead:
      read_data = Buffer::get(r.length);
      co_return co_await vdi_->read(r.offset, read_data.span());
    case kCmdWrite:
      co_return co_await vdi_->write(r.offset, payload.span(), fua);
    case kCmdFlush:
      co_return co_await vdi_->flush();
    case kCmdTrim:
      co_return co_await vdi_->trim(r.offset, r.length, fua);
    case kCmdWriteZeroes:
      // Zeroing is always cheap here (no data is written), so FAST_ZERO never fails.
      co_return co_await vdi_->write_zeroes(r.offset, r.length, (r.flags & kCmdFlagNoHole) != 0, fua);
    case kCmdCache:
      co_return Status::ok();  // objects are on local disk already; nothing to prefetch
    case kCmdBlockStatus:
      co_return Status::ok();
    default:
      KELPIE_ASSERT(false && "validate_request let an unknown command through");
  }
  co_return Status::error(EINVAL);
}

Task<void> Connection::send_reply(const Request& r, uint32_t error, Buffer& read_data) {
  AsyncMutex::Guard guard = co_await send_mutex_.lock();
  if (broken_) co_return;
  Status st;
  if (state_.structured_replies && r.type == kCmdRead) {
    // Never a simple reply to a READ once structured replies are on.
    uint8_t header[20 + 8];
    put_be32(header, kStructuredReplyMagic);
    put_be16(header + 4, kReplyFlagDone);
    put_be64(header + 8, r.cookie);
    if (error == 0 && r.length > 0) {
      put_be16(header + 6, kReplyTypeOffsetData);
      put_be32(header + 16, 8 + r.length);
      put_be64(header + 20, r.offset);
      iovec iov[2] = {{header, 28}, {read_data.data(), r.length}};
      st = co_await stream_.write_all(std::span<iovec>(iov, 2));
    } else if (error == 0) {
      put_be16(header + 6, kReplyTypeNone);
      put_be32(header + 16, 0);
      st = co_await stream_.write_all(std::span<const uint8_t>(header, 20));
    } else {
      put_be16(header + 6, kReplyTypeError);
      put_be32(header + 16, 6);
      put_be32(header + 20, error);
      put_be16(header + 24, 0);  // no message
      st = co_await stream_.write_all(std::span<const uint8_t>(header, 26));
    }
  } else {
    uint8_t header[16];
    put_be32(header, kSimpleReplyMagic);
    put_be32(header + 4, error);
    put_be64(header + 8, r.cookie);
    bool with_data = r.type == kCmdRead && error == 0 && r.length > 0;
    iovec iov[2] = {{header, 16}, {read_data.data(), with_data ? r.length : 0}};
    st = co_await stream_.write_all(std::span<iovec>(iov, with_data ? 2 : 1));
  }
  if (!st.is_ok()) {
    broken_ = true;
    ::shutdown(stream_.fd(), SHUT_RD);  // wake the reader so the connection ends
    capacity_freed_.set();
  }
}

Task<void> Connection::send_block_status(const Request& r) {
  bool one = (r.flags & kCmdFlagReqOne) != 0;
  // Extents of whole objects; bound the reply so one chunk stays small.
  std::vector<Vdi::Extent> extents = vdi_->block_status(r.offset, r.length, one ? 1 : 4096);
  Buffer body = Buffer::get(4 + extents.size() * 8);
  put_be32(body.data(), kBaseAllocationContextId);
  for (size_t i = 0; i < extents.size(); ++i) {
    put_be32(body.data() + 4 + 8 * i, static_cast<uint32_t>(extents[i].length));
    put_be32(body.data() + 8 + 8 * i, extents[i].allocated ? 0 : (kStateHole | kStateZero));
  }
  uint8_t header[20];
  put_be32(header, kStructuredReplyMagic);
  put_be16(header + 4, kReplyFlagDone);
  put_be16(header + 6, kReplyTypeBlockStatus);
  put_be64(header + 8, r.cookie);
  put_be32(header + 16, static_cast<uint32_t>(body.size()));
  AsyncMutex::Guard guard = co_await send_mutex_.lock();
  if (broken_) co_return;
  iovec iov[2] = {{header, 20}, {body.data(), body.size()}};
  if (!(co_await stream_.write_all(std::span<iovec>(iov, 2))).is_ok()) {
    broken_ = true;
    ::shutdown(stream_.fd(), SHUT_RD);
    capacity_freed_.set();
  }
}

}  // namespace kelpie::nbd
