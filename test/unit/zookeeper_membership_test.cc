// The zookeeper membership driver against a real ZooKeeper server (Debian's
// zookeeper package, started on loopback by test/integration/zookeeper_lib.sh):
// several drivers in this process, and child processes for crashes (SIGKILL) and
// hangs (SIGSTOP), so failures are real session expiries.
#include "cluster/zookeeper_membership.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "cluster/zookeeper_client.h"
#include "engine/directory_backing.h"
#include "test/unit/membership_test_support.h"

namespace kelpie {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using membership_test::holds_for;
using membership_test::ids_of;
using membership_test::make_member;
using membership_test::Recorder;

template <typename Condition>
bool wait_until(Condition condition, milliseconds timeout = 10000ms) {
  return membership_test::wait_until(condition, timeout);
}

constexpr milliseconds kSessionTimeout{2000};



long elapsed_ms(Clock::time_point since) {
  return static_cast<long>(
      std::chrono::duration_cast<milliseconds>(Clock::now() - since).count());
}

// Runs a zookeeper_lib.sh command line; returns its stdout.
std::string run_lib(const std::string& commands) {
  std::string script = "set -euo pipefail; ZK_NO_EXIT_TRAP=1; source '" KELPIE_SOURCE_DIR
                       "/test/integration/zookeeper_lib.sh'; " +
                       commands;
  std::string command = "bash -c \"$KELPIE_ZK_SCRIPT\" 2>&1";
  ::setenv("KELPIE_ZK_SCRIPT", script.c_str(), 1);
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  int status = ::pclose(pipe);
  if (status != 0) ADD_FAILURE() << "zookeeper_lib.sh failed: " << out;
  return out;
}

// One ZooKeeper server for the whole suite.
struct Server {
  std::string dir;
  int port = 0;
  pid_t pid = 0;

  void start() {
    dir = std::filesystem::temp_directory_path() / ("kelpie-zk-" + std::to_string(::getpid()));
    parse(run_lib("start_zookeeper '" + dir + "'; echo ZK $ZK_PORT $ZK_PID"));
  }
  void restart() {
    parse(run_lib("ZK_DIR='" + dir + "'; ZK_PORT=" + std::to_string(port) +
                  "; ZK_ADDR=127.0.0.1:$ZK_PORT; restart_zookeeper; echo ZK $ZK_PORT $ZK_PID"));
  }
  void stop() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    wait_until([&] { return ::kill(pid, 0) != 0; }, 15000ms);
    if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
    wait_until([&] { return ::kill(pid, 0) != 0; }, 5000ms);
    pid = 0;
  }
  void kill() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    wait_until([&] { return ::kill(pid, 0) != 0; }, 5000ms);
    pid = 0;
  }
  void parse(const std::string& out) {
    size_t at = out.rfind("ZK ");
    ASSERT_NE(at, std::string::npos) << out;
    std::istringstream fields(out.substr(at + 3));
    fields >> port >> pid;
  }
  std::string hosts() const { return "127.0.0.1:" + std::to_string(port); }
};

Server* server = nullptr;



struct Node {
  MemberInfo info;
  std::unique_ptr<Recorder> recorder;
  std::unique_ptr<ZookeeperMembership> driver;
};


bool increasing_by_one(const std::vector<uint64_t>& numbers) {
  for (size_t i = 1; i < numbers.size(); ++i) {
    if (numbers[i] != numbers[i - 1] + 1) return false;
  }
  return true;
}

class ZookeeperMembershipTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spdlog::set_level(std::getenv("KELPIE_TEST_LOG") ? spdlog::level::debug : spdlog::level::warn);
    server = new Server();
    server->start();
  }
  static void TearDownTestSuite() {
    server->stop();
    std::filesystem::remove_all(server->dir);
    delete server;
    server = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server->pid, 0) << "no ZooKeeper server";
    if (::kill(server->pid, 0) != 0) server->restart();
    static int counter = 0;
    root_ = "/kelpie-test/" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
            "-" + std::to_string(++counter);
  }
  void TearDown() override {
    for (pid_t pid : children_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    nodes_.clear();
  }

  ZookeeperMembershipOptions options(const std::string& root = "") const {
    ZookeeperMembershipOptions options;
    options.hosts = server->hosts();
    options.root = root.empty() ? root_ : root;
    options.session_timeout = session_timeout_;
    options.epochs_kept = epochs_kept_;
    return options;
  }

  Node& start(const MemberInfo& info) {
    auto node = std::make_unique<Node>();
    node->info = info;
    node->driver = std::make_unique<ZookeeperMembership>(options());
    node->recorder = std::make_unique<Recorder>();
    Status joined = node->driver->join(info, node->recorder->events());
    EXPECT_TRUE(joined) << joined.to_string();
    nodes_.push_back(std::move(node));
    return *nodes_.back();
  }

  void expect_all_at(uint64_t epoch) {
    for (auto& node : nodes_) {
      EXPECT_TRUE(wait_until([&] { return node->recorder->last_epoch() == epoch; }))
          << "member stuck at epoch " << node->recorder->last_epoch() << ", want " << epoch;
    }
  }

  // A member in a child process: each epoch it is told of goes to `report` as
  // "<epoch> <1 if listed, else 0> <reason>". With format_when > 0 it formats the
  // cluster once that many members are live.
  pid_t spawn(const MemberInfo& info, const std::string& report, size_t format_when = 0) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ZookeeperMembership driver(options());
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
      if (format_when > 0) {
        while (driver.live_members().size() < format_when) ::usleep(10000);
        if (!driver.format(3, 2)) ::_exit(4);
      }
      for (;;) ::pause();
    }
    EXPECT_GT(pid, 0);
    children_.push_back(pid);
    return pid;
  }

  std::string report_path(const std::string& name) const {
    return std::filesystem::temp_directory_path() /
           ("kelpie-zk-report-" + std::to_string(::getpid()) + "-" + name);
  }

  std::string root_;
  milliseconds session_timeout_ = kSessionTimeout;
  size_t epochs_kept_ = 64;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<pid_t> children_;
};

std::vector<std::string> report_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

TEST(ZookeeperSpecTest, ParsesHostsPathAndOptions) {
  auto good = parse_zookeeper_spec("zookeeper:10.0.0.1:2181,zk-2.example:2182/kelpie/c1");
  ASSERT_TRUE(good) << good.status().to_string();
  EXPECT_EQ(good->hosts, "10.0.0.1:2181,zk-2.example:2182");
  EXPECT_EQ(good->root, "/kelpie/c1");
  EXPECT_EQ(good->session_timeout, 10000ms);
  auto timed = parse_zookeeper_spec("zookeeper:127.0.0.1:2181/c?session_timeout_ms=3000");
  ASSERT_TRUE(timed);
  EXPECT_EQ(timed->session_timeout, 3000ms);
  EXPECT_EQ(timed->root, "/c");
  for (const char* bad :
       {"zookeeper:", "zookeeper:127.0.0.1:2181", "zookeeper:/kelpie", "zookeeper:host/kelpie",
        "zookeeper:host:0/kelpie", "zookeeper:host:99999/kelpie", "zookeeper:host:2181/",
        "zookeeper:host:2181/kelpie/", "zookeeper:host:2181//x", "zookeeper:host:2181/a/../b",
        "zookeeper:host:2181/zookeeper", "zookeeper:h st:2181/x", "zookeeper:host:2181,/x",
        "zookeeper:host:2181/x?session_timeout_ms=10", "zookeeper:host:2181/x?colour=red",
        "zookeeper:host:2181/x?session_timeout_ms="}) {
    auto parsed = parse_zookeeper_spec(bad);
    EXPECT_EQ(parsed.status().code(), EINVAL) << bad;
    EXPECT_NE(parsed.status().message().find("expected zookeeper:HOST:PORT"), std::string::npos)
        << parsed.status().message();
  }
}

TEST(ZookeeperSpecTest, UnreachableEnsembleFailsWithinTheConnectTimeout) {
  auto start = Clock::now();
  auto opened = open_membership("zookeeper:127.0.0.1:1/kelpie/x?connect_timeout_ms=700");
  EXPECT_EQ(opened.status().code(), ETIMEDOUT);
  EXPECT_EQ(opened.status().message(),
            "membership 'zookeeper:127.0.0.1:1/kelpie/x?connect_timeout_ms=700': zookeeper "
            "127.0.0.1:1: no connection within 700 ms");
  EXPECT_LT(elapsed_ms(start), 3000);
  auto unresolvable = open_membership("zookeeper:no-such-host.invalid:2181/kelpie/x");
  EXPECT_FALSE(unresolvable);
}

TEST_F(ZookeeperMembershipTest, FormatJoinLeaveAreOrderedEpochs) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  Node& c = start(make_member(2));
  Node& gateway = start(make_member(3, true));
  EXPECT_EQ(a.driver->status(), ClusterStatus::kUnformatted);
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 4; }));
  Result<EpochRecord> first = b.driver->format(3, 2);
  ASSERT_TRUE(first) << first.status().to_string();
  EXPECT_EQ(first->epoch, 1u);
  EXPECT_EQ(first->reason, "format");
  EXPECT_EQ(ids_of(*first), (std::set<Uuid>{a.info.id, b.info.id, c.info.id}));
  expect_all_at(1);
  EXPECT_EQ(a.driver->format(3, 2).status().code(), EEXIST);
  for (auto& node : nodes_) {
    EXPECT_TRUE(wait_until([&] { return node->driver->status() == ClusterStatus::kRunning; }));
  }
  // Every MemberInfo field survives.
  std::optional<EpochRecord> seen = gateway.driver->current_epoch();
  ASSERT_TRUE(seen);
  auto stored = std::find_if(seen->nodes.begin(), seen->nodes.end(),
                             [&](const MemberInfo& n) { return n.id == c.info.id; });
  ASSERT_NE(stored, seen->nodes.end());
  EXPECT_EQ(stored->peer_address, c.info.peer_address);
  EXPECT_EQ(stored->zone, c.info.zone);
  EXPECT_EQ(stored->pid, ::getpid());

  auto join_start = Clock::now();
  Node& d = start(make_member(4));
  std::optional<EpochRecord> joined = d.driver->current_epoch();
  ASSERT_TRUE(joined);
  EXPECT_EQ(joined->epoch, 2u);
  EXPECT_EQ(joined->reason, "join " + uuid_to_string(d.info.id));
  expect_all_at(2);
  std::printf("join: %ld ms until join() returned and every member had epoch 2\n",
              elapsed_ms(join_start));
  EXPECT_EQ(d.recorder->epoch_numbers(), std::vector<uint64_t>{2});

  auto leave_start = Clock::now();
  d.driver->leave();
  for (Node* node : {&a, &b, &c, &gateway}) {
    ASSERT_TRUE(wait_until([&] { return node->recorder->last_epoch() == 3; }));
  }
  std::printf("leave: epoch 3 reached every member %ld ms after leave()\n", elapsed_ms(leave_start));
  EXPECT_EQ(a.driver->current_epoch()->reason, "leave " + uuid_to_string(d.info.id));
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 3; }, 1500ms));
  for (Node* node : {&a, &b, &c, &gateway}) {
    EXPECT_EQ(node->recorder->epoch_numbers(), (std::vector<uint64_t>{1, 2, 3}));
  }
  EXPECT_EQ(a.driver->epoch_history().size(), 3u);
  std::string describe = a.driver->describe();
  EXPECT_EQ(describe.rfind("zookeeper:" + server->hosts() + root_ + " (session 0x", 0), 0u)
      << describe;
  EXPECT_NE(describe.find(", connected, timeout 2000 ms)"), std::string::npos) << describe;
  // Renewed by the ticks (on a loaded host a slow round trip may let it lapse for a
  // moment: that holds I/O, it never fails it).
  EXPECT_TRUE(wait_until([&] { return a.driver->lease_until() > Clock::now(); }));
}

TEST_F(ZookeeperMembershipTest, KilledMemberFailsAfterItsSessionTimeoutAndComesBack) {
  MemberInfo child_info = make_member(9);
  std::string report = report_path("killed");
  ::unlink(report.c_str());
  pid_t child = spawn(child_info, report);
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 3; }));
  ASSERT_TRUE(a.driver->format(3, 2));
  ASSERT_TRUE(wait_until([&] { return !report_lines(report).empty(); }));
  EXPECT_EQ(report_lines(report)[0], "1 1 format");

  ASSERT_EQ(::kill(child, SIGKILL), 0);
  auto killed_at = Clock::now();
  ASSERT_TRUE(wait_until([&] { return b.driver->current_epoch()->epoch == 2; }, 15000ms));
  long detected_ms = elapsed_ms(killed_at);
  std::printf("session expiry: 'failed' epoch %ld ms after kill -9 (session timeout %lld ms)\n",
              detected_ms, static_cast<long long>(a.driver->negotiated_timeout().count()));
  // Never before the session timeout: the lease of a partitioned node lapses first.
  EXPECT_GE(detected_ms, a.driver->negotiated_timeout().count() - 100);
  EXPECT_LT(detected_ms, a.driver->negotiated_timeout().count() * 3);
  EXPECT_EQ(b.driver->current_epoch()->reason, "failed " + uuid_to_string(child_info.id));
  EXPECT_EQ(ids_of(*b.driver->current_epoch()), (std::set<Uuid>{a.info.id, b.info.id}));
  expect_all_at(2);

  // The same uuid starts again: a join epoch.
  ::unlink(report.c_str());
  spawn(child_info, report);
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 3; }));
  EXPECT_EQ(a.driver->current_epoch()->reason, "join " + uuid_to_string(child_info.id));
  ASSERT_TRUE(wait_until([&] { return !report_lines(report).empty(); }));
  EXPECT_EQ(report_lines(report)[0], "3 1 join " + uuid_to_string(child_info.id));
  expect_all_at(3);
  EXPECT_EQ(a.recorder->epoch_numbers(), (std::vector<uint64_t>{1, 2, 3}));
}

// Nodes that die together make one "failed" epoch: their sessions expire over a tick
// and one of ZooKeeper's expiry intervals (500 ms here), and the leader of an epoch of
// 8 nodes or more waits that long (settle: 1 s at this 4 s session timeout).
TEST_F(ZookeeperMembershipTest, NodesKilledTogetherFailInOneEpoch) {
  session_timeout_ = 4000ms;
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));  // one of the first five leads: they joined first
  for (int i = 2; i < 5; ++i) start(make_member(i));
  std::vector<MemberInfo> children;
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; ++i) {
    children.push_back(make_member(10 + i));
    pids.push_back(spawn(children.back(), report_path("together-" + std::to_string(i))));
  }
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 8; }));
  ASSERT_TRUE(a.driver->format(3, 2));
  expect_all_at(1);
  for (pid_t pid : pids) ASSERT_EQ(::kill(pid, SIGKILL), 0);
  auto killed_at = Clock::now();
  ASSERT_TRUE(wait_until([&] { return b.driver->current_epoch()->nodes.size() == 5; }, 20000ms));
  long detected_ms = elapsed_ms(killed_at);
  EpochRecord epoch = *b.driver->current_epoch();
  std::printf("3 nodes killed at once: epoch %llu (%s) %ld ms after the kill (session timeout "
              "%lld ms)\n", static_cast<unsigned long long>(epoch.epoch), epoch.reason.c_str(),
              detected_ms, static_cast<long long>(a.driver->negotiated_timeout().count()));
  EXPECT_EQ(epoch.epoch, 2u) << "one epoch for the three failures";
  for (const MemberInfo& child : children) {
    EXPECT_NE(epoch.reason.find("failed " + uuid_to_string(child.id)), std::string::npos);
  }
  EXPECT_LT(detected_ms, a.driver->negotiated_timeout().count() * 3);
  expect_all_at(2);
}

TEST_F(ZookeeperMembershipTest, RestartBeforeExpiryIsJoinedAgainAtOnce) {
  Node& a = start(make_member(0));
  start(make_member(1));
  MemberInfo c_info = make_member(2);
  std::string report = report_path("restarted");
  ::unlink(report.c_str());
  pid_t child = spawn(c_info, report);
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 3; }));
  ASSERT_TRUE(a.driver->format(3, 2));
  ASSERT_TRUE(wait_until([&] { return !report_lines(report).empty(); }));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  // Back before its old session expired: its old znode is replaced, one "join" epoch.
  Node& c = start(c_info);
  EXPECT_EQ(c.driver->current_epoch()->epoch, 2u);
  EXPECT_EQ(c.driver->current_epoch()->reason, "join " + uuid_to_string(c_info.id));
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 2; },
                        kSessionTimeout + 1000ms));
}

TEST_F(ZookeeperMembershipTest, HungMemberIsFailedThenRejoinsByItselfAfterBeingTold) {
  MemberInfo child_info = make_member(9);
  std::string child_id = uuid_to_string(child_info.id);
  std::string report = report_path("hung");
  ::unlink(report.c_str());
  pid_t child = spawn(child_info, report);
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 3; }));
  ASSERT_TRUE(a.driver->format(3, 2));
  ASSERT_TRUE(wait_until([&] { return !report_lines(report).empty(); }));

  ASSERT_EQ(::kill(child, SIGSTOP), 0);
  ASSERT_TRUE(wait_until([&] { return b.driver->current_epoch()->epoch == 2; }, 15000ms));
  EXPECT_EQ(b.driver->current_epoch()->reason, "failed " + child_id);
  ASSERT_EQ(::kill(child, SIGCONT), 0);
  auto continued = Clock::now();
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 3; }, 15000ms));
  std::printf("rejoin: epoch 3 %ld ms after SIGCONT (new session, epochs delivered first)\n",
              elapsed_ms(continued));
  EXPECT_EQ(a.driver->current_epoch()->reason, "rejoin " + child_id);
  expect_all_at(3);
  ASSERT_TRUE(wait_until([&] { return report_lines(report).size() == 3; }));
  EXPECT_EQ(report_lines(report),
            (std::vector<std::string>{"1 1 format", "2 0 failed " + child_id, "3 1 rejoin " + child_id}));
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 3; }, kSessionTimeout));
}

TEST_F(ZookeeperMembershipTest, EvictedLiveMemberRejoinsExceptDuringShutdown) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  Node& c = start(make_member(2));
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 3; }));
  ASSERT_TRUE(a.driver->format(3, 2));
  expect_all_at(1);
  ASSERT_TRUE(a.driver->evict(c.info.id));
  EXPECT_EQ(a.driver->evict(make_uuid()).code(), ENOENT);
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 3; }));
  EXPECT_EQ(a.driver->current_epoch()->reason, "rejoin " + uuid_to_string(c.info.id));
  expect_all_at(3);
  EXPECT_EQ(c.recorder->reasons(),
            (std::vector<std::string>{"format", "evicted " + uuid_to_string(c.info.id),
                                      "rejoin " + uuid_to_string(c.info.id)}));

  ASSERT_TRUE(b.driver->request_shutdown());
  for (auto& node : nodes_) {
    ASSERT_TRUE(wait_until([&] { return node->recorder->shutdowns.load() == 1; }));
    EXPECT_EQ(node->driver->status(), ClusterStatus::kShutdown);
  }
  ASSERT_TRUE(a.driver->evict(c.info.id));
  ASSERT_TRUE(wait_until([&] { return c.recorder->last_epoch() == 4; }));
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 4; }, 1500ms));
}

TEST_F(ZookeeperMembershipTest, ShutdownThenFullRestartWaitsForEveryNode) {
  std::vector<MemberInfo> infos = {make_member(0), make_member(1), make_member(2)};
  for (const MemberInfo& info : infos) start(info);
  ASSERT_TRUE(wait_until([&] { return nodes_[0]->driver->live_members().size() == 3; }));
  ASSERT_TRUE(nodes_[0]->driver->format(3, 2));
  expect_all_at(1);
  ASSERT_TRUE(nodes_[1]->driver->request_shutdown());
  for (auto& node : nodes_) {
    ASSERT_TRUE(wait_until([&] { return node->recorder->shutdowns.load() == 1; }));
  }
  // They stop one by one: no "failed" epoch during a shutdown.
  nodes_[2]->driver->stop();
  nodes_[1]->driver->stop();
  EXPECT_TRUE(holds_for([&] { return nodes_[0]->driver->current_epoch()->epoch == 1; }, 1000ms));
  nodes_.clear();

  Node& a = start(infos[0]);
  Node& b = start(infos[1]);
  EXPECT_EQ(a.driver->status(), ClusterStatus::kWaiting);
  EXPECT_EQ(b.driver->status(), ClusterStatus::kWaiting);
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 1; }, 1000ms));
  start(infos[2]);
  ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == 2; }));
  EXPECT_EQ(a.driver->current_epoch()->reason, "restart");
  expect_all_at(2);
  for (auto& node : nodes_) {
    EXPECT_TRUE(wait_until([&] { return node->driver->status() == ClusterStatus::kRunning; }));
    EXPECT_EQ(node->recorder->shutdowns.load(), 0);
  }
}

TEST_F(ZookeeperMembershipTest, CrashOfEveryNodeWaitsForAllThenForceRecoverWorks) {
  std::vector<MemberInfo> infos = {make_member(0), make_member(1), make_member(2)};
  std::vector<std::string> reports;
  for (size_t i = 0; i < infos.size(); ++i) {
    reports.push_back(report_path("crash-" + std::to_string(i)));
    ::unlink(reports.back().c_str());
    spawn(infos[i], reports.back(), i == 0 ? 3 : 0);
  }
  for (const std::string& report : reports) {
    ASSERT_TRUE(wait_until([&] { return !report_lines(report).empty(); }));
  }
  for (pid_t pid : children_) ::kill(pid, SIGKILL);
  for (pid_t pid : children_) ::waitpid(pid, nullptr, 0);
  children_.clear();

  // Back at once, while the crashed sessions still linger: they wait.
  Node& a = start(infos[0]);
  Node& b = start(infos[1]);
  EXPECT_EQ(a.driver->status(), ClusterStatus::kWaiting);
  EXPECT_EQ(b.driver->status(), ClusterStatus::kWaiting);
  EXPECT_TRUE(holds_for([&] { return a.driver->current_epoch()->epoch == 1; }, kSessionTimeout));
  Result<EpochRecord> recovered = a.driver->force_recover();
  ASSERT_TRUE(recovered) << recovered.status().to_string();
  ASSERT_TRUE(wait_until([&] { return b.driver->current_epoch()->epoch == 2; }));
  EXPECT_EQ(b.driver->current_epoch()->reason, "recover");
  EXPECT_EQ(ids_of(*b.driver->current_epoch()), (std::set<Uuid>{infos[0].id, infos[1].id}));
  EXPECT_TRUE(wait_until([&] { return b.driver->status() == ClusterStatus::kRunning; }));
  Node& c = start(infos[2]);
  EXPECT_EQ(c.driver->current_epoch()->reason, "join " + uuid_to_string(infos[2].id));
  expect_all_at(3);
}

TEST_F(ZookeeperMembershipTest, SharedUpdatesAreTotallyOrderedAndAnnounced) {
  for (int i = 0; i < 3; ++i) start(make_member(i));
  EXPECT_EQ(nodes_[0]->driver->read_shared("counter").status().code(), ENOENT);
  EXPECT_EQ(nodes_[0]->driver->read_shared("../x").status().code(), EINVAL);
  constexpr int kThreads = 6, kIncrements = 30;
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
    EXPECT_EQ(*node->driver->read_shared("counter"), std::to_string(kThreads * kIncrements));
  }
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
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(nodes_[0]->recorder->saw_shared("vdis"));
}

TEST_F(ZookeeperMembershipTest, DirectoryLockOrdersControlOperationsAcrossNodes) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  auto first = a.driver->directory_backing("vdis.json");
  auto second = b.driver->directory_backing("vdis.json");
  ASSERT_TRUE(first->lock());
  EXPECT_EQ(*first->read(), "");
  std::atomic<bool> second_locked{false};
  std::thread waiter([&] {
    ASSERT_TRUE(second->lock());
    second_locked = true;
  });
  EXPECT_TRUE(holds_for([&] { return !second_locked; }, 300ms));
  ASSERT_TRUE(first->write("{\"v\":1}"));
  first->unlock();
  waiter.join();
  EXPECT_EQ(*second->read(), "{\"v\":1}");
  ASSERT_TRUE(second->write("{\"v\":2}"));
  second->unlock();
  EXPECT_TRUE(wait_until([&] { return a.recorder->saw_shared("vdis.json"); }));
  EXPECT_EQ(*a.driver->read_shared("vdis.json"), "{\"v\":2}");
}

TEST_F(ZookeeperMembershipTest, PublishedStatusReachesTheOthers) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  a.driver->publish_status("{\"recovering\":12}");
  std::string a_id = uuid_to_string(a.info.id);
  EXPECT_TRUE(wait_until([&] {
    auto statuses = b.driver->member_statuses();
    return statuses.count(a_id) && statuses[a_id] == "{\"recovering\":12}";
  }));
  a.driver->stop();
  EXPECT_TRUE(wait_until([&] { return b.driver->member_statuses().count(a_id) == 0; }));
}

TEST_F(ZookeeperMembershipTest, EpochLogStaysBoundedAndHistoryIsRebuilt) {
  epochs_kept_ = 8;
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  Node& c = start(make_member(2));
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 3; }));
  ASSERT_TRUE(a.driver->format(2, 1));
  constexpr int kCycles = 12;  // each: "evicted c", then "rejoin c"
  for (int i = 0; i < kCycles; ++i) {
    uint64_t before = a.driver->current_epoch()->epoch;
    ASSERT_TRUE(b.driver->evict(c.info.id));
    ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == before + 2; }))
        << "cycle " << i;
  }
  uint64_t last = 1 + 2 * kCycles;
  expect_all_at(last);
  EXPECT_TRUE(increasing_by_one(c.recorder->epoch_numbers()));
  ZookeeperClient raw(server->hosts(), kSessionTimeout, nullptr, nullptr);
  ASSERT_TRUE(raw.open(5000ms));
  Result<std::vector<std::string>> records = raw.children(root_ + "/epochs", false);
  ASSERT_TRUE(records);
  EXPECT_LE(records->size(), epochs_kept_);
  raw.close();

  std::vector<EpochRecord> history = a.driver->epoch_history();
  ASSERT_EQ(history.size(), epochs_kept_);
  EXPECT_EQ(history.back().epoch, last);
  // A member that joined later rebuilds the same history from the compact records.
  Node& d = start(make_member(3, true));
  std::vector<EpochRecord> rebuilt = d.driver->epoch_history();
  ASSERT_EQ(rebuilt.size(), history.size());
  for (size_t i = 0; i < history.size(); ++i) {
    EXPECT_EQ(rebuilt[i].epoch, history[i].epoch);
    EXPECT_EQ(rebuilt[i].reason, history[i].reason);
    EXPECT_EQ(ids_of(rebuilt[i]), ids_of(history[i])) << "epoch " << history[i].epoch;
  }
}

// Recovery's authority walk (recovery_authority.h) needs the older epochs: a joiner
// that could not read them once (ZooKeeper unreachable) must read them on a later
// call, not keep a history that starts at its join for good.
TEST_F(ZookeeperMembershipTest, HistoryUnreadableOnceIsReadLater) {
  epochs_kept_ = 8;
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 2; }));
  ASSERT_TRUE(a.driver->format(2, 1));
  for (int i = 0; i < 5; ++i) {  // each: "evicted b", then "rejoin b"
    uint64_t before = a.driver->current_epoch()->epoch;
    ASSERT_TRUE(a.driver->evict(b.info.id));
    ASSERT_TRUE(wait_until([&] { return a.driver->current_epoch()->epoch == before + 2; }))
        << "cycle " << i;
  }
  Node& d = start(make_member(3, true));
  ASSERT_TRUE(wait_until([&] { return d.driver->current_epoch().has_value(); }));
  server->kill();
  std::vector<EpochRecord> during = d.driver->epoch_history();
  EXPECT_LT(during.size(), epochs_kept_) << "the older records were read with the server down?";
  server->restart();
  // Wait until every member is back and the epochs settle (sessions may have expired).
  ASSERT_TRUE(wait_until([&] {
    auto newest = a.driver->current_epoch();
    auto seen = d.driver->current_epoch();
    return d.driver->lease_until() > Clock::now() && newest && seen &&
           newest->epoch == seen->epoch && ids_of(*newest).count(a.info.id) > 0 &&
           ids_of(*newest).count(b.info.id) > 0;
  }, 30000ms));
  std::vector<EpochRecord> history = a.driver->epoch_history();
  std::vector<EpochRecord> later = d.driver->epoch_history();
  ASSERT_EQ(history.size(), epochs_kept_);
  ASSERT_EQ(later.size(), history.size()) << "the joiner's history still starts at epoch "
                                          << (later.empty() ? 0 : later.front().epoch);
  for (size_t i = 0; i < history.size(); ++i) {
    EXPECT_EQ(later[i].epoch, history[i].epoch);
    EXPECT_EQ(ids_of(later[i]), ids_of(history[i])) << "epoch " << history[i].epoch;
  }
}

TEST_F(ZookeeperMembershipTest, TwoClustersShareOneEnsemble) {
  Node& a = start(make_member(0));
  ASSERT_TRUE(a.driver->format(1, 1));
  ZookeeperMembership other(options(root_ + "-other"));
  Recorder recorder;
  ASSERT_TRUE(other.join(make_member(1), recorder.events()));
  EXPECT_EQ(other.status(), ClusterStatus::kUnformatted);
  EXPECT_EQ(other.live_members().size(), 1u);
  ASSERT_TRUE(other.format(1, 1));
  EXPECT_NE(other.current_epoch()->cluster, a.driver->current_epoch()->cluster);
  other.stop();
}

TEST_F(ZookeeperMembershipTest, LeaseLapsesWhileZookeeperIsDownAndRenewsAfter) {
  Node& a = start(make_member(0));
  Node& b = start(make_member(1));
  ASSERT_TRUE(wait_until([&] { return a.driver->live_members().size() == 2; }));
  ASSERT_TRUE(a.driver->format(2, 1));
  expect_all_at(1);
  ASSERT_TRUE(wait_until([&] { return a.driver->lease_until() > Clock::now(); }));
  milliseconds half = a.driver->negotiated_timeout() / 2;

  // Held: no contact is possible once the server process is gone (kill -9, reaped), so
  // the lease can not reach past that moment plus half the session timeout: every
  // renewal is dated before a round trip that began while the server still lived.
  // (A JVM may still answer for a moment after SIGKILL on a loaded host, so the bound
  // is taken from when the process is gone, not from when the signal was sent.)
  auto stopped_at = Clock::now();
  server->kill();
  auto gone_at = Clock::now();
  ASSERT_TRUE(wait_until([&] { return a.driver->lease_until() < Clock::now(); }, 5000ms));
  std::printf("lease: lapsed %ld ms after ZooKeeper was killed, %ld ms after it was gone "
              "(half timeout %lld ms)\n",
              elapsed_ms(stopped_at), elapsed_ms(gone_at), static_cast<long long>(half.count()));
  for (Node* node : {&a, &b}) EXPECT_LE(node->driver->lease_until(), gone_at + half);
  EXPECT_EQ(a.driver->current_epoch()->epoch, 1u);  // the epoch is kept

  auto restart_at = Clock::now();
  server->restart();
  long server_ms = elapsed_ms(restart_at);
  for (Node* node : {&a, &b}) {
    ASSERT_TRUE(wait_until([&] { return node->driver->lease_until() > Clock::now(); }, 20000ms));
  }
  std::printf("lease: renewed %ld ms after the restart began (%ld ms of it the server start)\n",
              elapsed_ms(restart_at), server_ms);
  // Membership works again: both are listed in the newest epoch, and blobs update.
  ASSERT_TRUE(wait_until([&] {
    auto epoch = b.driver->current_epoch();
    return epoch && ids_of(*epoch) == std::set<Uuid>{a.info.id, b.info.id} &&
           a.driver->current_epoch()->epoch == epoch->epoch;
  }, 20000ms));
  EXPECT_TRUE(a.driver->update_shared("after", [](std::string& content) {
    content = "ok";
    return Status::ok();
  }));
  EXPECT_TRUE(increasing_by_one(a.recorder->epoch_numbers()));
}

}  // namespace
}  // namespace kelpie
