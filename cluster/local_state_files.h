// File helpers of the `local` membership driver (cluster/local_membership.h): the
// state directory's durable writes, its lock and the epoch log's record framing.
// Every function returns errno-coded Status values; none throws.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "cluster/membership.h"
#include "common/status.h"

namespace kelpie::local_state {

constexpr uint32_t kMaxRecordBytes = 16u << 20;
constexpr size_t kRecordHeaderBytes = 8;

// An owned file descriptor, closed on destruction.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

Status os_error(const std::string& what, const std::string& path);
void put_u32(std::string& out, uint32_t value);
void put_u64(std::string& out, uint64_t value);
// Little-endian `bytes` (at most 8) at `data`.
uint64_t get_le(const char* data, int bytes);

Status write_all(int fd, const std::string& data, const std::string& path);
Status fsync_dir(const std::string& dir);
// The bytes of `path` from `offset` (at most `limit`). ENOENT when it is missing.
Result<std::string> read_file(const std::string& path, uint64_t offset = 0,
                              size_t limit = SIZE_MAX);
// Replaces dir/name: temp file ("." + name + ".tmp..."), fsync, rename, fsync of the
// directory.
Status write_file_atomically(const std::string& dir, const std::string& name,
                             const std::string& data);
// flock(LOCK_EX) on `path` (made when missing): released when the Fd closes.
Result<Fd> lock_state(const std::string& path);

// An epoch log record: u32 length, u32 crc32c of the JSON body (little-endian), body.
std::string encode_record(const EpochRecord& record);
// Parses whole records from `bytes`, each the successor of the one before (the first
// of `last_epoch`); stops at the first incomplete or bad one, describing a bad one
// in `problem`. Returns how many bytes the good records take.
size_t parse_records(const std::string& bytes, uint64_t last_epoch,
                     std::vector<EpochRecord>& out, std::string& problem);

// Names in `dir` ending with `suffix` (without it), skipping dot (temp) files.
std::vector<std::string> list_dir(const std::string& dir, const std::string& suffix);

}  // namespace kelpie::local_state
