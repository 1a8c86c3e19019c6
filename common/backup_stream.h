// The backup stream (format version 1): what `kelpie vdi backup` writes and
// `kelpie vdi restore` reads. The byte layout is documented in docs/format.md,
// "Backup stream (format version 1)".
//
// A stream is a header (VDI size, object size, the identity of the snapshot it
// captures and, for a differential stream, of the snapshot it starts from), then
// extents of data in increasing offset order, then a trailer that checksums the
// extent headers. Every length read from a stream is bounded before it is used.
//
// Intended use on restore: spool the input to an unlinked temporary file
// (spool_backup_stream), verify the whole file (verify_backup_stream) and only then
// apply the extents (read_backup_extent), so a truncated or corrupt stream changes
// nothing.
//
// Errors are Status values with a one-line message fit for a user:
//   EBADMSG          "not a Kelpie backup stream", "backup stream is empty",
//                    "backup stream is truncated",
//                    "backup stream is corrupt: <what>", e.g.
//                    "backup stream is corrupt: checksum mismatch in extent at offset N"
//   EPROTONOSUPPORT  "unsupported backup stream version N (this kelpie reads version 1)"
//   EINVAL           a writer was given a header or an extent the format cannot hold
//   other errno      the file descriptor failed ("cannot read backup stream", ...)
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace kelpie {

inline constexpr uint32_t kBackupStreamVersion = 1;
inline constexpr uint32_t kMaxBackupExtentBytes = 4u << 20;      // data bytes per extent
inline constexpr uint32_t kMaxBackupIdentityBytes = 256;         // each identity string
inline constexpr uint64_t kMaxBackupVdiBytes = uint64_t{1} << 56;  // 64 PiB
inline constexpr uint32_t kMinBackupObjectBytes = 1u << 20;
inline constexpr uint32_t kMaxBackupObjectBytes = 64u << 20;

struct BackupHeader {
  uint64_t size_bytes = 0;          // VDI size: a multiple of 512, 512..kMaxBackupVdiBytes
  uint32_t object_size_bytes = 0;   // a power of two, 1 MiB..64 MiB
  std::string to_identity;          // the snapshot captured: 1..256 bytes
  std::string from_identity;        // the snapshot it is relative to: "" = a full backup
  bool is_full() const { return from_identity.empty(); }
};

// One extent of a verified stream: where its data goes in the VDI and where it
// lies in the stream file.
struct BackupExtent {
  uint64_t offset = 0;         // in the VDI
  uint32_t length_bytes = 0;   // 1..kMaxBackupExtentBytes
  uint32_t crc = 0;            // crc32c of the data
  uint64_t data_position = 0;  // file offset of the data in the stream
};

struct BackupStreamIndex {
  BackupHeader header;
  std::vector<BackupExtent> extents;  // increasing, non-overlapping, inside the VDI size
  uint64_t data_bytes = 0;            // sum of the extent lengths
  uint64_t stream_bytes = 0;          // the whole stream, header to trailer
};

// Writes a stream to `fd` (a file or a pipe; not owned) with blocking write(2)s,
// retrying EINTR and short writes.
// REQUIRES: write_header() once, then add_extent() any number of times, then finish()
// (asserted). After any error the writer refuses every further call with that error.
// A caller writing to a pipe should ignore SIGPIPE so a closed reader becomes EPIPE.
class BackupStreamWriter {
 public:
  explicit BackupStreamWriter(int fd) : fd_(fd) {}
  BackupStreamWriter(const BackupStreamWriter&) = delete;
  BackupStreamWriter& operator=(const BackupStreamWriter&) = delete;

  // EINVAL when a header field is out of the bounds above (the message says which).
  Status write_header(const BackupHeader& header);
  // Appends `data` as the content at `offset`, split into extents of at most
  // kMaxBackupExtentBytes. Empty data writes nothing. EINVAL when the range starts
  // before the end of the previous one or goes past the VDI size.
  Status add_extent(uint64_t offset, std::span<const uint8_t> data);
  // Writes the trailer. The stream is complete only when this returns ok.
  Status finish();

  uint64_t extent_count() const { return extent_count_; }
  uint64_t data_bytes() const { return data_bytes_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  enum class State { kNew, kExtents, kFinished };
  Status write_all(std::span<const uint8_t> first, std::span<const uint8_t> second = {});
  Status write_one_extent(uint64_t offset, std::span<const uint8_t> data);
  Status fail(Status status);

  int fd_;
  State state_ = State::kNew;
  Status error_;
  uint64_t size_bytes_ = 0;
  uint64_t next_offset_ = 0;  // extents may not start before this
  uint64_t extent_count_ = 0;
  uint64_t data_bytes_ = 0;
  uint64_t bytes_written_ = 0;
  uint32_t trailer_crc_ = 0;  // running crc32c: header crc, then every extent header
};

// Reads and checks a whole stream from the seekable file `fd` (pread from offset 0;
// the file position is not used): header, every extent's bounds, order and data
// checksum, the trailer, and that nothing follows it. Returns the header and the
// extent index, or the first problem found. Reads at most kMaxBackupExtentBytes at
// a time; memory grows only with the number of extents.
Result<BackupStreamIndex> verify_backup_stream(int fd);

// Reads one extent of a verified stream into buffer[0, extent.length_bytes) and
// checks its checksum again (the file may have changed since verification).
// REQUIRES: buffer.size() >= extent.length_bytes.
Status read_backup_extent(int fd, const BackupExtent& extent, std::span<uint8_t> buffer);

// Copies everything readable from `in_fd` (e.g. stdin, a pipe) into a new unlinked
// temporary file in `directory` (O_TMPFILE, else mkstemp + unlink) and returns its
// descriptor, owned by the caller. Fails with the errno of the first failing call
// (ENOSPC when the directory's filesystem fills up) and leaves no file behind.
Result<int> spool_backup_stream(int in_fd, const std::string& directory);

}  // namespace kelpie
