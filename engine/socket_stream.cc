#include "engine/socket_stream.h"

#include <sys/socket.h>

#include <cerrno>

#include <cstring>

#include "engine/reactor.h"

namespace kelpie {
namespace {
constexpr size_t kBufferSize = 64 * 1024;
// Payloads at least this large are received straight into their destination.
constexpr size_t kDirectThreshold = 16 * 1024;
}  // namespace

SocketStream::SocketStream(int fd) : fd_(fd), buffer_(Buffer::get(kBufferSize)) {}

Task<Status> SocketStream::fill() {
  start_ = end_ = 0;
  // Most of the time the next request is already there: take it without a trip
  // through the ring (io_uring would arm a poll and complete it from task work).
  ssize_t ready = ::recv(fd_, buffer_.data(), buffer_.capacity(), MSG_DONTWAIT);
  if (ready > 0) {
    end_ = static_cast<size_t>(ready);
    co_return Status::ok();
  }
  if (ready == 0) co_return Status::error(ECONNRESET, "peer closed the connection");
  while (true) {
    int rc = co_await async_recv(fd_, buffer_.data(), buffer_.capacity());
    if (rc == -EINTR || rc == -EAGAIN) continue;
    if (rc < 0) co_return Status::error(-rc, "recv");
    if (rc == 0) co_return Status::error(ECONNRESET, "peer closed the connection");
    end_ = static_cast<size_t>(rc);
    co_return Status::ok();
  }
}

Task<Status> SocketStream::read_exact(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    if (start_ < end_) {
      size_t n = std::min(end_ - start_, out.size() - done);
      std::memcpy(out.data() + done, buffer_.data() + start_, n);
      start_ += n;
      done += n;
      continue;
    }
    if (out.size() - done >= kDirectThreshold) {
      int rc = co_await async_recv(fd_, out.data() + done, out.size() - done);
      if (rc == -EINTR || rc == -EAGAIN) continue;
      if (rc < 0) co_return Status::error(-rc, "recv");
      if (rc == 0) co_return Status::error(ECONNRESET, "peer closed the connection mid-message");
      done += static_cast<size_t>(rc);
      continue;
    }
    Status st = co_await fill();
    if (!st.is_ok()) co_return st;
  }
  co_return Status::ok();
}

Task<Status> SocketStream::discard(uint64_t bytes) {
  while (bytes > 0) {
    if (start_ == end_) {
      Status st = co_await fill();
      if (!st.is_ok()) co_return st;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(bytes, end_ - start_));
    start_ += n;
    bytes -= n;
  }
  co_return Status::ok();
}

Task<Status> SocketStream::write_all(std::span<iovec> iov) {
  size_t first = 0;
  bool try_direct = true;  // a reply usually fits the socket buffer: send it now
  while (first < iov.size()) {
    msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = iov.size() - first;
    int rc;
    if (try_direct) {
      ssize_t n = ::sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
      rc = n >= 0 ? static_cast<int>(n) : -errno;
      if (rc == -EAGAIN || rc == -EWOULDBLOCK) {
        try_direct = false;  // full: let the ring wait for room
        continue;
      }
    } else {
      rc = co_await async_sendmsg(fd_, &msg);
    }
    if (rc == -EINTR || rc == -EAGAIN) continue;
    if (rc < 0) co_return Status::error(-rc, "send");
    size_t sent = static_cast<size_t>(rc);
    while (first < iov.size() && sent >= iov[first].iov_len) {
      sent -= iov[first].iov_len;
      ++first;
    }
    if (sent > 0) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + sent;
      iov[first].iov_len -= sent;
    }
  }
  co_return Status::ok();
}

Task<Status> SocketStream::write_all(std::span<const uint8_t> bytes) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  co_return co_await write_all(std::span<iovec>(&iov, 1));
}

}  // namespace kelpie
