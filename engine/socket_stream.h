// SocketStream: buffered reads and whole-message writes on a socket, via io_uring.
//
// Contract: used by one connection on its reactor. read_exact() fills the span or
// fails (ECONNRESET when the peer closed early); discard() skips bytes through a
// fixed buffer, so skipping a huge payload costs no memory. write_all() sends every
// iovec or fails; callers serialize writers (one reply at a time).
#pragma once

#include <sys/uio.h>

#include <span>

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
};

}  // namespace kelpie
