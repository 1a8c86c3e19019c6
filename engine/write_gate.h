// WriteGate: lets the control plane stop and drain a VDI's writes (live snapshot).
//
// Contract:
//  - Data-path operations that change a VDI enter() on their reactor before they
//    start and leave() when they are done. enter() suspends while the gate is closed.
//  - close_and_drain() (any non-reactor thread) closes the gate and returns once no
//    operation is inside; open() lets the parked ones in, each on its own reactor.
//  - Readers never enter: a snapshot freezes what writes see, reads go on.
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "engine/reactor.h"

namespace kelpie {

class WriteGate {
 public:
  struct EnterAwaiter {
    WriteGate& gate;
    bool await_ready() {
      gate.inside_.fetch_add(1);
      if (!gate.closed_.load()) return true;
      gate.inside_.fetch_sub(1);
      return false;
    }
    bool await_suspend(std::coroutine_handle<> h) {
      std::lock_guard lock(gate.mutex_);
      if (!gate.closed_.load()) {
        gate.inside_.fetch_add(1);
        return false;
      }
      gate.waiters_.emplace_back(Reactor::current(), h);
      return true;
    }
    void await_resume() {}
  };

  EnterAwaiter enter() { return EnterAwaiter{*this}; }
  void leave() { inside_.fetch_sub(1); }

  void close_and_drain() {
    {
      std::lock_guard lock(mutex_);
      closed_.store(true);
    }
    while (inside_.load() > 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }

  void open() {
    std::vector<std::pair<Reactor*, std::coroutine_handle<>>> parked;
    {
      std::lock_guard lock(mutex_);
      closed_.store(false);
      parked.swap(waiters_);
      inside_.fetch_add(static_cast<int>(parked.size()));  // entered on their behalf
    }
    for (auto& [reactor, handle] : parked) reactor->post(handle);
  }

 private:
  std::atomic<int> inside_{0};
  std::atomic<bool> closed_{false};
  std::mutex mutex_;
  std::vector<std::pair<Reactor*, std::coroutine_handle<>>> waiters_;
};

// Leaves the gate when destroyed.
class GatePass {
 public:
  explicit GatePass(WriteGate& gate) : gate_(&gate) {}
  GatePass(const GatePass&) = delete;
  ~GatePass() { gate_->leave(); }

 private:
  WriteGate* gate_;
};

}  // namespace kelpie
