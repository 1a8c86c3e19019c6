// StoreFixture: a LocalStore on real reactors (two unless reactor_count_ says otherwise
// before SetUp()) over a scratch directory, for
// the engine's unit tests. start()/stop() may be repeated to test restarts;
// stop(false) leaves the dirty logs behind like a kill -9. A subclass that sets
// power_loss_io_ before SetUp() runs the store on a CrashIoBackend, and power_loss()
// stops it like a kill -9 and then drops every write no fdatasync covered.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/local_store.h"
#include "engine/reactor_pool.h"
#include "test/unit/crash_io_backend.h"

namespace kelpie {

class StoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kelpie-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    start();
  }
  void TearDown() override {
    stop();
    std::filesystem::remove_all(dir_);
  }
  // Subclasses open what sits above the store here.
  virtual void on_started() {}
  virtual void on_stopping() {}

  void start() {
    dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
    if (power_loss_io_) {
      auto crash_io = std::make_unique<CrashIoBackend>(dir_fd_);
      crash_io_ = crash_io.get();
      io_ = std::move(crash_io);
    } else {
      io_ = std::make_unique<UringIoBackend>(dir_fd_);
    }
    std::vector<Reactor*> raw;
    for (unsigned i = 0; i < reactor_count_; ++i) {
      reactors_.push_back(std::make_unique<Reactor>(i, 64));
      raw.push_back(reactors_.back().get());
      Reactor* r = raw.back();
      threads_.emplace_back([r] { r->run(); });
    }
    pool_ = std::make_unique<ReactorPool>(raw);
    store_ = std::make_unique<LocalStore>(raw, *io_, dir_.string());
    ASSERT_TRUE(store_->open().is_ok());
    on_started();
  }
  void stop(bool clean = true) { stop_then(clean, [] {}); }
  // A power loss: stopped uncleanly, then everything unsynced is lost (torn at 4 KiB
  // with a seed). start() comes back on a fresh backend.
  void power_loss(std::optional<uint64_t> torn_seed = std::nullopt) {
    ASSERT_NE(crash_io_, nullptr) << "set power_loss_io_ before SetUp()";
    stop_then(false, [&] { crash_io_->crash(torn_seed); });
  }
  template <typename Fn>
  void stop_then(bool clean, Fn before_io_reset) {
    if (!store_) return;
    on_stopping();
    if (clean) {
      EXPECT_TRUE(store_->close().is_ok());
    }
    for (auto& r : reactors_) r->stop();
    for (auto& t : threads_) t.join();
    store_.reset();
    pool_.reset();
    threads_.clear();
    reactors_.clear();
    before_io_reset();
    io_.reset();
    crash_io_ = nullptr;
    ::close(dir_fd_);
  }
  Reactor& r0() { return *reactors_[0]; }

  static inline int counter_ = 0;
  std::filesystem::path dir_;
  int dir_fd_ = -1;
  unsigned reactor_count_ = 2;  // set before SetUp()
  bool power_loss_io_ = false;
  std::unique_ptr<IoBackend> io_;
  CrashIoBackend* crash_io_ = nullptr;
  std::vector<std::unique_ptr<Reactor>> reactors_;
  std::vector<std::thread> threads_;
  std::unique_ptr<ReactorPool> pool_;
  std::unique_ptr<LocalStore> store_;
};

}  // namespace kelpie
