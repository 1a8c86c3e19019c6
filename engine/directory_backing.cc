#include "engine/directory_backing.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "engine/superblock.h"

namespace kelpie {
namespace {

class FileDirectoryBacking final : public DirectoryBacking {
 public:
  FileDirectoryBacking(std::string dir, std::string name, bool cross_process)
      : dir_(std::move(dir)), name_(std::move(name)), cross_process_(cross_process) {}
  ~FileDirectoryBacking() override {
    if (lock_fd_ >= 0) ::close(lock_fd_);
  }

  Status lock() override {
    if (!cross_process_) return Status::ok();
    if (lock_fd_ < 0) {
      std::string path = dir_ + "/" + name_ + ".lock";
      lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (lock_fd_ < 0) return Status::error(errno, "cannot open " + path + ": " + std::strerror(errno));
    }
    while (::flock(lock_fd_, LOCK_EX) != 0) {
      if (errno != EINTR) return Status::error(errno, "cannot lock the VDI directory");
    }
    return Status::ok();
  }

  void unlock() override {
    if (cross_process_ && lock_fd_ >= 0) ::flock(lock_fd_, LOCK_UN);
  }

  Result<std::string> read() override {
    std::string path = dir_ + "/" + name_;
    std::ifstream in(path);
    if (!in) {
      if (errno == ENOENT) return std::string();
      return Status::error(EIO, "cannot read " + path);
    }
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  Status write(const std::string& document) override {
    return write_file_atomically(dir_, name_, document.data(), document.size());
  }

 private:
  std::string dir_;
  std::string name_;
  bool cross_process_;
  int lock_fd_ = -1;
};

}  // namespace

std::unique_ptr<DirectoryBacking> make_file_directory_backing(std::string dir, std::string name,
                                                              bool cross_process) {
  return std::make_unique<FileDirectoryBacking>(std::move(dir), std::move(name), cross_process);
}

}  // namespace kelpie
