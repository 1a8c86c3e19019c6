// Reactor: one thread, one io_uring, run-to-completion coroutines.
//
// Contract:
//  - Every Reactor runs on its own thread (run()); Reactor::current() is that
//    reactor on its thread and nullptr elsewhere.
//  - Socket and file operations are awaitables that submit one SQE to the current
//    reactor's ring and resume the awaiting coroutine with the CQE's result
//    (negative errno on failure). They must be awaited on a reactor thread.
//  - Submissions are batched: SQEs prepared while coroutines run are submitted
//    together when the reactor runs out of ready work.
//  - Only run()'s thread touches the ring (it is the ring's single issuer, with
//    DEFER_TASKRUN: completions are reaped when that thread enters the kernel, never
//    delivered by interrupting it). run() may be called once per Reactor.
//  - Cross-thread work is a message: post() queues a coroutine handle on the
//    target reactor (safe from any thread) and wakes it through an eventfd.
//    `co_await switch_to(r)` moves the awaiting coroutine onto reactor r.
//  - block_on() lets a non-reactor thread (admin, main) run a Task on a reactor and
//    wait for its result.
//  - Polling (adaptive, like QEMU's poll-max-ns): with nothing to run, the loop
//    spins on the completion queue, the ring's task-work flag and the inbox for up
//    to poll_ns before it sleeps in io_uring_enter. poll_ns starts at 0; a wait
//    no longer than `poll_max_us` doubles it (from 4 us), a longer one resets it to 0,
//    so a reactor polls only while its events come back faster than a sleep and a
//    wake-up would take (QD1 reads), and sleeps at once while it waits on slow
//    disks. While a PollHold lives on a reactor (a peer call in flight), the loop
//    neither polls nor adapts the poll: on a small host the spin would take the CPU
//    the peer needs to answer, and the poll is for the next client request.
//    poll_max_us 0 (the default) never polls.
//  - Time: sleep_for() and Timer (IORING_OP_TIMEOUT) wait on the current reactor
//    without a thread; async_connect() bounds a connect with a linked timeout.
#pragma once

#include <liburing.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/status.h"
#include "engine/task.h"

namespace kelpie {

class Reactor {
 public:
  // `index` names the reactor in logs and in object ownership; `poll_max_us`
  // bounds the adaptive poll before sleeping (0: never poll).
  Reactor(unsigned index, unsigned queue_depth, unsigned poll_max_us = 0);
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  static Reactor* current();
  unsigned index() const { return index_; }

  // Runs the loop on the calling thread until stop() is called and no ready work is left.
  void run();
  // Asks the loop to return; safe from any thread.
  void stop();

  // Queues `h` to be resumed on this reactor. Safe from any thread.
  void post(std::coroutine_handle<> h);
  // Resumes `h` only after the next round of completions has been reaped, so
  // pending I/O of other coroutines goes first. Only on this reactor's thread.
  void defer(std::coroutine_handle<> h) { deferred_.push_back(h); }

  // Prepares an SQE whose completion resumes `completion`; with nullptr nobody
  // waits and the CQE is dropped (cancellations, linked timeouts). Only on this
  // reactor's thread.
  struct Completion {
    std::coroutine_handle<> handle;
    int result = 0;
  };
  io_uring_sqe* get_sqe(Completion* completion);
  // Makes sure the next `count` get_sqe() calls land in one submission, so a
  // linked pair is never split. Only on this reactor's thread.
  void reserve_sqes(unsigned count);

  // Runs `task` on this reactor and waits for it; call only from a non-reactor thread.
  template <typename T>
  T block_on(Task<T> task);
  void block_on(Task<void> task);

  // Idle waits that polled before sleeping, since run() began; only on this
  // reactor's thread (tests and counters).
  uint64_t polls() const { return polls_; }

 private:
  friend class PollHold;
  void arm_eventfd_read();
  void drain_inbox();
  void wake();
  // Spins until a completion, deferred task work or a post() is there (true) or
  // `deadline_ns` (CLOCK_MONOTONIC) passes (false). SQEs must be submitted first.
  bool poll_until(int64_t deadline_ns);

  unsigned index_;
  int64_t poll_max_ns_ = 0;
  int64_t poll_ns_ = 0;
  unsigned poll_holds_ = 0;
  uint64_t polls_ = 0;
  io_uring ring_;
  int event_fd_ = -1;
  uint64_t eventfd_value_ = 0;
  std::vector<std::coroutine_handle<>> ready_;
  std::vector<std::coroutine_handle<>> running_;
  std::vector<std::coroutine_handle<>> deferred_;

  std::mutex inbox_mutex_;
  std::vector<std::coroutine_handle<>> inbox_;
  bool sleeping_ = false;
  std::atomic<bool> posted_{false};  // inbox_ may be non-empty (read while polling)
  std::atomic<bool> stop_requested_{false};
};

// Keeps the current reactor (if any) from polling while it lives: for a wait on
// another process that needs this host's CPU to answer (a peer call). Create and
// destroy it on the same reactor thread (a coroutine that completes where it began).
class PollHold {
 public:
  PollHold() : reactor_(Reactor::current()) {
    if (reactor_ != nullptr) ++reactor_->poll_holds_;
  }
  ~PollHold() {
    if (reactor_ == nullptr) return;
    KELPIE_ASSERT(Reactor::current() == reactor_ && reactor_->poll_holds_ > 0);
    --reactor_->poll_holds_;
  }
  PollHold(const PollHold&) = delete;
  PollHold& operator=(const PollHold&) = delete;

 private:
  Reactor* reactor_;
};

// The adaptive poll (see the contract above): the poll after an idle wait of
// `waited_ns` (poll plus sleep) that followed a poll of `poll_ns`. Pure; exposed
// for tests.
constexpr int64_t kPollStartNs = 4'000;
int64_t next_poll_ns(int64_t poll_ns, int64_t waited_ns, int64_t poll_max_ns);

// Awaitable for one io_uring operation; `prep` fills the SQE.
template <typename Prep>
class UringOp {
 public:
  explicit UringOp(Prep prep) : prep_(std::move(prep)) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    completion_.handle = h;
    Reactor* reactor = Reactor::current();
    KELPIE_ASSERT(reactor != nullptr);
    prep_(reactor->get_sqe(&completion_));
  }
  int await_resume() const noexcept { return completion_.result; }

 private:
  Prep prep_;
  Reactor::Completion completion_;
};

template <typename Prep>
UringOp<Prep> uring_op(Prep prep) {
  return UringOp<Prep>(std::move(prep));
}

// The operations Kelpie uses. Each yields the CQE result (>= 0) or -errno.
inline auto async_read(int fd, void* buf, size_t len, uint64_t offset) {
  return uring_op([=](io_uring_sqe* s) { io_uring_prep_read(s, fd, buf, len, offset); });
}
inline auto async_write(int fd, const void* buf, size_t len, uint64_t offset, int rw_flags = 0) {
  return uring_op([=](io_uring_sqe* s) {
    io_uring_prep_write(s, fd, buf, len, offset);
    s->rw_flags = rw_flags;
  });
}
inline auto async_fdatasync(int fd) {
  return uring_op([=](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, IORING_FSYNC_DATASYNC); });
}
inline auto async_fallocate(int fd, int mode, uint64_t offset, uint64_t len) {
  return uring_op([=](io_uring_sqe* s) { io_uring_prep_fallocate(s, fd, mode, offset, len); });
}
inline auto async_recv(int fd, void* buf, size_t len) {
  return uring_op([=](io_uring_sqe* s) { io_uring_prep_recv(s, fd, buf, len, 0); });
}
inline auto async_sendmsg(int fd, const msghdr* msg) {
  return uring_op([=](io_uring_sqe* s) { io_uring_prep_sendmsg(s, fd, msg, MSG_NOSIGNAL); });
}
inline auto async_accept(int fd) {
  return uring_op([=](io_uring_sqe* s) { io_uring_prep_accept(s, fd, nullptr, nullptr, SOCK_CLOEXEC); });
}

inline __kernel_timespec to_kernel_timespec(std::chrono::nanoseconds duration) {
  if (duration.count() < 0) duration = std::chrono::nanoseconds(0);
  __kernel_timespec ts{};
  ts.tv_sec = duration.count() / 1000000000;
  ts.tv_nsec = duration.count() % 1000000000;
  return ts;
}

// Resumes the awaiting coroutine after `duration` (IORING_OP_TIMEOUT).
class SleepFor {
 public:
  explicit SleepFor(std::chrono::nanoseconds duration) : ts_(to_kernel_timespec(duration)) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    completion_.handle = h;
    Reactor* reactor = Reactor::current();
    KELPIE_ASSERT(reactor != nullptr);
    io_uring_prep_timeout(reactor->get_sqe(&completion_), &ts_, 0, 0);
  }
  void await_resume() const noexcept {}

 private:
  __kernel_timespec ts_;
  Reactor::Completion completion_;
};
inline SleepFor sleep_for(std::chrono::nanoseconds duration) { return SleepFor(duration); }

// A one-shot timer that another coroutine on the same reactor may cancel.
// `co_await timer.wait(d)` yields true when d elapsed, false when cancel() came
// first. The Timer must outlive the wait (the kernel holds a pointer into it).
class Timer {
 public:
  Timer() = default;
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  ~Timer() { KELPIE_ASSERT(!armed_); }

  class Awaiter {
   public:
    Awaiter(Timer& timer, std::chrono::nanoseconds duration)
        : timer_(timer), ts_(to_kernel_timespec(duration)) {}
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      KELPIE_ASSERT(!timer_.armed_);
      timer_.completion_.handle = h;
      timer_.armed_ = true;
      timer_.reactor_ = Reactor::current();
      KELPIE_ASSERT(timer_.reactor_ != nullptr);
      io_uring_prep_timeout(timer_.reactor_->get_sqe(&timer_.completion_), &ts_, 0, 0);
    }
    bool await_resume() noexcept {
      timer_.armed_ = false;
      return timer_.completion_.result == -ETIME;
    }

   private:
    Timer& timer_;
    __kernel_timespec ts_;
  };
  Awaiter wait(std::chrono::nanoseconds duration) { return Awaiter(*this, duration); }

  // Ends a pending wait early (it yields false). No-op when not waiting. Only on
  // the reactor that armed the timer.
  void cancel() {
    if (!armed_) return;
    KELPIE_ASSERT(Reactor::current() == reactor_);
    io_uring_prep_timeout_remove(reactor_->get_sqe(nullptr), reinterpret_cast<uint64_t>(&completion_), 0);
  }
  bool armed() const { return armed_; }

 private:
  Reactor::Completion completion_;
  Reactor* reactor_ = nullptr;
  bool armed_ = false;
};

// connect(2) through the ring, given up after `timeout`: yields 0 or -errno, and
// -ETIMEDOUT when the timeout fired first. `addr` must stay valid until resumed.
class ConnectOp {
 public:
  ConnectOp(int fd, const sockaddr* addr, socklen_t length, std::chrono::nanoseconds timeout)
      : fd_(fd), addr_(addr), length_(length), ts_(to_kernel_timespec(timeout)) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    completion_.handle = h;
    Reactor* reactor = Reactor::current();
    KELPIE_ASSERT(reactor != nullptr);
    reactor->reserve_sqes(2);
    io_uring_sqe* connect = reactor->get_sqe(&completion_);
    io_uring_prep_connect(connect, fd_, addr_, length_);
    connect->flags |= IOSQE_IO_LINK;
    io_uring_prep_link_timeout(reactor->get_sqe(nullptr), &ts_, 0);
  }
  int await_resume() const noexcept {
    return completion_.result == -ECANCELED ? -ETIMEDOUT : completion_.result;
  }

 private:
  int fd_;
  const sockaddr* addr_;
  socklen_t length_;
  __kernel_timespec ts_;
  Reactor::Completion completion_;
};
inline ConnectOp async_connect(int fd, const sockaddr* addr, socklen_t length,
                               std::chrono::nanoseconds timeout) {
  return ConnectOp(fd, addr, length, timeout);
}

// Moves the awaiting coroutine onto `target` (no-op when already there).
class SwitchTo {
 public:
  explicit SwitchTo(Reactor& target) : target_(target) {}
  bool await_ready() const noexcept { return Reactor::current() == &target_; }
  void await_suspend(std::coroutine_handle<> h) { target_.post(h); }
  void await_resume() const noexcept {}

 private:
  Reactor& target_;
};
inline SwitchTo switch_to(Reactor& target) { return SwitchTo(target); }

// Lets everything else on this reactor run, completions included, then resumes.
struct YieldNow {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { Reactor::current()->defer(h); }
  void await_resume() const noexcept {}
};
inline YieldNow yield_now() { return YieldNow{}; }

// Resumes after the coroutines already ready on this reactor have run, without
// waiting for new completions (no system call): work that this turn's other
// coroutines may add to (a batch of frames to send) goes last in the turn.
struct AfterReady {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { Reactor::current()->post(h); }
  void await_resume() const noexcept {}
};
inline AfterReady after_ready() { return AfterReady{}; }

namespace detail {
template <typename T>
struct BlockOnState {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::optional<T> value;
};
}  // namespace detail

template <typename T>
T Reactor::block_on(Task<T> task) {
  KELPIE_ASSERT(current() == nullptr);
  detail::BlockOnState<T> state;
  auto runner = [](Reactor& r, Task<T> t, detail::BlockOnState<T>& s) -> Task<void> {
    co_await switch_to(r);
    T value = co_await std::move(t);
    std::lock_guard lock(s.mutex);
    s.value.emplace(std::move(value));
    s.done = true;
    s.done_cv.notify_all();
  };
  spawn(runner(*this, std::move(task), state));
  std::unique_lock lock(state.mutex);
  state.done_cv.wait(lock, [&] { return state.done; });
  return std::move(*state.value);
}

}  // namespace kelpie
