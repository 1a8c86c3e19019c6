// IoBackend: every file operation the local object store makes, behind one seam.
//
// Contract:
//  - The asynchronous calls must be awaited on a reactor thread; UringIoBackend
//    submits them to that reactor's io_uring. A simulated disk (tests) may complete
//    them however it likes, e.g. dropping unsynced writes on a simulated crash.
//  - Paths are relative to the directory fd given at construction (the data dir).
//  - read() returns the bytes read (short only at end of file); write() writes all
//    bytes or fails. Errors are errno Status values; nothing is retried here.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"
#include "engine/task.h"

namespace kelpie {

class IoBackend {
 public:
  virtual ~IoBackend() = default;

  // flags as for openat(2) (O_CREAT, O_TRUNC...); O_CLOEXEC is added.
  virtual Task<Result<int>> open(std::string path, int flags) = 0;
  virtual void close(int fd) = 0;
  virtual Task<Status> unlink(std::string path) = 0;
  virtual Task<Result<size_t>> read(int fd, std::span<uint8_t> buf, uint64_t offset) = 0;
  // dsync: the data is durable when this completes (RWF_DSYNC; NBD FUA).
  virtual Task<Status> write(int fd, std::span<const uint8_t> buf, uint64_t offset, bool dsync) = 0;
  virtual Task<Status> datasync(int fd) = 0;
  // mode as for fallocate(2): 0 allocates, FALLOC_FL_ZERO_RANGE zeroes in place.
  virtual Task<Status> fallocate(int fd, int mode, uint64_t offset, uint64_t length) = 0;
  virtual Status truncate(int fd, uint64_t length) = 0;
  // Copies length bytes between files inside the kernel (copy_file_range(2):
  // a reflink where the filesystem has them).
  virtual Task<Status> copy_range(int src_fd, uint64_t src_offset, int dst_fd, uint64_t dst_offset,
                                  uint64_t length) = 0;
};

// pread(2) until `buf` is full or end of file, retrying EINTR: the bytes read. For
// backends that read synchronously (the inline path below, test backends).
Result<size_t> pread_full(int fd, std::span<uint8_t> buf, uint64_t offset);

// io_uring for sockets, syncs, opens and large transfers; buffered reads and writes
// of up to kInlineLimit bytes are plain pread(2)/pwrite(2) on the reactor thread.
// Measured on this machine's ext4: io_uring could not complete them inline and
// handed each to an io-wq worker, which made a 4 KiB read at QD1 7x slower
// (3,976 vs 28,900 IOPS) and a 4 KiB write ~3x costlier than nbdkit's pwrite.
// A page-cache copy of at most 1 MiB stalls the reactor less than that wake-up.
//
// Small folios. Since Linux 6.16 ext4 caches files in large folios (up to the size
// of one write, or of a readahead window), and a later 4 KiB write into a large
// folio costs far more: on this machine's 6.18 kernel a 4 KiB pwrite took 30 us in
// a file written 1 MiB at a time, 50 us after 1 MiB reads with readahead, 7 us
// after 64 KiB writes and 3-5 us with 4 KiB folios, and writeback then writes the
// whole folio back. Object files see random 4 KiB writes, so:
//  - open() marks regular files POSIX_FADV_RANDOM: no readahead, reads fill
//    folios of the size they ask for;
//  - buffered writes go to the kernel in pieces of at most kWritePiece bytes,
//    which keeps a 1 MiB sequential write as fast (4.4 vs 4.0 GiB/s into the page
//    cache) while later random writes stay cheap.
class UringIoBackend final : public IoBackend {
 public:
  static constexpr size_t kInlineLimit = 1024 * 1024;
  static constexpr size_t kWritePiece = 64 * 1024;

  explicit UringIoBackend(int dir_fd) : dir_fd_(dir_fd) {}

  Task<Result<int>> open(std::string path, int flags) override;
  void close(int fd) override;
  Task<Status> unlink(std::string path) override;
  Task<Result<size_t>> read(int fd, std::span<uint8_t> buf, uint64_t offset) override;
  Task<Status> write(int fd, std::span<const uint8_t> buf, uint64_t offset, bool dsync) override;
  Task<Status> datasync(int fd) override;
  Task<Status> fallocate(int fd, int mode, uint64_t offset, uint64_t length) override;
  Status truncate(int fd, uint64_t length) override;
  Task<Status> copy_range(int src_fd, uint64_t src_offset, int dst_fd, uint64_t dst_offset,
                          uint64_t length) override;

 private:
  int dir_fd_;
};

}  // namespace kelpie
