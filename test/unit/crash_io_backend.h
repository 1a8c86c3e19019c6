// CrashIoBackend: an IoBackend over real files that can "lose power", for unit tests
// of everything above the I/O seam (LocalStore, the VDI layer, a replica's store).
//
// Like LevelDB's fault_injection_test and Vitastor's ringloop_mock, it keeps, for
// every file opened through it, the state as of the last sync, and crash() puts every
// such file back to that state, dropping what was never synced:
//  - The content of a file is durable as of its last datasync(), plus the byte
//    ranges of later write(dsync=true) calls (RWF_DSYNC promises that write alone,
//    not the rest of the file: a copy_range or plain write beside it is not durable).
//  - A directory entry (a create or an unlink) is durable once the directory was
//    datasync'd after it, or, for a create, once the new file itself was synced
//    (what ext4 and XFS do: fsync of a new file commits the transaction that made
//    its entry; LocalStore's dirty logs rely on that). A crash undoes other entries:
//    an unsynced new file vanishes, an unsynced unlink brings the old file back.
//  - Everything not durable is lost, or, with crash(seed), "torn": each 4 KiB block
//    that differs from its durable content keeps the newer bytes or not, chosen by the
//    seed (so a failing test prints the seed that replays it). File sizes go back to
//    the durable size either way.
// Files that existed before the backend first opened them count as durable as found.
//
// Faults (each fires once, for the next datasync of the file at `path`):
//  - fail_datasync(path, error): fails with `error`; nothing becomes durable.
//  - hold_datasync(path, release_on, error): waits until a datasync of the file at
//    `release_on` has begun (any reactor), then completes with `error` (0: success,
//    everything written before the hold began is durable). wait_held() blocks a test
//    thread until the held sync has begun. Deterministic: no timing involved.
//
// Contract: calls may come from any reactor thread (state is under a mutex);
// held datasyncs resume on the reactor that issued them. crash() must be called
// with no I/O in flight (the store stopped) and leaves this backend's fds stale:
// make a new backend for the restart. Paths are relative to dir_fd.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/io_backend.h"
#include "engine/reactor.h"

namespace kelpie {

class CrashIoBackend final : public IoBackend {
 public:
  explicit CrashIoBackend(int dir_fd) : dir_fd_(dir_fd) {}

  Task<Result<int>> open(std::string path, int flags) override {
    std::lock_guard lock(mutex_);
    struct stat before {};
    bool existed = ::fstatat(dir_fd_, path.c_str(), &before, 0) == 0;
    int fd = ::openat(dir_fd_, path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd < 0) co_return Status::error(errno, "open " + path);
    Entry& entry = entries_[path];
    if (entry.current == nullptr || !existed) {
      auto file = std::make_shared<File>();
      file->directory = (flags & O_DIRECTORY) != 0;
      if (existed) {  // first seen here: durable as found
        file->synced = read_all(fd);
        entry.durable = file;
      }
      entry.current = file;
    }
    fds_[fd] = Open{path, entry.current};
    co_return fd;
  }

  void close(int fd) override {
    std::lock_guard lock(mutex_);
    fds_.erase(fd);
    ::close(fd);
  }

  Task<Status> unlink(std::string path) override {
    std::lock_guard lock(mutex_);
    if (::unlinkat(dir_fd_, path.c_str(), 0) != 0) co_return Status::error(errno, "unlink " + path);
    entries_[path].current = nullptr;
    co_return Status::ok();
  }

  Task<Result<size_t>> read(int fd, std::span<uint8_t> buf, uint64_t offset) override {
    co_return pread_full(fd, buf, offset);
  }

  Task<Status> write(int fd, std::span<const uint8_t> buf, uint64_t offset, bool dsync) override {
    std::lock_guard lock(mutex_);
    if (::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(offset)) != static_cast<ssize_t>(buf.size())) {
      co_return Status::error(errno == 0 ? EIO : errno, "write");
    }
    if (dsync) {
      Open& open = fds_.at(fd);
      File& file = *open.file;
      if (file.synced.size() < offset + buf.size()) file.synced.resize(offset + buf.size(), 0);
      std::memcpy(file.synced.data() + offset, buf.data(), buf.size());
      entry_made_durable(open);
    }
    co_return Status::ok();
  }

  Task<Status> datasync(int fd) override {
    std::shared_ptr<Held> held;
    {
      std::lock_guard lock(mutex_);
      Open& open = fds_.at(fd);
      // Begun: releases holds waiting for this file.
      for (auto& [path, waiting] : holds_) {
        if (waiting->release_on == open.path && waiting->begun && !waiting->released) {
          waiting->released = true;
          if (waiting->handle) waiting->reactor->post(waiting->handle);
        }
      }
      if (auto found = faults_.find(open.path); found != faults_.end()) {
        int error = found->second;
        faults_.erase(found);
        co_return Status::error(error, "injected fdatasync failure");
      }
      if (auto found = holds_.find(open.path); found != holds_.end() && !found->second->begun) {
        held = found->second;
        held->begun = true;
        held->snapshot = read_all(fd);
        held_cv_.notify_all();
      }
    }
    if (held) {
      co_await HoldAwaiter{*this, *held};
      std::lock_guard lock(mutex_);
      holds_.erase(fds_.at(fd).path);
      if (held->error != 0) co_return Status::error(held->error, "injected fdatasync failure");
      Open& open = fds_.at(fd);
      open.file->synced = std::move(held->snapshot);
      entry_made_durable(open);
      co_return Status::ok();
    }
    std::lock_guard lock(mutex_);
    Open& open = fds_.at(fd);
    if (open.file->directory) {
      std::string prefix = open.path + "/";
      for (auto& [path, entry] : entries_) {
        if (path.starts_with(prefix) && path.find('/', prefix.size()) == std::string::npos) {
          entry.durable = entry.current;
        }
      }
    } else {
      open.file->synced = read_all(fd);
      entry_made_durable(open);
    }
    co_return Status::ok();
  }

  Task<Status> fallocate(int fd, int mode, uint64_t offset, uint64_t length) override {
    if (::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
      co_return Status::error(errno, "fallocate");
    }
    co_return Status::ok();
  }

  Status truncate(int fd, uint64_t length) override {
    if (::ftruncate(fd, static_cast<off_t>(length)) != 0) return Status::error(errno, "ftruncate");
    return Status::ok();
  }

  Task<Status> copy_range(int src_fd, uint64_t src_offset, int dst_fd, uint64_t dst_offset,
                          uint64_t length) override {
    std::vector<uint8_t> bytes(length);
    ssize_t n = ::pread(src_fd, bytes.data(), length, static_cast<off_t>(src_offset));
    if (n < 0) co_return Status::error(errno, "copy_range read");
    if (static_cast<uint64_t>(n) < length) std::memset(bytes.data() + n, 0, length - static_cast<uint64_t>(n));
    if (::pwrite(dst_fd, bytes.data(), length, static_cast<off_t>(dst_offset)) != static_cast<ssize_t>(length)) {
      co_return Status::error(EIO, "copy_range write");
    }
    co_return Status::ok();
  }

  // Power loss: every file opened through this backend goes back to its durable
  // state (see the header). Without a seed everything unsynced is dropped.
  void crash(std::optional<uint64_t> torn_seed = std::nullopt) {
    std::lock_guard lock(mutex_);
    std::mt19937_64 random(torn_seed.value_or(0));
    for (auto& [path, entry] : entries_) {
      if (entry.current != nullptr && entry.current->directory) continue;
      if (entry.durable == nullptr) {
        ::unlinkat(dir_fd_, path.c_str(), 0);
        continue;
      }
      std::vector<uint8_t> image = entry.durable->synced;
      if (torn_seed && entry.durable == entry.current) tear(path, image, random);
      int fd = ::openat(dir_fd_, path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) continue;
      if (!image.empty()) {
        [[maybe_unused]] ssize_t n = ::pwrite(fd, image.data(), image.size(), 0);
      }
      ::close(fd);
    }
    entries_.clear();
    fds_.clear();
    holds_.clear();
    faults_.clear();
  }

  void fail_datasync(const std::string& path, int error) {
    std::lock_guard lock(mutex_);
    faults_[path] = error;
  }
  void hold_datasync(const std::string& path, const std::string& release_on, int error) {
    std::lock_guard lock(mutex_);
    auto held = std::make_shared<Held>();
    held->release_on = release_on;
    held->error = error;
    holds_[path] = held;
  }
  // Blocks the calling (test) thread until the held datasync of `path` has begun.
  void wait_held(const std::string& path) {
    std::unique_lock lock(mutex_);
    held_cv_.wait(lock, [&] {
      auto found = holds_.find(path);
      return found == holds_.end() || found->second->begun;
    });
  }

 private:
  struct File {
    bool directory = false;
    std::vector<uint8_t> synced;  // durable content of this file (inode)
  };
  struct Entry {
    std::shared_ptr<File> current;  // what the path names now (nullptr: unlinked)
    std::shared_ptr<File> durable;  // what it names after a crash (nullptr: nothing)
  };
  struct Open {
    std::string path;
    std::shared_ptr<File> file;
  };
  struct Held {
    std::string release_on;
    int error = 0;
    bool begun = false;
    bool released = false;
    std::vector<uint8_t> snapshot;  // the content when the sync began
    Reactor* reactor = nullptr;
    std::coroutine_handle<> handle;
  };
  struct HoldAwaiter {
    CrashIoBackend& backend;
    Held& held;
    bool await_ready() {
      std::lock_guard lock(backend.mutex_);
      return held.released;
    }
    bool await_suspend(std::coroutine_handle<> h) {
      std::lock_guard lock(backend.mutex_);
      if (held.released) return false;
      held.reactor = Reactor::current();
      held.handle = h;
      return true;
    }
    void await_resume() {}
  };

  // A synced file's own entry is durable with it (journaling filesystems).
  void entry_made_durable(const Open& open) {
    auto found = entries_.find(open.path);
    if (found != entries_.end() && found->second.current == open.file) found->second.durable = open.file;
  }

  static std::vector<uint8_t> read_all(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) return {};
    std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::pread(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    bytes.resize(done);
    return bytes;
  }

  // Each 4 KiB block of the durable image whose on-disk bytes differ keeps the new
  // bytes with probability 1/2.
  void tear(const std::string& path, std::vector<uint8_t>& image, std::mt19937_64& random) {
    int fd = ::openat(dir_fd_, path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    std::vector<uint8_t> now = read_all(fd);
    ::close(fd);
    constexpr size_t kBlock = 4096;
    for (size_t at = 0; at < image.size() && at < now.size(); at += kBlock) {
      size_t n = std::min({kBlock, image.size() - at, now.size() - at});
      if (std::memcmp(image.data() + at, now.data() + at, n) == 0) continue;
      if (random() & 1) std::memcpy(image.data() + at, now.data() + at, n);
    }
  }

  int dir_fd_;
  std::mutex mutex_;
  std::condition_variable held_cv_;
  std::map<std::string, Entry> entries_;
  std::unordered_map<int, Open> fds_;
  std::unordered_map<std::string, int> faults_;
  std::unordered_map<std::string, std::shared_ptr<Held>> holds_;
};

}  // namespace kelpie
