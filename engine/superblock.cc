#include "engine/superblock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <vector>

#include "common/bytes.h"
#include "common/crc32c.h"

namespace kelpie {
namespace {
constexpr char kMagic[8] = {'K', 'E', 'L', 'P', 'I', 'E', 'S', 'B'};
constexpr size_t kSize = 4096;
constexpr char kFileName[] = "superblock";

std::vector<uint8_t> encode(const Superblock& sb) {
  std::vector<uint8_t> out(kSize, 0);
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, 8);
  put_le32(p + 8, sb.format_version);
  put_le64(p + 16, sb.compat_features);
  put_le64(p + 24, sb.ro_compat_features);
  put_le64(p + 32, sb.incompat_features);
  std::memcpy(p + 40, sb.node_uuid.data(), 16);
  std::memcpy(p + 56, sb.cluster_uuid.data(), 16);
  put_le64(p + 72, static_cast<uint64_t>(sb.created_unix_s));
  put_le32(p + kSize - 4, crc32c(p, kSize - 4));
  return out;
}

Result<Superblock> decode(const std::vector<uint8_t>& in, const std::string& path) {
  const uint8_t* p = in.data();
  if (in.size() != kSize || std::memcmp(p, kMagic, 8) != 0) {
    return Status::error(EINVAL, path + " is not a Kelpie superblock");
  }
  if (get_le32(p + kSize - 4) != crc32c(p, kSize - 4)) {
    return Status::error(EINVAL, path + " is damaged (checksum mismatch)");
  }
  Superblock sb;
  sb.format_version = get_le32(p + 8);
  sb.compat_features = get_le64(p + 16);
  sb.ro_compat_features = get_le64(p + 24);
  sb.incompat_features = get_le64(p + 32);
  std::memcpy(sb.node_uuid.data(), p + 40, 16);
  std::memcpy(sb.cluster_uuid.data(), p + 56, 16);
  sb.created_unix_s = static_cast<int64_t>(get_le64(p + 72));
  if (sb.format_version > kFormatVersion || (sb.incompat_features & ~kKnownIncompatFeatures) != 0) {
    return Status::error(ENOTSUP, path + " has format version " + std::to_string(sb.format_version) +
                                      " or features this kelpied does not support");
  }
  return sb;
}
}  // namespace

Status write_file_atomically(const std::string& dir, const std::string& name, const void* data,
                             size_t size) {
  std::string tmp = dir + "/." + name + ".tmp";
  std::string final_path = dir + "/" + name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::error(errno, "create " + tmp);
  const auto* p = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return Status::error(err, "write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return Status::error(err, "fsync " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) return Status::error(errno, "rename " + tmp);
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Status::error(errno, "open " + dir);
  int rc = ::fsync(dir_fd);
  int err = errno;
  ::close(dir_fd);
  return rc == 0 ? Status::ok() : Status::error(err, "fsync " + dir);
}

Result<Superblock> load_or_create_superblock(const std::string& data_dir) {
  std::string path = data_dir + "/" + kFileName;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) return Status::error(errno, "open " + path);
  if (fd >= 0) {
    std::vector<uint8_t> bytes(kSize + 1);
    ssize_t n = ::pread(fd, bytes.data(), bytes.size(), 0);
    ::close(fd);
    if (n < 0) return Status::error(errno, "read " + path);
    bytes.resize(static_cast<size_t>(n));
    return decode(bytes, path);
  }
  Superblock sb;
  sb.node_uuid = make_uuid();
  sb.created_unix_s = std::time(nullptr);
  std::vector<uint8_t> bytes = encode(sb);
  Status st = write_file_atomically(data_dir, kFileName, bytes.data(), bytes.size());
  if (!st.is_ok()) return st;
  return sb;
}

Status save_superblock(const std::string& data_dir, const Superblock& superblock) {
  std::vector<uint8_t> bytes = encode(superblock);
  return write_file_atomically(data_dir, kFileName, bytes.data(), bytes.size());
}

}  // namespace kelpie
