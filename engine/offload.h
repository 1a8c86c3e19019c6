// offload(): run a blocking function on a short-lived thread and resume the awaiting
// coroutine on its own reactor afterwards — for rare control-plane steps reached from
// the data path (an NBD attach taking the cluster-wide VDI lock), so a reactor never
// blocks on a lock, a file or another daemon.
//
// Contract: T must be movable. The function runs on a new std::thread (not a
// reactor): it may call block_on() on any reactor, including the caller's.
#pragma once

#include <coroutine>
#include <functional>
#include <optional>
#include <thread>

#include "engine/reactor.h"
#include "engine/task.h"

namespace kelpie {

template <typename T>
class OffloadAwaiter {
 public:
  explicit OffloadAwaiter(std::function<T()> work) : work_(std::move(work)) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> handle) {
    Reactor* home = Reactor::current();
    std::thread([this, handle, home] {
      result_.emplace(work_());
      home->post(handle);
    }).detach();
  }
  T await_resume() { return std::move(*result_); }

 private:
  std::function<T()> work_;
  std::optional<T> result_;
};

template <typename T>
Task<T> offload(std::function<T()> work) {
  co_return co_await OffloadAwaiter<T>(std::move(work));
}

}  // namespace kelpie
