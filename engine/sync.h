// Coroutine synchronisation for use within ONE reactor (no thread safety).
//
//  - AsyncMutex: FIFO lock; lock() suspends until the holder calls unlock().
//  - Event: set() wakes every waiter and all later waits return at once.
//  - WaitGroup: add()/done() counter; wait() resumes when it reaches zero.
//  - when_all(): runs tasks concurrently and returns when all have finished;
//    their SQEs go to the kernel in one submission.
#pragma once

#include <coroutine>
#include <deque>
#include <vector>

#include "common/status.h"
#include "engine/reactor.h"
#include "engine/task.h"

namespace kelpie {

class AsyncMutex {
 public:
  class Guard {
   public:
    explicit Guard(AsyncMutex* m) : mutex_(m) {}
    Guard(Guard&& o) noexcept : mutex_(std::exchange(o.mutex_, nullptr)) {}
    Guard(const Guard&) = delete;
    ~Guard() {
      if (mutex_) mutex_->unlock();
    }

   private:
    AsyncMutex* mutex_;
  };

  struct LockAwaiter {
    AsyncMutex& mutex;
    bool await_ready() {
      if (!mutex.locked_) {
        mutex.locked_ = true;
        return true;
      }
      return false;
    }
    void await_suspend(std::coroutine_handle<> h) { mutex.waiters_.push_back(h); }
    Guard await_resume() { return Guard(&mutex); }
  };

  // co_await lock() returns a Guard that unlocks when destroyed.
  LockAwaiter lock() { return LockAwaiter{*this}; }
  bool locked() const { return locked_; }

 private:
  void unlock() {
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    auto next = waiters_.front();
    waiters_.pop_front();
    Reactor::current()->post(next);  // ownership passes to `next`; locked_ stays true
  }

  bool locked_ = false;
  std::deque<std::coroutine_handle<>> waiters_;
};

class Event {
 public:
  bool is_set() const { return set_; }
  void set() {
    set_ = true;
    for (auto h : waiters_) Reactor::current()->post(h);
    waiters_.clear();
  }
  void reset() { set_ = false; }

  struct Awaiter {
    Event& event;
    bool await_ready() const { return event.set_; }
    void await_suspend(std::coroutine_handle<> h) { event.waiters_.push_back(h); }
    void await_resume() const {}
  };
  Awaiter wait() { return Awaiter{*this}; }

 private:
  bool set_ = false;
  std::vector<std::coroutine_handle<>> waiters_;
};

class WaitGroup {
 public:
  void add(int n = 1) {
    count_ += n;
    if (count_ > 0) zero_.reset();
  }
  void done() {
    KELPIE_ASSERT(count_ > 0);
    if (--count_ == 0) zero_.set();
  }
  int count() const { return count_; }
  Event::Awaiter wait() {
    if (count_ == 0) zero_.set();
    return zero_.wait();
  }

 private:
  int count_ = 0;
  Event zero_;
};

// Runs every task concurrently on the current reactor and returns the first
// failure (or ok). All tasks finish before it returns.
Task<Status> when_all(std::vector<Task<Status>> tasks);

}  // namespace kelpie
