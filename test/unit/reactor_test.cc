// Reactor: the adaptive poll's rule (next_poll_ns), PollHold, after_ready, and the
// loop's delivery of completions, timers and cross-thread posts with polling off and on.
#include "engine/reactor.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace kelpie {
namespace {

constexpr int64_t kMax = 32'000;

TEST(NextPollNs, ShortWaitStartsPollingAtFourMicroseconds) {
  EXPECT_EQ(next_poll_ns(0, 10'000, kMax), kPollStartNs);
}

TEST(NextPollNs, ShortWaitsDoubleThePollUpToTheMaximum) {
  EXPECT_EQ(next_poll_ns(4'000, 6'000, kMax), 8'000);
  EXPECT_EQ(next_poll_ns(8'000, 20'000, kMax), 16'000);
  EXPECT_EQ(next_poll_ns(16'000, 30'000, kMax), 32'000);
  EXPECT_EQ(next_poll_ns(32'000, 32'000, kMax), 32'000);
}

TEST(NextPollNs, AWaitThePollCaughtKeepsIt) {
  EXPECT_EQ(next_poll_ns(16'000, 3'000, kMax), 16'000);
  EXPECT_EQ(next_poll_ns(16'000, 16'000, kMax), 16'000);
}

TEST(NextPollNs, AWaitLongerThanTheMaximumStopsPolling) {
  EXPECT_EQ(next_poll_ns(32'000, 32'001, kMax), 0);
  EXPECT_EQ(next_poll_ns(4'000, 5'000'000, kMax), 0);
  EXPECT_EQ(next_poll_ns(0, 5'000'000, kMax), 0);
}

TEST(NextPollNs, AMaximumBelowTheStartIsRespected) {
  EXPECT_EQ(next_poll_ns(0, 1'000, 2'000), 2'000);
}

// One reactor thread with the given poll bound.
class ReactorLoop {
 public:
  explicit ReactorLoop(unsigned poll_max_us) : reactor_(0, 64, poll_max_us), thread_([this] { reactor_.run(); }) {}
  ~ReactorLoop() {
    reactor_.stop();
    thread_.join();
  }
  Reactor& reactor() { return reactor_; }

 private:
  Reactor reactor_;
  std::thread thread_;
};

class ReactorPollTest : public ::testing::TestWithParam<unsigned> {};

// Echo over a socketpair: one coroutine sends, another echoes, for many rounds, so
// the loop sleeps and (with polling) polls between short waits. Every byte must
// come back in order.
TEST_P(ReactorPollTest, SocketRoundTripsDeliverEveryByte) {
  ReactorLoop loop(GetParam());
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  constexpr int kRounds = 2000;
  auto run = [](int a, int b) -> Task<std::string> {
    auto echo = [](int fd) -> Task<void> {
      for (int i = 0; i < kRounds; ++i) {
        char c;
        int n = co_await async_recv(fd, &c, 1);
        if (n != 1) co_return;
        iovec iov{&c, 1};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        int sent = co_await async_sendmsg(fd, &msg);
        if (sent != 1) co_return;
      }
    };
    spawn(echo(b));
    std::string got;
    for (int i = 0; i < kRounds; ++i) {
      char c = char('a' + i % 26);
      iovec iov{&c, 1};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      int sent = co_await async_sendmsg(a, &msg);
      if (sent != 1) co_return got;
      char back = 0;
      int n = co_await async_recv(a, &back, 1);
      if (n != 1) co_return got;
      got.push_back(back);
    }
    co_return got;
  };
  std::string got = loop.reactor().block_on(run(fds[0], fds[1]));
  ASSERT_EQ(got.size(), size_t(kRounds));
  for (int i = 0; i < kRounds; ++i) ASSERT_EQ(got[i], char('a' + i % 26)) << "round " << i;
  ::close(fds[0]);
  ::close(fds[1]);
}

// Posts from another thread reach a reactor that sleeps or polls, each once.
TEST_P(ReactorPollTest, PostsFromAnotherThreadAllRun) {
  ReactorLoop loop(GetParam());
  constexpr int kPosts = 5000;
  std::atomic<int> ran{0};
  for (int i = 0; i < kPosts; ++i) {
    auto bump = [](Reactor& r, std::atomic<int>& count) -> Task<void> {
      co_await switch_to(r);
      count.fetch_add(1);
    };
    spawn(bump(loop.reactor(), ran));
    if (i % 100 == 0) std::this_thread::yield();  // let the reactor go idle in between
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (ran.load() < kPosts && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(ran.load(), kPosts);
}

// A timer longer than any poll still fires, and a polling reactor stops when asked.
TEST_P(ReactorPollTest, SleepForOutlastsThePoll) {
  ReactorLoop loop(GetParam());
  auto nap = []() -> Task<int64_t> {
    const auto start = std::chrono::steady_clock::now();
    co_await sleep_for(std::chrono::milliseconds(3));
    co_return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start)
        .count();
  };
  for (int i = 0; i < 5; ++i) EXPECT_GE(loop.reactor().block_on(nap()), 3000);
}

INSTANTIATE_TEST_SUITE_P(PollOffAndOn, ReactorPollTest, ::testing::Values(0u, 50u),
                         [](const ::testing::TestParamInfo<unsigned>& info) {
                           return info.param == 0 ? std::string("NoPoll") : "Poll" + std::to_string(info.param) + "us";
                         });

// Short waits (10 us timers) make a reactor poll, unless a PollHold (a peer call
// in flight) lives on it: then every wait sleeps and the poll does not adapt.
Task<uint64_t> polls_over_short_naps(bool hold) {
  std::optional<PollHold> no_poll;
  if (hold) no_poll.emplace();
  const uint64_t before = Reactor::current()->polls();
  for (int i = 0; i < 200; ++i) co_await sleep_for(std::chrono::microseconds(10));
  co_return Reactor::current()->polls() - before;
}

TEST(PollHold, ShortWaitsPollWithoutAHold) {
  ReactorLoop loop(1000);
  EXPECT_GT(loop.reactor().block_on(polls_over_short_naps(false)), 0u);
}

TEST(PollHold, AHoldKeepsTheReactorFromPolling) {
  ReactorLoop loop(1000);
  EXPECT_EQ(loop.reactor().block_on(polls_over_short_naps(true)), 0u);
  // Released, the reactor polls again.
  EXPECT_GT(loop.reactor().block_on(polls_over_short_naps(false)), 0u);
}

// after_ready() resumes in the order coroutines asked, after those already ready:
// a sender that queues a frame and then waits this way goes after the others of
// its turn (SendQueue's flush, the gateway's own copy after its peers' frames).
Task<void> note_after_ready(std::string& log, char c) {
  co_await after_ready();
  log += c;
}

Task<std::string> after_ready_order() {
  std::string log;
  spawn(note_after_ready(log, 'a'));
  log += 'x';
  spawn(note_after_ready(log, 'b'));
  co_await after_ready();
  log += 'y';
  co_return log;
}

TEST(AfterReady, ResumesAfterTheCoroutinesAlreadyReadyInOrder) {
  ReactorLoop loop(0);
  EXPECT_EQ(loop.reactor().block_on(after_ready_order()), "xaby");
}

}  // namespace
}  // namespace kelpie
