// The backup stream: what the writer produces the reader accepts, byte for byte;
// every truncation, flipped bit and out-of-bounds length is refused with a clear
// one-line message before anything could be applied.
#include "common/backup_stream.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <thread>

#include "common/bytes.h"
#include "common/crc32c.h"

namespace kelpie {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// An anonymous in-memory file, closed on destruction.
class MemFile {
 public:
  MemFile() : fd_(memfd_create("backup_stream_test", MFD_CLOEXEC)) { KELPIE_ASSERT(fd_ >= 0); }
  explicit MemFile(const std::string& bytes) : MemFile() { replace(bytes); }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  int fd() const { return fd_; }
  void replace(const std::string& bytes) {
    KELPIE_ASSERT(ftruncate(fd_, 0) == 0);
    KELPIE_ASSERT(pwrite(fd_, bytes.data(), bytes.size(), 0) == ssize_t(bytes.size()));
  }
  std::string contents() const {
    std::string bytes(static_cast<size_t>(lseek(fd_, 0, SEEK_END)), '\0');
    KELPIE_ASSERT(pread(fd_, bytes.data(), bytes.size(), 0) == ssize_t(bytes.size()));
    return bytes;
  }

 private:
  int fd_;
};

std::vector<uint8_t> random_bytes(size_t size, uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<uint8_t> bytes(size);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(random());
  return bytes;
}

struct Written {
  uint64_t offset;
  std::vector<uint8_t> data;
};

BackupHeader test_header(std::string from = "node-a:7") {
  return BackupHeader{256 * kMiB, 4 * kMiB, "node-a:12", std::move(from)};
}

// Writes a stream of `pieces` and returns its bytes.
std::string write_stream(const BackupHeader& header, const std::vector<Written>& pieces) {
  MemFile file;
  BackupStreamWriter writer(file.fd());
  EXPECT_TRUE(writer.write_header(header).is_ok());
  for (const Written& piece : pieces) {
    Status status = writer.add_extent(piece.offset, piece.data);
    EXPECT_TRUE(status.is_ok()) << status.to_string();
  }
  EXPECT_TRUE(writer.finish().is_ok());
  std::string bytes = file.contents();
  EXPECT_EQ(writer.bytes_written(), bytes.size());
  return bytes;
}

// ~80 KiB in 24 extents of varied, unaligned sizes.
std::vector<Written> small_pieces() {
  std::vector<Written> pieces;
  uint64_t offset = 3;
  for (uint32_t i = 0; i < 24; ++i) {
    size_t size = 1 + (i * 977) % 7000;
    pieces.push_back({offset, random_bytes(size, i)});
    offset += size + i * 4096;
  }
  return pieces;
}

Status verify_bytes(const std::string& bytes) {
  MemFile file(bytes);
  return verify_backup_stream(file.fd()).status();
}

// The header's length: the fixed part, both identities and the checksum.
size_t header_bytes(const std::string& stream) {
  auto u16_at = [&](size_t at) {
    return size_t{static_cast<uint8_t>(stream[at])} | size_t{static_cast<uint8_t>(stream[at + 1])} << 8;
  };
  return 32 + u16_at(28) + u16_at(30) + 4;
}

TEST(BackupStream, RoundTripSplitsLargeExtents) {
  std::vector<Written> pieces = {
      {0, random_bytes(5000, 1)},
      {4 * kMiB - 100, random_bytes(9 * kMiB + 7, 2)},  // three extents: 4 + 4 + 1 MiB
      {256 * kMiB - 512, random_bytes(512, 3)},         // the very end of the VDI
  };
  MemFile file(write_stream(test_header(), pieces));
  Result<BackupStreamIndex> index = verify_backup_stream(file.fd());
  ASSERT_TRUE(index.is_ok()) << index.status().to_string();
  EXPECT_EQ(index->header.size_bytes, 256 * kMiB);
  EXPECT_EQ(index->header.object_size_bytes, 4 * kMiB);
  EXPECT_EQ(index->header.to_identity, "node-a:12");
  EXPECT_EQ(index->header.from_identity, "node-a:7");
  EXPECT_FALSE(index->header.is_full());
  ASSERT_EQ(index->extents.size(), 5u);
  EXPECT_EQ(index->extents[1].length_bytes, 4 * kMiB);
  EXPECT_EQ(index->extents[3].length_bytes, kMiB + 7);
  EXPECT_EQ(index->data_bytes, 5000 + 9 * kMiB + 7 + 512);
  EXPECT_EQ(index->stream_bytes, file.contents().size());

  // Reassemble what each piece wrote from the extents.
  std::vector<uint8_t> buffer(kMaxBackupExtentBytes);
  std::vector<uint8_t> reassembled;
  size_t piece = 0;
  uint64_t piece_end = pieces[0].offset;
  for (const BackupExtent& extent : index->extents) {
    ASSERT_TRUE(read_backup_extent(file.fd(), extent, buffer).is_ok());
    if (extent.offset != piece_end) {
      EXPECT_EQ(reassembled, pieces[piece].data);
      reassembled.clear();
      ++piece;
      EXPECT_EQ(extent.offset, pieces[piece].offset);
    }
    reassembled.insert(reassembled.end(), buffer.begin(), buffer.begin() + extent.length_bytes);
    piece_end = extent.offset + extent.length_bytes;
  }
  EXPECT_EQ(reassembled, pieces.back().data);
}

TEST(BackupStream, FullStreamWithoutExtents) {
  MemFile file(write_stream(test_header(""), {}));
  Result<BackupStreamIndex> index = verify_backup_stream(file.fd());
  ASSERT_TRUE(index.is_ok()) << index.status().to_string();
  EXPECT_TRUE(index->header.is_full());
  EXPECT_TRUE(index->extents.empty());
  EXPECT_EQ(index->data_bytes, 0u);
}

TEST(BackupStream, EveryTruncationIsRefused) {
  std::string stream = write_stream(test_header(), small_pieces());
  ASSERT_GT(stream.size(), 80000u);
  std::set<size_t> cuts;
  for (size_t cut = 0; cut < stream.size(); cut += 1000) cuts.insert(cut);
  for (size_t cut = 0; cut < header_bytes(stream) + 40; ++cut) cuts.insert(cut);
  for (size_t cut = stream.size() - 60; cut < stream.size(); ++cut) cuts.insert(cut);
  for (size_t cut : cuts) {
    Status status = verify_bytes(stream.substr(0, cut));
    ASSERT_FALSE(status.is_ok()) << "accepted a stream cut at byte " << cut;
    EXPECT_EQ(status.code(), EBADMSG);
    EXPECT_EQ(status.message(), cut == 0 ? "backup stream is empty" : "backup stream is truncated")
        << "cut at " << cut;
  }
  EXPECT_TRUE(verify_bytes(stream).is_ok());
}

TEST(BackupStream, DataAfterTheTrailerIsRefused) {
  std::string stream = write_stream(test_header(), small_pieces());
  Status status = verify_bytes(stream + "x");
  EXPECT_EQ(status.message(), "backup stream is corrupt: data after the trailer");
}

bool is_clear_refusal(const Status& status) {
  const std::string& m = status.message();
  return !status.is_ok() && m.find('\n') == std::string::npos &&
         (m == "not a Kelpie backup stream" || m == "backup stream is truncated" ||
          m.starts_with("backup stream is corrupt: ") ||
          m.starts_with("unsupported backup stream version "));
}

std::string flipped(std::string bytes, size_t bit) {
  bytes[bit / 8] = static_cast<char>(bytes[bit / 8] ^ (1 << (bit % 8)));
  return bytes;
}

TEST(BackupStream, FlippedBitsInHeaderAndTrailerAreRefused) {
  std::string stream = write_stream(test_header(), small_pieces());
  size_t header_end = header_bytes(stream);
  for (size_t bit = 0; bit < header_end * 8; ++bit) {
    Status status = verify_bytes(flipped(stream, bit));
    ASSERT_TRUE(is_clear_refusal(status)) << "header bit " << bit << ": " << status.to_string();
  }
  for (size_t bit = (stream.size() - 28) * 8; bit < stream.size() * 8; ++bit) {
    Status status = verify_bytes(flipped(stream, bit));
    ASSERT_TRUE(is_clear_refusal(status)) << "trailer bit " << bit << ": " << status.to_string();
  }
  Status status = verify_bytes(flipped(stream, 0));
  EXPECT_EQ(status.message(), "not a Kelpie backup stream");
  status = verify_bytes(flipped(stream, 40 * 8));  // inside the identity
  EXPECT_EQ(status.message(), "backup stream is corrupt: header checksum mismatch");
  status = verify_bytes(flipped(stream, (stream.size() - 12) * 8));  // trailer's byte count
  EXPECT_EQ(status.message(), "backup stream is corrupt: trailer checksum mismatch");
}

TEST(BackupStream, FlippedBitsInExtentsAreRefused) {
  std::vector<Written> pieces = small_pieces();
  std::string stream = write_stream(test_header(), pieces);
  MemFile file(stream);
  Result<BackupStreamIndex> index = verify_backup_stream(file.fd());
  ASSERT_TRUE(index.is_ok());
  std::mt19937 random(42);
  for (const BackupExtent& extent : index->extents) {
    // Every bit of the extent header.
    for (size_t bit = (extent.data_position - 16) * 8; bit < extent.data_position * 8; ++bit) {
      Status status = verify_bytes(flipped(stream, bit));
      ASSERT_TRUE(is_clear_refusal(status)) << "extent header bit " << bit << ": "
                                            << status.to_string();
    }
    // Some bits of the data, including the first and the last.
    for (size_t bit : {size_t{0}, size_t{extent.length_bytes * 8 - 1},
                       size_t{random() % (extent.length_bytes * 8)}}) {
      Status status = verify_bytes(flipped(stream, extent.data_position * 8 + bit));
      EXPECT_EQ(status.message(), "backup stream is corrupt: checksum mismatch in extent at offset " +
                                      std::to_string(extent.offset));
    }
  }
}

TEST(BackupStream, OversizeLengthsAreRefusedBeforeUse) {
  std::string stream = write_stream(test_header(), small_pieces());
  size_t first_extent = header_bytes(stream);
  auto with_u32 = [&](size_t at, uint32_t value) {
    std::string bytes = stream;
    put_le32(reinterpret_cast<uint8_t*>(bytes.data()) + at, value);
    return bytes;
  };
  auto with_u16 = [&](size_t at, uint16_t value) {
    std::string bytes = stream;
    bytes[at] = static_cast<char>(value);
    bytes[at + 1] = static_cast<char>(value >> 8);
    return bytes;
  };
  EXPECT_EQ(verify_bytes(with_u32(first_extent + 8, 4 * kMiB + 1)).message(),
            "backup stream is corrupt: extent at offset 3 has length 4194305 (limit 4194304)");
  EXPECT_EQ(verify_bytes(with_u32(first_extent + 8, 0xffffffff)).message(),
            "backup stream is corrupt: extent at offset 3 has length 4294967295 (limit 4194304)");
  EXPECT_EQ(verify_bytes(with_u32(first_extent + 8, 0)).message(),
            "backup stream is corrupt: extent at offset 3 has length 0 (limit 4194304)");
  EXPECT_EQ(verify_bytes(with_u16(28, 257)).message(),
            "backup stream is corrupt: identity of 257 bytes (limit 256)");
  EXPECT_EQ(verify_bytes(with_u16(30, 65535)).message(),
            "backup stream is corrupt: identity of 65535 bytes (limit 256)");
  // An extent offset past the end of the VDI, and one before the previous extent.
  std::string past = stream;
  put_le64(reinterpret_cast<uint8_t*>(past.data()) + first_extent, 256 * kMiB);
  EXPECT_EQ(verify_bytes(past).message(),
            "backup stream is corrupt: extent at offset 268435456 goes past the end of the VDI "
            "(268435456 bytes)");
  std::string overlap = stream;
  size_t second_extent = first_extent + 16 + get_le32(reinterpret_cast<const uint8_t*>(
                                                 stream.data()) + first_extent + 8);
  put_le64(reinterpret_cast<uint8_t*>(overlap.data()) + second_extent, 0);
  EXPECT_EQ(verify_bytes(overlap).message(),
            "backup stream is corrupt: extent at offset 0 overlaps the extent before it");
}

TEST(BackupStream, ForeignAndFutureStreamsAreRefused) {
  EXPECT_EQ(verify_bytes("").message(), "backup stream is empty");
  EXPECT_EQ(verify_bytes("hello, world\n").message(), "not a Kelpie backup stream");
  EXPECT_EQ(verify_bytes("KEL").message(), "backup stream is truncated");
  std::string stream = write_stream(test_header(), {});
  stream[8] = 2;
  Status status = verify_bytes(stream);
  EXPECT_EQ(status.code(), EPROTONOSUPPORT);
  EXPECT_EQ(status.message(), "unsupported backup stream version 2 (this kelpie reads version 1)");
}

TEST(BackupStream, WriterRefusesWhatTheFormatCannotHold) {
  MemFile file;
  {
    BackupStreamWriter writer(file.fd());
    BackupHeader header = test_header(std::string(257, 'x'));
    Status status = writer.write_header(header);
    EXPECT_EQ(status.code(), EINVAL);
    EXPECT_EQ(status.message(), "cannot write backup stream: identity of 257 bytes (limit 256)");
  }
  for (BackupHeader header : {BackupHeader{1000, 4 * kMiB, "a", ""},
                              BackupHeader{0, 4 * kMiB, "a", ""},
                              BackupHeader{kMiB, 3 * kMiB, "a", ""},
                              BackupHeader{kMiB, 128 * kMiB, "a", ""},
                              BackupHeader{kMiB, kMiB, "", ""}}) {
    BackupStreamWriter writer(file.fd());
    EXPECT_EQ(writer.write_header(header).code(), EINVAL);
  }
  EXPECT_EQ(lseek(file.fd(), 0, SEEK_END), 0) << "a refused header wrote bytes";

  BackupStreamWriter writer(file.fd());
  ASSERT_TRUE(writer.write_header(test_header()).is_ok());
  std::vector<uint8_t> data(4096, 7);
  ASSERT_TRUE(writer.add_extent(8192, data).is_ok());
  EXPECT_EQ(writer.add_extent(8192 + 4095, data).code(), EINVAL);  // overlaps
  // The error sticks: nothing more is written and finish() refuses.
  EXPECT_EQ(writer.finish().code(), EINVAL);
  BackupStreamWriter past_end(file.fd());
  ASSERT_TRUE(past_end.write_header(test_header()).is_ok());
  EXPECT_EQ(past_end.add_extent(256 * kMiB - 4095, data).code(), EINVAL);
}

TEST(BackupStream, WriterReportsAClosedPipe) {
  signal(SIGPIPE, SIG_IGN);
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  ::close(pipe_fds[0]);
  BackupStreamWriter writer(pipe_fds[1]);
  Status status = writer.write_header(test_header());
  EXPECT_EQ(status.code(), EPIPE);
  EXPECT_EQ(status.message(), "cannot write backup stream");
  ::close(pipe_fds[1]);
}

TEST(BackupStream, SpoolFromAPipeThenVerifyAndDetectLaterChanges) {
  std::vector<Written> pieces = {{0, random_bytes(6 * kMiB, 9)}};
  std::string stream = write_stream(test_header(""), pieces);
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  std::thread feeder([&] {
    for (size_t done = 0; done < stream.size();) {
      ssize_t n = write(pipe_fds[1], stream.data() + done, stream.size() - done);
      KELPIE_ASSERT(n > 0);
      done += static_cast<size_t>(n);
    }
    ::close(pipe_fds[1]);
  });
  Result<int> spooled = spool_backup_stream(pipe_fds[0], ::testing::TempDir());
  feeder.join();
  ::close(pipe_fds[0]);
  ASSERT_TRUE(spooled.is_ok()) << spooled.status().to_string();
  Result<BackupStreamIndex> index = verify_backup_stream(*spooled);
  ASSERT_TRUE(index.is_ok()) << index.status().to_string();
  ASSERT_EQ(index->extents.size(), 2u);

  // The file changes after verification: applying notices.
  const BackupExtent& second = index->extents[1];
  ASSERT_EQ(pwrite(*spooled, "?", 1, static_cast<off_t>(second.data_position + 5)), 1);
  std::vector<uint8_t> buffer(kMaxBackupExtentBytes);
  EXPECT_TRUE(read_backup_extent(*spooled, index->extents[0], buffer).is_ok());
  EXPECT_EQ(read_backup_extent(*spooled, second, buffer).message(),
            "backup stream is corrupt: checksum mismatch in extent at offset 4194304");
  ::close(*spooled);

  Result<int> nowhere = spool_backup_stream(pipe_fds[0], "/nonexistent-dir");
  EXPECT_FALSE(nowhere.is_ok());
}

}  // namespace
}  // namespace kelpie
