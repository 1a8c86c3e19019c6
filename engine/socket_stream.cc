#include "engine/socket_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <cerrno>
#include <cstdlib>
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
  // Under load the next message is usually there already: take it without a trip
  // through the ring (io_uring would arm a poll and complete it from task work).
  // Once the socket was found empty (one message at a time), that try is a wasted
  // system call per message: go to the ring until a receive fills the buffer.
  if (try_direct_) {
    ssize_t ready = ::recv(fd_, buffer_.data(), buffer_.capacity(), MSG_DONTWAIT);
    if (ready > 0) {
      end_ = static_cast<size_t>(ready);
      co_return Status::ok();
    }
    if (ready == 0) co_return Status::error(ECONNRESET, "peer closed the connection");
    try_direct_ = false;
  }
  while (true) {
    int rc = co_await async_recv(fd_, buffer_.data(), buffer_.capacity());
    if (rc == -EINTR || rc == -EAGAIN) continue;
    if (rc < 0) co_return Status::error(-rc, "recv");
    if (rc == 0) co_return Status::error(ECONNRESET, "peer closed the connection");
    end_ = static_cast<size_t>(rc);
    try_direct_ = end_ == buffer_.capacity();
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

Result<SocketAddress> parse_socket_address(const std::string& text) {
  SocketAddress address;
  address.text = text;
  if (text.rfind("unix:", 0) == 0) {
    std::string path = text.substr(5);
    auto* un = reinterpret_cast<sockaddr_un*>(&address.storage);
    if (path.empty()) return Status::error(EINVAL, "address '" + text + "' has no socket path");
    if (path.size() >= sizeof(un->sun_path)) return Status::error(ENAMETOOLONG, "socket path too long: " + path);
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, path.c_str(), path.size() + 1);
    address.length = sizeof(sockaddr_un);
    return address;
  }
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return Status::error(EINVAL, "address '" + text + "' is not HOST:PORT or unix:/path");
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string port_text = text.substr(colon + 1);
  char* end = nullptr;
  unsigned long port = std::strtoul(port_text.c_str(), &end, 10);
  if (*end != '\0' || port > 65535) return Status::error(EINVAL, "address '" + text + "' has an invalid port");
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address.storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    address.length = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    address.length = sizeof(*v6);
  } else {
    return Status::error(EINVAL, "address '" + text + "': host must be a numeric IP address");
  }
  return address;
}

Result<int> listen_on(const SocketAddress& address, int backlog) {
  if (address.is_unix()) {
    ::unlink(reinterpret_cast<const sockaddr_un*>(&address.storage)->sun_path);  // a stale socket
  }
  int fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::error(errno, "socket");
  int one = 1;
  if (!address.is_unix()) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (int err = bind_and_listen(fd, address.get(), address.length, backlog); err != 0) {
    ::close(fd);
    return Status::error(err, "cannot listen on " + address.text);
  }
  return fd;
}

int bind_and_listen(int fd, const sockaddr* address, socklen_t length, int backlog) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    if (::bind(fd, address, length) == 0) return ::listen(fd, backlog) == 0 ? 0 : errno;
    const int err = errno;
    if (err != EADDRINUSE || address->sa_family == AF_UNIX ||
        std::chrono::steady_clock::now() >= deadline) {
      return err;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string bound_address(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return {};
  char host[INET6_ADDRSTRLEN] = {};
  switch (storage.ss_family) {
    case AF_UNIX:
      return std::string("unix:") + reinterpret_cast<sockaddr_un*>(&storage)->sun_path;
    case AF_INET: {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
      inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
      return std::string(host) + ":" + std::to_string(ntohs(v4->sin_port));
    }
    case AF_INET6: {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
      inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
      std::string text = "[";  // built by append: GCC 12 warns falsely on "[" + std::string&&
      text.append(host).append("]:").append(std::to_string(ntohs(v6->sin6_port)));
      return text;
    }
    default:
      return {};
  }
}

}  // namespace kelpie
