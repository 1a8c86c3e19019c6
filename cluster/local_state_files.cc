#include "cluster/local_state_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "cluster/membership_codec.h"
#include "common/admin_wire.h"
#include "common/crc32c.h"

namespace kelpie::local_state {

using nlohmann::json;

Status os_error(const std::string& what, const std::string& path) {
  return Status::error(errno, what + " " + path);
}

void put_u32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}
void put_u64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}
uint64_t get_le(const char* data, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<uint8_t>(data[i]);
  return value;
}

Status write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("write", path);
    }
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status fsync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return os_error("open", dir);
  if (::fsync(fd.get()) != 0) return os_error("fsync", dir);
  return Status::ok();
}

Result<std::string> read_file(const std::string& path, uint64_t offset, size_t limit) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return os_error("open", path);
  std::string out;
  char buffer[65536];
  while (out.size() < limit) {
    ssize_t n = ::pread(fd.get(), buffer, std::min(sizeof(buffer), limit - out.size()),
                        static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("read", path);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return out;
}

// Replaces dir/name: temp file, fsync, rename, fsync of the directory.
Status write_file_atomically(const std::string& dir, const std::string& name,
                             const std::string& data) {
  static std::atomic<uint64_t> sequence{0};
  std::string final_path = dir + "/" + name;
  std::string temp_path = dir + "/." + name + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(sequence.fetch_add(1));
  {
    Fd fd(::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) return os_error("create", temp_path);
    Status written = write_all(fd.get(), data, temp_path);
    if (written && ::fsync(fd.get()) != 0) written = os_error("fsync", temp_path);
    if (!written) {
      ::unlink(temp_path.c_str());
      return written;
    }
  }
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    Status renamed = os_error("rename", final_path);
    ::unlink(temp_path.c_str());
    return renamed;
  }
  return fsync_dir(dir);
}

// The state lock: released when the Fd closes.
Result<Fd> lock_state(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) return os_error("open", path);
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return os_error("flock", path);
  }
  return fd;
}

std::string encode_record(const EpochRecord& record) {
  std::string body = dump_json(record_to_json(record));
  std::string out;
  put_u32(out, static_cast<uint32_t>(body.size()));
  put_u32(out, crc32c(body.data(), body.size()));
  return out + body;
}

// Parses whole records from `bytes`; stops at the first incomplete or bad one.
// Returns how many bytes the good records take.
size_t parse_records(const std::string& bytes, uint64_t last_epoch,
                     std::vector<EpochRecord>& out, std::string& problem) {
  size_t at = 0;
  while (bytes.size() - at >= kRecordHeaderBytes) {
    uint32_t length = static_cast<uint32_t>(get_le(bytes.data() + at, 4));
    uint32_t crc = static_cast<uint32_t>(get_le(bytes.data() + at + 4, 4));
    if (length > kMaxRecordBytes) {
      problem = "record length " + std::to_string(length) + " out of range";
      break;
    }
    if (bytes.size() - at - kRecordHeaderBytes < length) break;  // incomplete
    const char* body = bytes.data() + at + kRecordHeaderBytes;
    if (crc32c(body, length) != crc) {
      problem = "record crc mismatch";
      break;
    }
    json parsed = json::parse(body, body + length, nullptr, false);
    Result<EpochRecord> record =
        parsed.is_discarded() ? Result<EpochRecord>(Status::error(EBADMSG, "not JSON"))
                              : record_from_json(parsed);
    if (!record) {
      problem = "bad record: " + record.status().message();
      break;
    }
    if (record->epoch != last_epoch + 1) {
      problem = "epoch " + std::to_string(record->epoch) + " follows " +
                std::to_string(last_epoch);
      break;
    }
    last_epoch = record->epoch;
    out.push_back(std::move(*record));
    at += kRecordHeaderBytes + length;
  }
  return at;
}

// Names in `dir` ending with `suffix` (without it), skipping temp files.
std::vector<std::string> list_dir(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> names;
  DIR* handle = ::opendir(dir.c_str());
  if (handle == nullptr) return names;
  while (dirent* entry = ::readdir(handle)) {
    std::string name = entry->d_name;
    if (name.empty() || name[0] == '.' || name.size() <= suffix.size()) continue;
    if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    names.push_back(name.substr(0, name.size() - suffix.size()));
  }
  ::closedir(handle);
  return names;
}

}  // namespace kelpie::local_state
