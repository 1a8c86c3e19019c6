#include "common/backup_stream.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "common/bytes.h"
#include "common/crc32c.h"

namespace kelpie {
namespace {

constexpr std::array<uint8_t, 8> kHeaderMagic = {'K', 'E', 'L', 'P', 'I', 'E', 'B', 'K'};
constexpr std::array<uint8_t, 8> kTrailerMagic = {'K', 'E', 'L', 'P', 'I', 'E', 'N', 'D'};
constexpr size_t kHeaderFixedBytes = 32;  // up to the identity strings
constexpr size_t kExtentHeaderBytes = 16;
constexpr size_t kTrailerBytes = 28;

// The trailer magic read as an extent offset is above every valid VDI size, so the
// reader tells a trailer from an extent by its first 8 bytes.
static_assert(0x444E4549504C454Bull >= kMaxBackupVdiBytes);

Status not_a_stream() { return Status::error(EBADMSG, "not a Kelpie backup stream"); }
Status truncated() { return Status::error(EBADMSG, "backup stream is truncated"); }
Status corrupt(const std::string& what) {
  return Status::error(EBADMSG, "backup stream is corrupt: " + what);
}

bool has_magic(const uint8_t* p, const std::array<uint8_t, 8>& magic) {
  return std::memcmp(p, magic.data(), magic.size()) == 0;
}

// The reason a header cannot be written or read, or "" when it is valid.
std::string header_problem(const BackupHeader& header) {
  if (header.size_bytes == 0 || header.size_bytes % 512 != 0 ||
      header.size_bytes > kMaxBackupVdiBytes) {
    return "VDI size " + std::to_string(header.size_bytes) + " is invalid";
  }
  uint32_t object = header.object_size_bytes;
  if (object < kMinBackupObjectBytes || object > kMaxBackupObjectBytes ||
      (object & (object - 1)) != 0) {
    return "object size " + std::to_string(object) + " is invalid";
  }
  if (header.to_identity.empty()) return "the snapshot identity is empty";
  for (const std::string* identity : {&header.to_identity, &header.from_identity}) {
    if (identity->size() > kMaxBackupIdentityBytes) {
      return "identity of " + std::to_string(identity->size()) + " bytes (limit " +
             std::to_string(kMaxBackupIdentityBytes) + ")";
    }
  }
  return {};
}

// Reads up to `size` bytes at `position`, fewer only at end of file.
Result<size_t> pread_up_to(int fd, uint8_t* data, size_t size, uint64_t position) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, data + done, size - done, static_cast<off_t>(position + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::error(errno, "cannot read backup stream");
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

struct ExtentHeader {
  uint64_t offset;
  uint32_t length_bytes;
  uint32_t crc;
};

std::array<uint8_t, kExtentHeaderBytes> encode_extent_header(const ExtentHeader& extent) {
  std::array<uint8_t, kExtentHeaderBytes> bytes{};
  put_le64(bytes.data(), extent.offset);
  put_le32(bytes.data() + 8, extent.length_bytes);
  put_le32(bytes.data() + 12, extent.crc);
  return bytes;
}

// The whole header; its checksum is the last 4 bytes.
std::vector<uint8_t> encode_header(const BackupHeader& header) {
  std::vector<uint8_t> bytes(kHeaderFixedBytes);
  std::memcpy(bytes.data(), kHeaderMagic.data(), kHeaderMagic.size());
  put_le32(bytes.data() + 8, kBackupStreamVersion);
  put_le32(bytes.data() + 12, 0);  // flags
  put_le64(bytes.data() + 16, header.size_bytes);
  put_le32(bytes.data() + 24, header.object_size_bytes);
  bytes[28] = static_cast<uint8_t>(header.to_identity.size());
  bytes[29] = static_cast<uint8_t>(header.to_identity.size() >> 8);
  bytes[30] = static_cast<uint8_t>(header.from_identity.size());
  bytes[31] = static_cast<uint8_t>(header.from_identity.size() >> 8);
  bytes.insert(bytes.end(), header.to_identity.begin(), header.to_identity.end());
  bytes.insert(bytes.end(), header.from_identity.begin(), header.from_identity.end());
  uint32_t crc = crc32c(bytes.data(), bytes.size());
  bytes.resize(bytes.size() + 4);
  put_le32(bytes.data() + bytes.size() - 4, crc);
  return bytes;
}

uint32_t trailer_crc_seed(uint32_t header_crc) {
  uint8_t bytes[4];
  put_le32(bytes, header_crc);
  return crc32c(bytes, sizeof bytes);
}

uint16_t get_le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }

// Parses and checks the header; returns it and its length in bytes.
Result<std::pair<BackupHeader, uint64_t>> read_header(int fd) {
  std::array<uint8_t, kHeaderFixedBytes> fixed{};
  Result<size_t> got = pread_up_to(fd, fixed.data(), fixed.size(), 0);
  if (!got) return got.status();
  if (*got == 0) return Status::error(EBADMSG, "backup stream is empty");
  size_t magic_bytes = std::min(*got, kHeaderMagic.size());
  if (std::memcmp(fixed.data(), kHeaderMagic.data(), magic_bytes) != 0) return not_a_stream();
  if (*got < fixed.size()) return truncated();
  uint32_t version = get_le32(fixed.data() + 8);
  if (version != kBackupStreamVersion) {
    return Status::error(EPROTONOSUPPORT, "unsupported backup stream version " +
                                              std::to_string(version) +
                                              " (this kelpie reads version 1)");
  }
  size_t to_length = get_le16(fixed.data() + 28);
  size_t from_length = get_le16(fixed.data() + 30);
  for (size_t length : {to_length, from_length}) {
    if (length > kMaxBackupIdentityBytes) {
      return corrupt("identity of " + std::to_string(length) + " bytes (limit " +
                     std::to_string(kMaxBackupIdentityBytes) + ")");
    }
  }
  std::vector<uint8_t> bytes(kHeaderFixedBytes + to_length + from_length + 4);
  got = pread_up_to(fd, bytes.data(), bytes.size(), 0);
  if (!got) return got.status();
  if (*got < bytes.size()) return truncated();
  size_t crc_at = bytes.size() - 4;
  if (crc32c(bytes.data(), crc_at) != get_le32(bytes.data() + crc_at)) {
    return corrupt("header checksum mismatch");
  }
  uint32_t flags = get_le32(bytes.data() + 12);
  if (flags != 0) return corrupt("unknown header flags " + std::to_string(flags));
  BackupHeader header;
  header.size_bytes = get_le64(bytes.data() + 16);
  header.object_size_bytes = get_le32(bytes.data() + 24);
  const char* text = reinterpret_cast<const char*>(bytes.data() + kHeaderFixedBytes);
  header.to_identity.assign(text, to_length);
  header.from_identity.assign(text + to_length, from_length);
  if (std::string problem = header_problem(header); !problem.empty()) return corrupt(problem);
  return std::pair{std::move(header), uint64_t{bytes.size()}};
}

// Checks the trailer at `position` against what the extents added up to.
Status check_trailer(int fd, uint64_t position, const BackupStreamIndex& index, uint32_t crc) {
  std::array<uint8_t, kTrailerBytes + 1> bytes{};  // one more: nothing may follow
  Result<size_t> got = pread_up_to(fd, bytes.data(), bytes.size(), position);
  if (!got) return got.status();
  if (*got < kTrailerBytes) return truncated();
  if (crc32c(bytes.data(), kTrailerBytes - 4, crc) != get_le32(bytes.data() + kTrailerBytes - 4)) {
    return corrupt("trailer checksum mismatch");
  }
  uint64_t count = get_le64(bytes.data() + 8);
  uint64_t data_bytes = get_le64(bytes.data() + 16);
  if (count != index.extents.size() || data_bytes != index.data_bytes) {
    return corrupt("the trailer counts " + std::to_string(count) + " extents of " +
                   std::to_string(data_bytes) + " bytes, the stream has " +
                   std::to_string(index.extents.size()) + " of " +
                   std::to_string(index.data_bytes));
  }
  if (*got > kTrailerBytes) return corrupt("data after the trailer");
  return Status::ok();
}

// Checks an extent header against the header and the previous extent.
Status check_extent_header(const ExtentHeader& extent, uint64_t size_bytes, uint64_t next_offset) {
  std::string at = "extent at offset " + std::to_string(extent.offset);
  if (extent.length_bytes == 0 || extent.length_bytes > kMaxBackupExtentBytes) {
    return corrupt(at + " has length " + std::to_string(extent.length_bytes) + " (limit " +
                   std::to_string(kMaxBackupExtentBytes) + ")");
  }
  if (extent.length_bytes > size_bytes || extent.offset > size_bytes - extent.length_bytes) {
    return corrupt(at + " goes past the end of the VDI (" + std::to_string(size_bytes) +
                   " bytes)");
  }
  if (extent.offset < next_offset) return corrupt(at + " overlaps the extent before it");
  return Status::ok();
}

}  // namespace

Status BackupStreamWriter::fail(Status status) {
  error_ = status;
  return status;
}

Status BackupStreamWriter::write_all(std::span<const uint8_t> first,
                                     std::span<const uint8_t> second) {
  iovec iov[2] = {{const_cast<uint8_t*>(first.data()), first.size()},
                  {const_cast<uint8_t*>(second.data()), second.size()}};
  int index = 0;
  while (index < 2) {
    if (iov[index].iov_len == 0) {
      ++index;
      continue;
    }
    ssize_t n = ::writev(fd_, iov + index, 2 - index);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Status::error(errno, "cannot write backup stream"));
    bytes_written_ += static_cast<uint64_t>(n);
    for (size_t left = static_cast<size_t>(n); left > 0;) {
      size_t step = std::min(left, iov[index].iov_len);
      iov[index].iov_base = static_cast<uint8_t*>(iov[index].iov_base) + step;
      iov[index].iov_len -= step;
      left -= step;
      if (iov[index].iov_len == 0) ++index;
    }
  }
  return Status::ok();
}

Status BackupStreamWriter::write_header(const BackupHeader& header) {
  KELPIE_ASSERT(state_ == State::kNew);
  if (!error_) return error_;
  if (std::string problem = header_problem(header); !problem.empty()) {
    return fail(Status::error(EINVAL, "cannot write backup stream: " + problem));
  }
  std::vector<uint8_t> bytes = encode_header(header);
  if (Status status = write_all(bytes); !status) return status;
  size_bytes_ = header.size_bytes;
  trailer_crc_ = trailer_crc_seed(get_le32(bytes.data() + bytes.size() - 4));
  state_ = State::kExtents;
  return Status::ok();
}

Status BackupStreamWriter::add_extent(uint64_t offset, std::span<const uint8_t> data) {
  KELPIE_ASSERT(state_ == State::kExtents);
  if (!error_) return error_;
  if (data.empty()) return Status::ok();
  if (offset < next_offset_) {
    return fail(Status::error(EINVAL, "cannot write backup stream: extent at offset " +
                                          std::to_string(offset) + " overlaps the one before"));
  }
  if (data.size() > size_bytes_ || offset > size_bytes_ - data.size()) {
    return fail(Status::error(EINVAL, "cannot write backup stream: extent at offset " +
                                          std::to_string(offset) + " goes past the end (" +
                                          std::to_string(size_bytes_) + " bytes)"));
  }
  while (!data.empty()) {
    size_t length = std::min<size_t>(data.size(), kMaxBackupExtentBytes);
    if (Status status = write_one_extent(offset, data.first(length)); !status) return status;
    offset += length;
    data = data.subspan(length);
  }
  return Status::ok();
}

Status BackupStreamWriter::write_one_extent(uint64_t offset, std::span<const uint8_t> data) {
  ExtentHeader extent{offset, static_cast<uint32_t>(data.size()), crc32c(data.data(), data.size())};
  std::array<uint8_t, kExtentHeaderBytes> header = encode_extent_header(extent);
  if (Status status = write_all(header, data); !status) return status;
  trailer_crc_ = crc32c(header.data(), header.size(), trailer_crc_);
  next_offset_ = offset + data.size();
  extent_count_ += 1;
  data_bytes_ += data.size();
  return Status::ok();
}

Status BackupStreamWriter::finish() {
  KELPIE_ASSERT(state_ == State::kExtents);
  if (!error_) return error_;
  std::array<uint8_t, kTrailerBytes> trailer{};
  std::memcpy(trailer.data(), kTrailerMagic.data(), kTrailerMagic.size());
  put_le64(trailer.data() + 8, extent_count_);
  put_le64(trailer.data() + 16, data_bytes_);
  put_le32(trailer.data() + 24, crc32c(trailer.data(), kTrailerBytes - 4, trailer_crc_));
  if (Status status = write_all(trailer); !status) return status;
  state_ = State::kFinished;
  return Status::ok();
}

Result<BackupStreamIndex> verify_backup_stream(int fd) {
  Result<std::pair<BackupHeader, uint64_t>> header = read_header(fd);
  if (!header) return header.status();
  BackupStreamIndex index;
  index.header = std::move(header->first);
  uint64_t position = header->second;
  uint8_t header_crc_bytes[4];
  if (Result<size_t> got = pread_up_to(fd, header_crc_bytes, 4, position - 4); !got) {
    return got.status();
  }
  uint32_t crc = crc32c(header_crc_bytes, 4);
  std::vector<uint8_t> data;
  uint64_t next_offset = 0;
  while (true) {
    std::array<uint8_t, kExtentHeaderBytes> bytes{};
    Result<size_t> got = pread_up_to(fd, bytes.data(), bytes.size(), position);
    if (!got) return got.status();
    if (*got >= kTrailerMagic.size() && has_magic(bytes.data(), kTrailerMagic)) break;
    if (*got < bytes.size()) return truncated();
    ExtentHeader extent{get_le64(bytes.data()), get_le32(bytes.data() + 8),
                        get_le32(bytes.data() + 12)};
    if (Status status = check_extent_header(extent, index.header.size_bytes, next_offset);
        !status) {
      return status;
    }
    if (data.size() < extent.length_bytes) data.resize(extent.length_bytes);
    got = pread_up_to(fd, data.data(), extent.length_bytes, position + kExtentHeaderBytes);
    if (!got) return got.status();
    if (*got < extent.length_bytes) return truncated();
    if (crc32c(data.data(), extent.length_bytes) != extent.crc) {
      return corrupt("checksum mismatch in extent at offset " + std::to_string(extent.offset));
    }
    crc = crc32c(bytes.data(), bytes.size(), crc);
    index.extents.push_back(
        {extent.offset, extent.length_bytes, extent.crc, position + kExtentHeaderBytes});
    index.data_bytes += extent.length_bytes;
    next_offset = extent.offset + extent.length_bytes;
    position += kExtentHeaderBytes + extent.length_bytes;
  }
  if (Status status = check_trailer(fd, position, index, crc); !status) return status;
  index.stream_bytes = position + kTrailerBytes;
  return index;
}

Status read_backup_extent(int fd, const BackupExtent& extent, std::span<uint8_t> buffer) {
  KELPIE_ASSERT(buffer.size() >= extent.length_bytes);
  Result<size_t> got = pread_up_to(fd, buffer.data(), extent.length_bytes, extent.data_position);
  if (!got) return got.status();
  if (*got < extent.length_bytes) return truncated();
  if (crc32c(buffer.data(), extent.length_bytes) != extent.crc) {
    return corrupt("checksum mismatch in extent at offset " + std::to_string(extent.offset));
  }
  return Status::ok();
}

namespace {

Result<int> open_unlinked_file(const std::string& directory) {
  int fd = ::open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    return Status::error(errno, "cannot create a temporary file in " + directory);
  }
  std::string path = directory + "/kelpie-restore-XXXXXX";
  fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) return Status::error(errno, "cannot create a temporary file in " + directory);
  ::unlink(path.c_str());
  return fd;
}

Status copy_all(int in_fd, int out_fd) {
  std::vector<uint8_t> buffer(1u << 20);
  while (true) {
    ssize_t n = ::read(in_fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::error(errno, "cannot read the backup stream");
    if (n == 0) return Status::ok();
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out_fd, buffer.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return Status::error(errno, "cannot spool the backup stream to a temporary file");
      done += w;
    }
  }
}

}  // namespace

Result<int> spool_backup_stream(int in_fd, const std::string& directory) {
  Result<int> fd = open_unlinked_file(directory);
  if (!fd) return fd.status();
  if (Status status = copy_all(in_fd, *fd); !status) {
    ::close(*fd);
    return status;
  }
  return *fd;
}

}  // namespace kelpie
