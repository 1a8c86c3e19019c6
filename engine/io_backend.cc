#include "engine/io_backend.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "engine/reactor.h"

namespace kelpie {

Task<Result<int>> UringIoBackend::open(std::string path, int flags) {
  int dir = dir_fd_;
  const char* p = path.c_str();
  int rc = co_await uring_op(
      [=](io_uring_sqe* s) { io_uring_prep_openat(s, dir, p, flags | O_CLOEXEC, 0644); });
  if (rc < 0) co_return Status::error(-rc, "open " + path);
  // See the class comment: no readahead, so no large folios from reads. Advice only.
  if ((flags & O_DIRECTORY) == 0) (void)::posix_fadvise(rc, 0, 0, POSIX_FADV_RANDOM);
  co_return rc;
}

void UringIoBackend::close(int fd) { ::close(fd); }

Task<Status> UringIoBackend::unlink(std::string path) {
  int dir = dir_fd_;
  const char* p = path.c_str();
  int rc = co_await uring_op([=](io_uring_sqe* s) { io_uring_prep_unlinkat(s, dir, p, 0); });
  if (rc < 0) co_return Status::error(-rc, "unlink " + path);
  co_return Status::ok();
}

Result<size_t> pread_full(int fd, std::span<uint8_t> buf, uint64_t offset) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::error(errno, "read");
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Task<Result<size_t>> UringIoBackend::read(int fd, std::span<uint8_t> buf, uint64_t offset) {
  if (buf.size() <= kInlineLimit) co_return pread_full(fd, buf, offset);
  size_t done = 0;
  while (done < buf.size()) {
    int rc = co_await async_read(fd, buf.data() + done, buf.size() - done, offset + done);
    if (rc == -EINTR || rc == -EAGAIN) continue;
    if (rc < 0) co_return Status::error(-rc, "read");
    if (rc == 0) break;
    done += static_cast<size_t>(rc);
  }
  co_return done;
}

Task<Status> UringIoBackend::write(int fd, std::span<const uint8_t> buf, uint64_t offset,
                                   bool dsync) {
  size_t done = 0;
  if (!dsync && buf.size() <= kInlineLimit) {
    // See kInlineLimit: a page-cache copy beats io_uring's worker hand-off here.
    while (done < buf.size()) {
      size_t piece = std::min(buf.size() - done, kWritePiece);
      ssize_t n = ::pwrite(fd, buf.data() + done, piece, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) co_return Status::error(errno, "write");
      if (n == 0) co_return Status::error(EIO, "write made no progress");
      done += static_cast<size_t>(n);
    }
    co_return Status::ok();
  }
  while (done < buf.size()) {
    // A synced write goes whole (one sync); the others in small-folio pieces.
    size_t piece = dsync ? buf.size() - done : std::min(buf.size() - done, kWritePiece);
    int rc = co_await async_write(fd, buf.data() + done, piece, offset + done, dsync ? RWF_DSYNC : 0);
    if (rc == -EINTR || rc == -EAGAIN) continue;
    if (rc < 0) co_return Status::error(-rc, "write");
    if (rc == 0) co_return Status::error(EIO, "write made no progress");
    done += static_cast<size_t>(rc);
  }
  co_return Status::ok();
}

Task<Status> UringIoBackend::datasync(int fd) {
  int rc = co_await async_fdatasync(fd);
  if (rc < 0) co_return Status::error(-rc, "fdatasync");
  co_return Status::ok();
}

Task<Status> UringIoBackend::fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
  int rc = co_await async_fallocate(fd, mode, offset, length);
  if (rc < 0) co_return Status::error(-rc, "fallocate");
  co_return Status::ok();
}

Status UringIoBackend::truncate(int fd, uint64_t length) {
  if (::ftruncate(fd, static_cast<off_t>(length)) != 0) return Status::error(errno, "ftruncate");
  return Status::ok();
}

Task<Status> UringIoBackend::copy_range(int src_fd, uint64_t src_offset, int dst_fd,
                                        uint64_t dst_offset, uint64_t length) {
  // io_uring has no copy_file_range; an in-kernel copy of one object (<= 64 MiB of
  // page cache, or a reflink) is short enough to run on the reactor.
  auto in = static_cast<off64_t>(src_offset);
  auto out = static_cast<off64_t>(dst_offset);
  while (length > 0) {
    ssize_t n = ::copy_file_range(src_fd, &in, dst_fd, &out, length, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) co_return Status::error(errno, "copy_file_range");
    if (n == 0) co_return Status::error(EIO, "copy_file_range made no progress");
    length -= static_cast<uint64_t>(n);
  }
  co_return Status::ok();
}

}  // namespace kelpie
