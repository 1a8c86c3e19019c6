#include "engine/reactor.h"

#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "common/log.h"

namespace kelpie {
namespace {
thread_local Reactor* current_reactor = nullptr;
// user_data of the eventfd read; never a valid Completion pointer.
constexpr uint64_t kEventFdTag = 1;

int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
}  // namespace

Reactor::Reactor(unsigned index, unsigned queue_depth, unsigned poll_max_us)
    : index_(index), poll_max_ns_(int64_t(poll_max_us) * 1000) {
  io_uring_params params{};
  // One thread submits to this ring and reaps it (run()), so completions can wait
  // until that thread asks for them: DEFER_TASKRUN runs their task work inside its
  // io_uring_enter instead of interrupting it (an IPI and a task-work signal per
  // socket completion, costly on a virtual machine). The ring starts disabled and
  // run() enables it, which makes run()'s thread the single issuer.
  params.flags = IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
                 IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
  int rc = io_uring_queue_init_params(queue_depth, &ring_, &params);
  if (rc == -EINVAL) {
    // A kernel before 6.1 has no DEFER_TASKRUN: the plain ring works the same, slower.
    KELPIE_LOG_WARN("io_uring without DEFER_TASKRUN (kernel before 6.1): reactor wake-ups cost more");
    params = io_uring_params{};
    params.flags = IORING_SETUP_CLAMP;
    rc = io_uring_queue_init_params(queue_depth, &ring_, &params);
  }
  if (rc < 0) {
    KELPIE_LOG_CRITICAL("io_uring_queue_init failed: {}", std::strerror(-rc));
    std::abort();
  }
  event_fd_ = eventfd(0, EFD_CLOEXEC);
  KELPIE_ASSERT(event_fd_ >= 0);
  ready_.reserve(1024);
  running_.reserve(1024);
  inbox_.reserve(1024);
}

Reactor::~Reactor() {
  io_uring_queue_exit(&ring_);
  close(event_fd_);
}

Reactor* Reactor::current() { return current_reactor; }

io_uring_sqe* Reactor::get_sqe(Completion* completion) {
  KELPIE_ASSERT(current_reactor == this);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  io_uring_sqe_set_data(sqe, completion);
  return sqe;
}

void Reactor::reserve_sqes(unsigned count) {
  KELPIE_ASSERT(current_reactor == this);
  if (io_uring_sq_space_left(&ring_) < count) io_uring_submit(&ring_);
}

void Reactor::arm_eventfd_read() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  io_uring_prep_read(sqe, event_fd_, &eventfd_value_, sizeof(eventfd_value_), 0);
  io_uring_sqe_set_data64(sqe, kEventFdTag);
}

void Reactor::post(std::coroutine_handle<> h) {
  if (current_reactor == this) {
    ready_.push_back(h);
    return;
  }
  bool need_wake;
  {
    std::lock_guard lock(inbox_mutex_);
    inbox_.push_back(h);
    posted_.store(true, std::memory_order_relaxed);
    need_wake = sleeping_;
    sleeping_ = false;
  }
  if (need_wake) wake();
}

void Reactor::wake() {
  uint64_t one = 1;
  ssize_t n = write(event_fd_, &one, sizeof(one));
  (void)n;
}

void Reactor::stop() {
  stop_requested_.store(true);
  std::lock_guard lock(inbox_mutex_);
  sleeping_ = false;
  wake();
}

void Reactor::drain_inbox() {
  std::lock_guard lock(inbox_mutex_);
  if (inbox_.empty()) return;
  ready_.insert(ready_.end(), inbox_.begin(), inbox_.end());
  inbox_.clear();
  posted_.store(false, std::memory_order_relaxed);
}

bool Reactor::poll_until(int64_t deadline_ns) {
  for (unsigned spins = 0;; ++spins) {
    if (io_uring_cq_ready(&ring_) > 0) return true;
    // With DEFER_TASKRUN a socket completion is task work that only an enter runs.
    io_uring_get_events(&ring_);
    if (io_uring_cq_ready(&ring_) > 0) return true;
    if (posted_.load(std::memory_order_relaxed)) return true;
    if (stop_requested_.load(std::memory_order_relaxed)) return true;
    if ((spins & 3) == 3 && monotonic_ns() >= deadline_ns) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

int64_t next_poll_ns(int64_t poll_ns, int64_t waited_ns, int64_t poll_max_ns) {
  if (waited_ns <= poll_ns) return poll_ns;  // the poll caught it: keep polling this long
  if (waited_ns > poll_max_ns) return 0;     // slower than any poll worth paying for: sleep at once
  return poll_ns == 0 ? std::min(kPollStartNs, poll_max_ns) : std::min(poll_ns * 2, poll_max_ns);
}

void Reactor::run() {
  current_reactor = this;
  if (ring_.flags & IORING_SETUP_R_DISABLED) {
    // Makes this thread the ring's single issuer (liburing 2.3 has no io_uring_enable_rings).
    if (syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) < 0) {
      KELPIE_LOG_CRITICAL("enabling the io_uring failed: {}", std::strerror(errno));
      std::abort();
    }
  }
  arm_eventfd_read();
  while (true) {
    drain_inbox();
    while (!ready_.empty()) {
      running_.swap(ready_);
      for (auto h : running_) h.resume();
      running_.clear();
      drain_inbox();
    }
    if (stop_requested_.load()) break;
    bool idle;
    {
      std::lock_guard lock(inbox_mutex_);
      idle = inbox_.empty() && deferred_.empty();
    }
    // An idle wait is timed (from here to the next event) to adapt the poll; a wait
    // under a PollHold neither polls nor counts.
    const bool may_poll = idle && poll_max_ns_ > 0 && poll_holds_ == 0;
    const int64_t idle_since = may_poll ? monotonic_ns() : 0;
    bool may_sleep = idle;
    if (may_poll && poll_ns_ > 0) {
      ++polls_;
      io_uring_submit(&ring_);
      may_sleep = !poll_until(idle_since + poll_ns_);
    }
    if (may_sleep) {
      std::lock_guard lock(inbox_mutex_);
      may_sleep = inbox_.empty();
      sleeping_ = may_sleep;
    }
    // Not sleeping still enters the kernel for events: deferred task work (socket
    // and file completions) is run only inside io_uring_enter with GETEVENTS.
    int rc = may_sleep ? io_uring_submit_and_wait(&ring_, 1) : io_uring_submit_and_get_events(&ring_);
    if (rc < 0 && rc != -EINTR && rc != -EBUSY) {
      KELPIE_LOG_CRITICAL("io_uring_submit_and_wait failed: {}", std::strerror(-rc));
      std::abort();
    }
    {
      std::lock_guard lock(inbox_mutex_);
      sleeping_ = false;
    }
    if (idle_since != 0) poll_ns_ = next_poll_ns(poll_ns_, monotonic_ns() - idle_since, poll_max_ns_);
    io_uring_cqe* cqe;
    unsigned head;
    unsigned seen = 0;
    bool rearm = false;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      if (cqe->user_data == kEventFdTag) {
        rearm = true;
        continue;
      }
      if (cqe->user_data == 0) continue;  // nobody waits (a cancellation, a linked timeout)
      auto* completion = reinterpret_cast<Completion*>(cqe->user_data);
      completion->result = cqe->res;
      ready_.push_back(completion->handle);
    }
    io_uring_cq_advance(&ring_, seen);
    if (rearm) arm_eventfd_read();
    ready_.insert(ready_.end(), deferred_.begin(), deferred_.end());
    deferred_.clear();
  }
  current_reactor = nullptr;
}

void Reactor::block_on(Task<void> task) {
  auto wrap = [](Task<void> t) -> Task<bool> {
    co_await std::move(t);
    co_return true;
  };
  (void)block_on(wrap(std::move(task)));
}

}  // namespace kelpie
