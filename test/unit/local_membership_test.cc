// The local membership driver: several drivers in this process on one state
// directory, and real child processes for crashes (SIGKILL) and hangs (SIGSTOP), so
// liveness is judged on real heartbeats.
#include "cluster/local_membership.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "test/unit/membership_test_support.h"

namespace kelpie {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using membership_test::holds_for;
using membership_test::ids_of;
using membership_test::make_member;
using membership_test::Recorder;

template <typename Condition>
bool wait_until(Condition condition, std::chrono::milliseconds timeout = 5000ms) {
  return membership_test::wait_until(condition, timeout);
}





struct Node {
  MemberInfo info;
  std::unique_ptr<Recorder> recorder;  // outlives the driver, whose thread calls it
  std::unique_ptr<LocalMembership> driver;
};

std::vector<uint64_t> range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> numbers;
  for (uint64_t e = first; e <= last; ++e) numbers.push_back(e);
  return numbers;
}


class LocalMembershipTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spdlog::set_level(std::getenv("KELPIE_TEST_LOG") ? spdlog::level::debug : spdlog::level::warn);
  }

  void SetUp() override {
    char pattern[] = "/tmp/kelpie-membership-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    for (pid_t pid : children_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    nodes_.clear();
    std::filesystem::remove_all(dir_);
  }

  LocalMembershipOptions options(bool default_timings = false) const {
    LocalMembershipOptions options;
    options.state_dir = dir_;
    if (!default_timings) {
      options.heartbeat_interval = 50ms;
      options.failure_timeout = 400ms;
    }
    return options;
  }

  // A new driver for `info` (joined), kept in nodes_.
  Node& start(const MemberInfo& info, bool default_timings = false) {
    auto node = std::make_unique<Node>();
    node->info = info;
    node->driver = std::make_unique<LocalMembership>(options(default_timings));
    node->recorder = std::make_unique<Recorder>();
    Status joined = node->driver->join(info, node->recorder->events());
    EXPECT_TRUE(joined) << joined.to_string();
    nodes_.push_back(std::move(node));
    return *nodes_.back();
  }
  // Stops every driver (as if every daemon were killed): files stay.
  void stop_all() { nodes_.clear(); }

  // Every node sees `epoch` as its current epoch and was told of it.
  void expect_all_at(uint64_t epoch) {
    for (auto& node : nodes_) {
      EXPECT_TRUE(wait_until([&] { return node->recorder->last_epoch() == epoch; }))
          << "member stuck at epoch " << node->recorder->last_epoch() << ", want " << epoch;
    }
  }

  // A member in a child process; each epoch it is told of goes to `report` as
  // "<epoch> <1 if it lists the member, else 0> <reason>".
  pid_t spawn(const MemberInfo& info, const std::string& report, bool default_timings) {
    pid_t pid = ::fork();
    if (pid == 0) {
      LocalMembership driver(options(default_timings));
      MembershipDriver::Events events;
      events.on_epoch = [&](const EpochRecord& record) {
        bool listed = ids_of(record).count(info.id) > 0;
        std::string line =
            std::to_string(record.epoch) + " " + (listed ? "1" : "0") + " " + record.reason + "\n";
        int fd = ::open(report.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (fd >= 0 && ::write(fd, line.data(), line.size()) < 0) ::_exit(3);
        ::close(fd);
      };
      if (!driver.join(info, events)) ::_exit(2);
      for (;;) ::pause();
    }
    EXPECT_GT(pid, 0);
    children_.push_back(pid);
    return pid;
  }

  std::string dir_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<pid_t> children_;
};

struct ReportLine {
  uint64_t epoch = 0;
  bool listed = false;
  std::string reason;
};

// The child's report: each line "<epoch> <listed> <reason>".
std::vector<ReportLine> read_report(const std::string& path) {
  std::vector<ReportLine> lines;
  std::ifstream in(path);
  std::string text;
  while (std::getline(in, text)) {
    std::istringstream fields(text);
    ReportLine line;
    int listed = 0;
    if (!(fields >> line.epoch >> listed)) break;
    line.listed = listed == 1;
    std::getline(fields >> std::ws, line.reason);
    lines.push_back(line);
  }
  return lines;
}

TEST_F(LocalMembershipTest, FormatMakesEpochOneFromStorageMembersOnly) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  Node& c = start(make_member(2));
  Node& gateway = start(make_member(3, true));
  EXPECT_EQ(a.driver->status(), ClusterStatus::kUnformatted);
  EXPECT_FALSE(a.driver->current_epoch());

  Result<EpochRecord> first = b.driver->format(3, 2);
  ASSERT_TRUE(first) << first.status().to_string();
  EXPECT_EQ(first->epoch, 1u);
  EXPECT_EQ(first->reason, "format");
  EXPECT_EQ(first->copies, 3u);
  EXPECT_EQ(first->min_copies, 2u);
  EXPECT_NE(first->cluster, Uuid{});
  EXPECT_EQ(ids_of(*first), (std::set<Uuid>{a.info.id, b.info.id, c.info.id}));
  EXPECT_TRUE(std::is_sorted(first->nodes.begin(), first->nodes.end(),
                             [](const MemberInfo& x, const MemberInfo& y) { return x.id < y.id; }));
  // Every MemberInfo field survives the log.
  const MemberInfo& stored = *std::find_if(first->nodes.begin(), first->nodes.end(),
                                           [&](const MemberInfo& n) { return n.id == c.info.id; });
  EXPECT_EQ(stored.peer_address, c.info.peer_address);
  EXPECT_EQ(stored.admin_address, c.info.admin_address);
  EXPECT_EQ(stored.zone, c.info.zone);
  EXPECT_EQ(stored.vnodes, c.info.vnodes);
  EXPECT_EQ(stored.capacity_bytes, c.info.capacity_bytes);
  EXPECT_EQ(stored.pid, ::getpid());

  expect_all_at(1);
  for (auto& node : nodes_) {
    EXPECT_EQ(node->recorder->epoch_numbers(), std::vector<uint64_t>{1});
    EXPECT_TRUE(wait_until([&] { return node->driver->status() == ClusterStatus::kRunning; }));
    EXPECT_TRUE(wait_until([&] { return node->driver->live_members().size() == 4; }));
  }
  Result<EpochRecord> again = a.driver->format(3, 2);
  EXPECT_EQ(again.status().code(), EEXIST);

  // A gateway comes and goes without an epoch.
  gateway.driver->leave();
  EXPECT_TRUE(wait_until([&] { return a.driver->live_members().size() == 3; }));
  Node& gateway2 = start(make_member(4, true));
  EXPECT_TRUE(wait_until([&] { return a.driver->live_members().size() == 4; }));
  EXPECT_TRUE(wait_until([&] { return gateway2.recorder->last_epoch() == 1; }));
  EXPECT_EQ(gateway2.recorder->epoch_numbers(), std::vector<uint64_t>{1});
  EXPECT_EQ(a.driver->epoch_history().size(), 1u);
  EXPECT_EQ(a.driver->describe(), "local:" + dir_);
}

TEST_F(LocalMembershipTest, JoinAndLeaveMakeOneEpochEach) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  ASSERT_TRUE(a.driver->format(2, 1));
  expect_all_at(1);

  Node& c = start(make_member(2));
  std::optional<EpochRecord> joined = a.driver->current_epoch();
  ASSERT_TRUE(joined);
  EXPECT_EQ(joined->epoch, 2u);
  EXPECT_EQ(joined->reason, "join " + uuid_to_string(c.info.id));
  EXPECT_EQ(ids_of(*joined), (std::set<Uuid>{a.info.id, b.info.id, c.info.id}));
  expect_all_at(2);
  EXPECT_EQ(c.recorder->epoch_numbers(), std::vector<uint64_t>{2});

  c.driver->leave();
  EXPECT_TRUE(wait_until([&] { return a.recorder->last_epoch() == 3; }));
  EXPECT_TRUE(wait_until([&] { return b.recorder->last_epoch() == 3; }));
  std::optional<EpochRecord> left = b.driver->current_epoch();
  EXPECT_EQ(left->reason, "leave " + uuid_to_string(c.info.id));
  EXPECT_EQ(ids_of(*left), (std::set<Uuid>{a.info.id, b.info.id}));
  // A member that left does not rejoin.
  EXPECT_TRUE(
      holds_for([&] { return a.driver->current_epoch()->epoch == 3; }, options().failure_timeout));
  EXPECT_EQ(a.recorder->epoch_numbers(), range(1, 3));
  EXPECT_EQ(b.recorder->epoch_numbers(), range(1, 3));
  EXPECT_EQ(a.driver->epoch_history().size(), 3u);
}

TEST_F(LocalMembershipTest, RestartedNodeIsJoinedAgainInANewEpoch) {
  start(make_member(0));
  start(make_member(1));
  MemberInfo c_info = make_member(2);
  start(c_info);
  ASSERT_TRUE(nodes_[0]->driver->format(3, 2));
  expect_all_at(1);
  nodes_.pop_back();  // c stops without leaving, and comes straight back
  Node& c = start(c_info);
  std::optional<EpochRecord> current = c.driver->current_epoch();
  EXPECT_EQ(current->epoch, 2u);
  EXPECT_EQ(current->reason, "join " + uuid_to_string(c_info.id));
  EXPECT_EQ(current->nodes.size(), 3u);
  expect_all_at(2);
}

TEST_F(LocalMembershipTest, ConcurrentChangesMakeNoGapOrDuplicate) {
  start(make_member(0));
  start(make_member(1));
  ASSERT_TRUE(nodes_[0]->driver->format(2, 2));
  constexpr int kJoiners = 6;
  std::vector<std::unique_ptr<Node>> joiners;
  for (int i = 0; i < kJoiners; ++i) {
    auto node = std::make_unique<Node>();
    node->info = make_member(10 + i);
    node->driver = std::make_unique<LocalMembership>(options());
    node->recorder = std::make_unique<Recorder>();
    joiners.push_back(std::move(node));
  }
  std::vector<std::thread> threads;
  for (auto& node : joiners) {
    threads.emplace_back([&node] {
      Status joined = node->driver->join(node->info, node->recorder->events());
      EXPECT_TRUE(joined) << joined.to_string();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (auto& node : joiners) nodes_.push_back(std::move(node));

  std::vector<EpochRecord> history = nodes_[0]->driver->epoch_history();
  ASSERT_EQ(history.size(), 1u + kJoiners);
  std::set<std::string> reasons;
  for (size_t i = 0; i < history.size(); ++i) {
    EXPECT_EQ(history[i].epoch, i + 1);
    EXPECT_EQ(history[i].nodes.size(), 2 + i);
    reasons.insert(history[i].reason);
  }
  EXPECT_EQ(reasons.size(), history.size());

  // Everyone evicts the same node at once: one epoch. The victim is stopped first: a
  // live one would rejoin by itself and could be evicted again by a late caller.
  Uuid victim = nodes_.back()->info.id;
  nodes_.back()->driver->stop();
  threads.clear();
  std::atomic<int> made{0};
  for (size_t i = 0; i + 1 < nodes_.size(); ++i) {
    threads.emplace_back([&, i] {
      Status evicted = nodes_[i]->driver->evict(victim);
      if (evicted) {
        ++made;
      } else {
        EXPECT_EQ(evicted.code(), ENOENT) << evicted.to_string();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(made.load(), 1);
  std::optional<EpochRecord> last = nodes_[0]->driver->current_epoch();
  EXPECT_EQ(last->epoch, 2u + kJoiners);
  EXPECT_EQ(last->reason, "evicted " + uuid_to_string(victim));
  EXPECT_EQ(ids_of(*last).count(victim), 0u);

  // Every running member was told the same epochs, in order, from the one it joined at.
  nodes_.pop_back();
  for (auto& node : nodes_) {
    ASSERT_TRUE(wait_until([&] { return node->recorder->last_epoch() == last->epoch; }));
    std::vector<uint64_t> seen = node->recorder->epoch_numbers();
    EXPECT_EQ(seen, range(seen.front(), last->epoch));
  }
}

TEST_F(LocalMembershipTest, KilledMemberIsFailedOutWithinTwoSecondsAndRejoins) {
  MemberInfo child_info = make_member(9);
  std::string report = dir_ + "/child-report";
  pid_t child = spawn(child_info, report, true);
  Node& a = start(make_member(0), true);
  Node& b = start(make_member(1), true);
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 3; }));
  ASSERT_TRUE(a.driver->format(3, 2));
  ASSERT_TRUE(wait_until([&] { return !read_report(report).empty(); }));
  EXPECT_EQ(read_report(report).front().epoch, 1u);
  EXPECT_TRUE(read_report(report).front().listed);

  ASSERT_EQ(::kill(child, SIGKILL), 0);
  auto killed_at = Clock::now();
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 2; }));
  auto noticed_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed_at).count();
  EXPECT_LT(noticed_ms, 2000);
  std::optional<EpochRecord> failed = b.driver->current_epoch();
  EXPECT_EQ(failed->reason, "failed " + uuid_to_string(child_info.id));
  EXPECT_EQ(ids_of(*failed), (std::set<Uuid>{a.info.id, b.info.id}));
  expect_all_at(2);

  // The same uuid starts again: it re-registers over its old files and is joined.
  ::unlink(report.c_str());
  spawn(child_info, report, true);
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 3; }));
  EXPECT_EQ(a.driver->current_epoch()->reason, "join " + uuid_to_string(child_info.id));
  EXPECT_TRUE(wait_until([&] { return !read_report(report).empty(); }));
  EXPECT_EQ(read_report(report).front().epoch, 3u);
  EXPECT_TRUE(read_report(report).front().listed);
  expect_all_at(3);
  EXPECT_EQ(a.recorder->epoch_numbers(), range(1, 3));
  EXPECT_EQ(b.recorder->epoch_numbers(), range(1, 3));
}

// Issue 3: a storage node hung past failure detection is failed out; when it
// continues it is told the epoch without it (so its peers' epoch fence refuses its
// writes), then rejoins by itself in exactly one epoch, and evicts nobody.
TEST_F(LocalMembershipTest, StoppedMemberIsEvictedThenRejoinsByItself) {
  MemberInfo child_info = make_member(9);
  std::string child_id = uuid_to_string(child_info.id);
  std::string report = dir_ + "/child-report";
  pid_t child = spawn(child_info, report, true);
  Node& a = start(make_member(0), true);
  Node& b = start(make_member(1), true);
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 3; }));
  ASSERT_TRUE(a.driver->format(3, 2));
  ASSERT_TRUE(wait_until([&] { return !read_report(report).empty(); }));

  ASSERT_EQ(::kill(child, SIGSTOP), 0);
  auto stopped_at = Clock::now();
  ASSERT_TRUE(wait_until([&] { return b.driver->current_epoch()->epoch == 2; }));
  auto noticed_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - stopped_at).count();
  EXPECT_LT(noticed_ms, 2000);
  EXPECT_EQ(b.driver->current_epoch()->reason, "failed " + child_id);
  // Hung, it cannot rejoin: the epoch stays without it.
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 2; },
                        options(true).heartbeat_interval * 4));

  ASSERT_EQ(::kill(child, SIGCONT), 0);
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 3; }));
  std::optional<EpochRecord> rejoined = a.driver->current_epoch();
  EXPECT_EQ(rejoined->reason, "rejoin " + child_id);
  EXPECT_EQ(ids_of(*rejoined), (std::set<Uuid>{a.info.id, b.info.id, child_info.id}));
  expect_all_at(3);

  // The child was told it was out before it was listed again.
  ASSERT_TRUE(wait_until([&] { return read_report(report).size() == 3; }));
  std::vector<ReportLine> seen = read_report(report);
  EXPECT_EQ(seen[0].reason, "format");
  EXPECT_TRUE(seen[0].listed);
  EXPECT_EQ(seen[1].epoch, 2u);
  EXPECT_EQ(seen[1].reason, "failed " + child_id);
  EXPECT_FALSE(seen[1].listed);
  EXPECT_EQ(seen[2].epoch, 3u);
  EXPECT_EQ(seen[2].reason, "rejoin " + child_id);
  EXPECT_TRUE(seen[2].listed);

  // No second rejoin and no eviction by anyone, for longer than a failure timeout.
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 3; },
                        options(true).failure_timeout * 2));
  const std::vector<std::string> expected = {"format", "failed " + child_id, "rejoin " + child_id};
  for (Node* node : {&a, &b}) {
    EXPECT_EQ(node->recorder->epoch_numbers(), range(1, 3));
    EXPECT_EQ(node->recorder->reasons(), expected);
  }
  EXPECT_EQ(read_report(report).size(), 3u);
  EXPECT_EQ(a.driver->live_members().size(), 3u);
}

// A live member evicted by hand rejoins too, but not once a shutdown was requested.
TEST_F(LocalMembershipTest, EvictedLiveMemberRejoinsExceptDuringShutdown) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  Node& c = start(make_member(2));
  ASSERT_TRUE(a.driver->format(3, 2));
  expect_all_at(1);

  // A live evicted member rejoins...
  ASSERT_TRUE(a.driver->evict(c.info.id));
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 3; }));
  EXPECT_EQ(a.driver->current_epoch()->reason, "rejoin " + uuid_to_string(c.info.id));
  expect_all_at(3);

  // ... but not during a shutdown.
  ASSERT_TRUE(b.driver->request_shutdown());
  for (auto& node : nodes_) {
    ASSERT_TRUE(wait_until([&] { return node->recorder->shutdowns.load() == 1; }));
  }
  ASSERT_TRUE(a.driver->evict(c.info.id));
  ASSERT_TRUE(wait_until([&] { return c.recorder->last_epoch() == 4; }));
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 4; },
                        options().failure_timeout * 2));
  EXPECT_EQ(c.driver->status(), ClusterStatus::kShutdown);
  EXPECT_FALSE(ids_of(*a.driver->current_epoch()).count(c.info.id));
}

TEST_F(LocalMembershipTest, FullRestartWaitsForEveryNodeOfTheLastEpoch) {
  std::vector<MemberInfo> infos = {make_member(0), make_member(1), make_member(2)};
  for (const MemberInfo& info : infos) start(info);
  ASSERT_TRUE(nodes_[0]->driver->format(3, 2));
  expect_all_at(1);
  stop_all();

  Node& a = start(infos[0]);
  Node& b = start(infos[1]);
  EXPECT_EQ(a.driver->status(), ClusterStatus::kWaiting);
  EXPECT_EQ(b.driver->status(), ClusterStatus::kWaiting);
  // Waiting members do not fail the missing one out.
  std::this_thread::sleep_for(options().failure_timeout * 2);
  EXPECT_EQ(a.driver->epoch_history().size(), 1u);
  EXPECT_EQ(a.recorder->epoch_numbers(), std::vector<uint64_t>{1});

  start(infos[2]);
  std::optional<EpochRecord> restarted = a.driver->current_epoch();
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 2; }));
  restarted = a.driver->current_epoch();
  EXPECT_EQ(restarted->reason, "restart");
  EXPECT_EQ(restarted->nodes.size(), 3u);
  expect_all_at(2);
  for (auto& node : nodes_) {
    EXPECT_TRUE(wait_until([&] { return node->driver->status() == ClusterStatus::kRunning; }));
  }
  EXPECT_EQ(a.recorder->epoch_numbers(), range(1, 2));
}

TEST_F(LocalMembershipTest, ForceRecoverEndsWaitingWithTheLiveNodes) {
  std::vector<MemberInfo> infos = {make_member(0), make_member(1), make_member(2)};
  for (const MemberInfo& info : infos) start(info);
  ASSERT_TRUE(nodes_[0]->driver->format(3, 2));
  EXPECT_EQ(nodes_[0]->driver->force_recover().status().code(), EINVAL);
  stop_all();

  Node& a = start(infos[0]);
  Node& b = start(infos[1]);
  ASSERT_EQ(b.driver->status(), ClusterStatus::kWaiting);
  Result<EpochRecord> recovered = a.driver->force_recover();
  ASSERT_TRUE(recovered) << recovered.status().to_string();
  EXPECT_EQ(recovered->epoch, 2u);
  EXPECT_EQ(recovered->reason, "recover");
  EXPECT_EQ(ids_of(*recovered), (std::set<Uuid>{infos[0].id, infos[1].id}));
  EXPECT_TRUE(wait_until([&] { return b.driver->status() == ClusterStatus::kRunning; }));
  expect_all_at(2);
  EXPECT_EQ(a.driver->status(), ClusterStatus::kRunning);

  // The third one comes back into a running cluster: a join epoch.
  Node& c = start(infos[2]);
  EXPECT_EQ(c.driver->current_epoch()->reason, "join " + uuid_to_string(infos[2].id));
  expect_all_at(3);
}

TEST_F(LocalMembershipTest, ShutdownStopsFailureDetectionAndRestartsLikeAFullStop) {
  std::vector<MemberInfo> infos = {make_member(0), make_member(1), make_member(2)};
  for (const MemberInfo& info : infos) start(info);
  ASSERT_TRUE(nodes_[0]->driver->format(3, 2));
  expect_all_at(1);
  ASSERT_TRUE(nodes_[1]->driver->request_shutdown());
  for (auto& node : nodes_) {
    EXPECT_TRUE(wait_until([&] { return node->recorder->shutdowns.load() == 1; }));
    EXPECT_EQ(node->driver->status(), ClusterStatus::kShutdown);
  }
  // The members stop one by one; the survivors see them die and evict nobody.
  LocalMembership* first = nodes_[0]->driver.get();
  nodes_[2]->driver->stop();
  ASSERT_TRUE(wait_until([&] { return first->live_members().size() == 2; }));
  nodes_[1]->driver->stop();
  ASSERT_TRUE(wait_until([&] { return first->live_members().size() == 1; }));
  std::this_thread::sleep_for(options().heartbeat_interval * 4);  // a few more ticks
  EXPECT_EQ(first->epoch_history().size(), 1u);
  EXPECT_EQ(nodes_[0]->recorder->shutdowns.load(), 1);
  stop_all();

  // Even with the first two back and running before, the next start waits for all.
  Node& a = start(infos[0]);
  Node& b = start(infos[1]);
  EXPECT_EQ(a.driver->status(), ClusterStatus::kWaiting);
  EXPECT_EQ(b.driver->status(), ClusterStatus::kWaiting);
  start(infos[2]);
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 2; }));
  EXPECT_EQ(a.driver->current_epoch()->reason, "restart");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/shutdown"));
  for (auto& node : nodes_) {
    EXPECT_TRUE(wait_until([&] { return node->driver->status() == ClusterStatus::kRunning; }));
    EXPECT_EQ(node->recorder->shutdowns.load(), 0);
  }
}

TEST_F(LocalMembershipTest, EpochLogSurvivesReopeningAndATornLastRecord) {
  MemberInfo info = make_member(0);
  start(info);
  ASSERT_TRUE(nodes_[0]->driver->format(1, 1));
  start(make_member(1));
  nodes_[1]->driver->stop();  // a live evicted member would rejoin by itself
  ASSERT_TRUE(nodes_[0]->driver->evict(nodes_[1]->info.id));
  std::vector<EpochRecord> before = nodes_[0]->driver->epoch_history();
  ASSERT_EQ(before.size(), 3u);
  stop_all();

  auto same = [](const std::vector<EpochRecord>& x, const std::vector<EpochRecord>& y) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i].epoch != y[i].epoch || x[i].cluster != y[i].cluster ||
          x[i].reason != y[i].reason || ids_of(x[i]) != ids_of(y[i]) ||
          x[i].created_unix_ms != y[i].created_unix_ms || x[i].copies != y[i].copies) {
        return false;
      }
    }
    return true;
  };
  EXPECT_TRUE(same(LocalMembership(options()).epoch_history(), before));

  std::string log_path = dir_ + "/epochs.log";
  auto good_size = std::filesystem::file_size(log_path);
  // A record whose crc does not match, then a header cut short.
  const std::vector<std::string> torn_tails = {
      std::string("\x05\x00\x00\x00\xde\xad\xbe\xef{}{}{", 13), std::string("\x40\x00", 2)};
  for (const std::string& tail : torn_tails) {
    {
      std::ofstream out(log_path, std::ios::binary | std::ios::app);
      out << tail;
    }
    EXPECT_TRUE(same(LocalMembership(options()).epoch_history(), before));
    // The next appender (a full restart of the one node) truncates it first.
    Node& node = start(info);
    ASSERT_TRUE(wait_until([&] { return node.driver->status() == ClusterStatus::kRunning; }));
    before = node.driver->epoch_history();
    EXPECT_EQ(before.back().reason, "restart");
    stop_all();
    std::vector<EpochRecord> reopened = LocalMembership(options()).epoch_history();
    EXPECT_TRUE(same(reopened, before));
    EXPECT_GT(std::filesystem::file_size(log_path), good_size);
    good_size = std::filesystem::file_size(log_path);
  }
  EXPECT_EQ(before.size(), 5u);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(before[i].epoch, i + 1);
}

TEST_F(LocalMembershipTest, SharedUpdatesAreTotallyOrdered) {
  for (int i = 0; i < 3; ++i) start(make_member(i));
  ASSERT_TRUE(nodes_[0]->driver->format(2, 1));
  EXPECT_EQ(nodes_[0]->driver->read_shared("counter").status().code(), ENOENT);
  EXPECT_EQ(nodes_[0]->driver->read_shared("../x").status().code(), EINVAL);
  EXPECT_EQ(nodes_[0]->driver->update_shared(".hidden", [](std::string&) { return Status::ok(); })
                .code(),
            EINVAL);

  constexpr int kThreads = 6, kIncrements = 40;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      MembershipDriver& driver = *nodes_[t % nodes_.size()]->driver;
      for (int i = 0; i < kIncrements; ++i) {
        Status updated = driver.update_shared("counter", [](std::string& content) {
          content = std::to_string((content.empty() ? 0 : std::stoi(content)) + 1);
          return Status::ok();
        });
        ASSERT_TRUE(updated) << updated.to_string();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (auto& node : nodes_) {
    Result<std::string> content = node->driver->read_shared("counter");
    ASSERT_TRUE(content);
    EXPECT_EQ(*content, std::to_string(kThreads * kIncrements));
  }

  // A failed change stores nothing; a change by one member is told to the others.
  Status refused = nodes_[0]->driver->update_shared("counter", [](std::string& content) {
    content = "garbage";
    return Status::error(EROFS, "no");
  });
  EXPECT_EQ(refused.code(), EROFS);
  EXPECT_EQ(*nodes_[1]->driver->read_shared("counter"), std::to_string(kThreads * kIncrements));
  ASSERT_TRUE(nodes_[0]->driver->update_shared("vdis", [](std::string& content) {
    content = "{\"a\":1}";
    return Status::ok();
  }));
  EXPECT_TRUE(wait_until([&] { return nodes_[1]->recorder->saw_shared("vdis"); }));
  EXPECT_TRUE(wait_until([&] { return nodes_[2]->recorder->saw_shared("vdis"); }));
  std::this_thread::sleep_for(options().heartbeat_interval);
  EXPECT_FALSE(nodes_[0]->recorder->saw_shared("vdis"));
}

TEST_F(LocalMembershipTest, PublishedStatusReachesTheOthers) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  a.driver->publish_status("{\"recovering\":12}");
  std::string a_id = uuid_to_string(a.info.id);
  EXPECT_TRUE(wait_until([&] {
    auto statuses = b.driver->member_statuses();
    return statuses.count(a_id) && statuses[a_id] == "{\"recovering\":12}";
  }));
  EXPECT_EQ(a.driver->member_statuses()[a_id], "{\"recovering\":12}");
  a.driver->stop();
  EXPECT_TRUE(wait_until([&] { return b.driver->member_statuses().count(a_id) == 0; }));
}

TEST_F(LocalMembershipTest, LeaseIsRenewedByHeartbeatsAndLapsesWithoutThem) {
  Node& a = start(make_member(0));
  ASSERT_TRUE(a.driver->format(1, 1));
  expect_all_at(1);
  auto held = [&] { return Clock::now() < a.driver->lease_until(); };
  EXPECT_TRUE(wait_until(held));
  // Renewed at every tick: it holds for longer than one lease lasts.
  EXPECT_TRUE(holds_for(held, options().failure_timeout));
  // Never longer than half the failure timeout ahead, so the others (who fail a
  // silent member after the whole timeout) only take over once it holds its I/O.
  EXPECT_LE(a.driver->lease_until(), Clock::now() + options().failure_timeout / 2);
  a.driver->stop();  // no more heartbeats
  EXPECT_TRUE(wait_until([&] { return !held(); }, options().failure_timeout));
}

TEST(OpenMembershipTest, ParsesTheSpec) {
  // zookeeper: specs are parsed (and tested) by the zookeeper driver's test.
  Result<std::unique_ptr<MembershipDriver>> zookeeper = open_membership("zookeeper:host:2181");
  EXPECT_EQ(zookeeper.status().code(), EINVAL);
  EXPECT_NE(zookeeper.status().message().find("no cluster path"), std::string::npos);
  EXPECT_EQ(open_membership("local:").status().code(), EINVAL);
  EXPECT_EQ(open_membership("etcd://x").status().code(), EINVAL);
  EXPECT_EQ(open_membership("").status().code(), EINVAL);

  char pattern[] = "/tmp/kelpie-open-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  std::string path = std::string(pattern) + "/state/dir";
  Result<std::unique_ptr<MembershipDriver>> local = open_membership("local:" + path);
  ASSERT_TRUE(local) << local.status().to_string();
  EXPECT_TRUE(std::filesystem::is_directory(path));
  EXPECT_EQ((*local)->describe(), "local:" + path);
  EXPECT_EQ((*local)->status(), ClusterStatus::kUnformatted);
  std::filesystem::remove_all(pattern);
}

}  // namespace
}  // namespace kelpie
