// SocketStream: buffered reads and whole-message writes on a socket, via io_uring.
//
// Contract: used by one connection on its reactor. read_exact() fills the span or
// fails (ECONNRESET when the peer closed early); discard() skips bytes through a
// fixed buffer, so skipping a huge payload costs no memory. write_all() sends every
// iovec or fails; callers serialize writers (one reply at a time).
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <span>
#include <string>

#include "common/status.h"
#include "engine/buffer.h"
#include "engine/task.h"

namespace kelpie {

class SocketStream {
 public:
  explicit SocketStream(int fd);
  int fd() const { return fd_; }

  Task<Status> read_exact(std::span<uint8_t> out);
  Task<Status> discard(uint64_t bytes);
  Task<Status> write_all(std::span<iovec> iov);
  Task<Status> write_all(std::span<const uint8_t> bytes);

 private:
  Task<Status> fill();

  int fd_;
  Buffer buffer_;
  size_t start_ = 0;
  size_t end_ = 0;
  bool try_direct_ = true;  // fill() tries a non-blocking recv before the ring
};

// A socket address from "HOST:PORT" (numeric IPv4, or [IPv6]) or "unix:/path".
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  std::string text;
  bool is_unix() const { return storage.ss_family == AF_UNIX; }
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};
// EINVAL (or ENAMETOOLONG) with a message naming the text when it can't be parsed.
Result<SocketAddress> parse_socket_address(const std::string& text);

// A listening stream socket on `address` (SO_REUSEADDR; a stale Unix socket file
// is unlinked first). The error names the address.
Result<int> listen_on(const SocketAddress& address, int backlog = 128);
// bind() + listen() of a fresh socket `fd`. A TCP port still in use (EADDRINUSE) is
// tried again every 20 ms for up to 10 s: a daemon restarted on its port may find it
// held a moment after its predecessor exited (that process's io_uring is torn down
// asynchronously, and with it the listening socket an accept was pending on). Returns
// the errno of the last failure, 0 on success.
int bind_and_listen(int fd, const sockaddr* address, socklen_t length, int backlog);

// The address a socket is bound to, in parse_socket_address() form (port 0 resolved).
std::string bound_address(int fd);

}  // namespace kelpie
