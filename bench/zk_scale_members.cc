// zk_scale_members: many lightweight members of one ZooKeeper-coordinated cluster
// in one process, for bench/zk_scale_bench.sh (issue 4's scale figures). Each
// member is a real ZookeeperMembership (cluster/zookeeper_membership.h) with its
// own session, joined as a storage node; there is no storage, peer server or NBD.
//
// usage: zk_scale_members --spec zookeeper:HOST:PORT/path[?session_timeout_ms=N]
//                         --members N [--join-threads T] [--track-members]
//                         [--epochs-kept K] [--log FILE]
// Joins N members (T threads, default 16), prints "joined N ms M rss_kb R", then
// reads commands on stdin, one a line (member 0 does the work):
//   format COPIES MIN   formats the cluster: epoch 1 lists every live member.
//   update NAME BYTES   rewrites the shared blob NAME (update_shared) with BYTES of
//                       text; prints "updated NAME start_ms S done_ms D".
//   churn K             evicts members 1..K one after another; after each, waits
//                       (up to 60 s) until an epoch lists it again; prints
//                       "churn I evicted_epoch E rejoined_epoch F ms M", and
//                       "churned K" at the end (also after a failure).
//   rss                 prints "rss_kb R".
//   quit                stops every member (no leave) and exits.
// Without --track-members a member watches the member list only while it leads
// (the option the driver has for this bench). --epochs-kept sets the driver's
// epochs_kept (default 64): every member keeps that many full epoch records.
// Reports as they happen, all times wall-clock ms since the Unix epoch (one host,
// so comparable across processes):
//   epoch E nodes N created_ms C first_ms F all_ms A changes K reason R
//        once every member of this process delivered epoch E (F, A: the first and
//        the last delivery; K: how many joins/failures the epoch is made of);
//   shared NAME G all_ms A   once every member that did not write was told of
//        change G (1, 2, ...) of blob NAME.
// Exits 1 with one line on stderr when a member can not join.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster/zookeeper_membership.h"
#include "common/log.h"
#include "common/uuid.h"

namespace kelpie {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

long rss_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

struct Flags {
  std::string spec;
  size_t members = 0;
  size_t join_threads = 16;
  bool track_members = false;
  size_t epochs_kept = 0;  // 0: the driver's default
  std::string log_file;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "zk_scale_members: %s\nusage: zk_scale_members --spec SPEC --members N "
               "[--join-threads T] [--track-members] [--epochs-kept K] [--log FILE]\n",
               why.c_str());
  std::exit(2);
}

Flags parse_flags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--track-members") {
      flags.track_members = true;
      continue;
    }
    if (i + 1 >= argc) usage(arg + " needs a value");
    std::string value = argv[++i];
    if (arg == "--spec") {
      flags.spec = value;
    } else if (arg == "--members") {
      flags.members = std::stoul(value);
    } else if (arg == "--join-threads") {
      flags.join_threads = std::max<size_t>(1, std::stoul(value));
    } else if (arg == "--epochs-kept") {
      flags.epochs_kept = std::stoul(value);
    } else if (arg == "--log") {
      flags.log_file = value;
    } else {
      usage("unknown option " + arg);
    }
  }
  if (flags.spec.empty() || flags.members == 0) usage("--spec and --members are required");
  return flags;
}

// Everything the callbacks of one member record; they run on its driver thread.
struct Member {
  std::unique_ptr<ZookeeperMembership> driver;
  MemberInfo info;
  std::mutex mutex;
  std::map<uint64_t, int64_t> delivered_ms;               // epoch -> when
  std::map<std::string, std::vector<int64_t>> shared_ms;  // blob -> when told of each change
};

struct EpochSeen {
  size_t nodes = 0;
  size_t changes = 0;  // entries of the reason ("failed a; join b" is 2)
  int64_t created_ms = 0;
  std::string reason;
  bool reported = false;
};

class Swarm {
 public:
  explicit Swarm(const Flags& flags) : flags_(flags) {}

  Status join_all();
  void run_commands();
  void stop_all();
  // The reporter: prints epochs and blob changes every member of this process saw.
  void report_loop();
  void stop_reporting() { reporting_ = false; }

 private:
  Status join_one(size_t index);
  void format(uint32_t copies, uint32_t min_copies);
  void update(const std::string& name, size_t bytes);
  void churn(size_t count);
  void report_epochs();
  void report_shared();
  void say(const std::string& line);

  const Flags flags_;
  std::vector<std::unique_ptr<Member>> members_;
  std::mutex epochs_mutex_;
  std::map<uint64_t, EpochSeen> epochs_;
  std::map<std::string, size_t> shared_reported_;
  std::mutex writers_mutex_;
  std::map<std::string, size_t> writer_of_;  // blob -> index of the member that wrote it
  std::mutex out_mutex_;
  std::atomic<bool> reporting_{true};
};

void Swarm::say(const std::string& line) {
  std::lock_guard guard(out_mutex_);
  std::cout << line << std::endl;
}

Status Swarm::join_one(size_t index) {
  Member& member = *members_[index];
  Result<ZookeeperMembershipOptions> options = parse_zookeeper_spec(flags_.spec);
  if (!options) return options.status();
  options->track_members = flags_.track_members;
  if (flags_.epochs_kept > 0) options->epochs_kept = flags_.epochs_kept;
  member.driver = std::make_unique<ZookeeperMembership>(std::move(*options));
  member.info.id = make_uuid();
  std::string host = "10.200." + std::to_string(getpid() % 250) + "." + std::to_string(index % 250);
  member.info.peer_address = host + ":" + std::to_string(7000 + index);
  member.info.admin_address = host + ":" + std::to_string(17000 + index);
  member.info.vnodes = 64;
  member.info.capacity_bytes = uint64_t{1} << 40;
  member.info.pid = getpid();
  MembershipDriver::Events events;
  events.on_epoch = [this, &member](const EpochRecord& record) {
    int64_t at = now_ms();
    {
      std::lock_guard guard(member.mutex);
      member.delivered_ms.emplace(record.epoch, at);
    }
    std::lock_guard guard(epochs_mutex_);
    EpochSeen& seen = epochs_[record.epoch];
    seen.nodes = record.nodes.size();
    seen.created_ms = record.created_unix_ms;
    seen.changes = 1 + std::count(record.reason.begin(), record.reason.end(), ';');
    seen.reason = record.reason.substr(0, 120);
  };
  events.on_shared_changed = [&member](const std::string& name) {
    int64_t at = now_ms();
    std::lock_guard guard(member.mutex);
    member.shared_ms[name].push_back(at);
  };
  events.on_shutdown = [] {};
  return member.driver->join(member.info, std::move(events));
}

Status Swarm::join_all() {
  for (size_t i = 0; i < flags_.members; ++i) members_.push_back(std::make_unique<Member>());
  std::atomic<size_t> next{0};
  std::mutex failed_mutex;
  Status failed = Status::ok();
  std::vector<std::thread> threads;
  for (size_t t = 0; t < std::min(flags_.join_threads, flags_.members); ++t) {
    threads.emplace_back([&] {
      for (size_t i = next++; i < flags_.members; i = next++) {
        Status joined = join_one(i);
        if (!joined) {
          std::lock_guard guard(failed_mutex);
          if (failed) failed = Status::error(joined.code(), "member " + std::to_string(i) + ": " + joined.message());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return failed;
}

void Swarm::format(uint32_t copies, uint32_t min_copies) {
  Result<EpochRecord> made = members_[0]->driver->format(copies, min_copies);
  if (!made) {
    say("format failed: " + made.status().to_string());
    return;
  }
  say("formatted epoch " + std::to_string(made->epoch) + " nodes " + std::to_string(made->nodes.size()));
}

void Swarm::update(const std::string& name, size_t bytes) {
  {
    std::lock_guard guard(writers_mutex_);
    writer_of_[name] = 0;
  }
  int64_t start = now_ms();
  Status done = members_[0]->driver->update_shared(name, [&](std::string& content) {
    // A directory-like text of the requested size, different every time.
    std::string stamp = "{\"written_ms\":" + std::to_string(start) + ",\"pad\":\"";
    content = stamp + std::string(bytes > stamp.size() + 2 ? bytes - stamp.size() - 2 : 0, 'x') + "\"}";
    return Status::ok();
  });
  if (!done) {
    say("update failed: " + done.to_string());
    return;
  }
  say("updated " + name + " start_ms " + std::to_string(start) + " done_ms " + std::to_string(now_ms()));
}

void Swarm::churn(size_t count) {
  MembershipDriver& controller = *members_[0]->driver;
  for (size_t i = 1; i <= count && i < members_.size(); ++i) {
    const Uuid id = members_[i]->info.id;
    int64_t start = now_ms();
    if (Status evicted = controller.evict(id); !evicted) {
      say("churn " + std::to_string(i) + " evict failed: " + evicted.to_string());
      return;
    }
    uint64_t evicted_epoch = controller.current_epoch() ? controller.current_epoch()->epoch : 0;
    auto lists = [&](const EpochRecord& record) {
      return std::any_of(record.nodes.begin(), record.nodes.end(),
                         [&](const MemberInfo& node) { return node.id == id; });
    };
    uint64_t rejoined = 0;
    for (int64_t deadline = now_ms() + 60000; now_ms() < deadline;) {
      std::optional<EpochRecord> current = controller.current_epoch();
      if (current && current->epoch > evicted_epoch && lists(*current)) {
        rejoined = current->epoch;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    say("churn " + std::to_string(i) + " evicted_epoch " + std::to_string(evicted_epoch) +
        " rejoined_epoch " + std::to_string(rejoined) + " ms " + std::to_string(now_ms() - start));
    if (rejoined == 0) break;
  }
  say("churned " + std::to_string(count));
}

void Swarm::run_commands() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream words(line);
    std::string command;
    words >> command;
    if (command == "format") {
      uint32_t copies = 3, min_copies = 2;
      words >> copies >> min_copies;
      format(copies, min_copies);
    } else if (command == "update") {
      std::string name;
      size_t bytes = 0;
      words >> name >> bytes;
      update(name, bytes);
    } else if (command == "churn") {
      size_t count = 0;
      words >> count;
      churn(count);
    } else if (command == "rss") {
      say("rss_kb " + std::to_string(rss_kb()));
    } else if (command == "quit") {
      break;
    } else if (!command.empty()) {
      say("unknown command: " + command);
    }
  }
}

void Swarm::report_epochs() {
  std::lock_guard guard(epochs_mutex_);
  for (auto& [epoch, seen] : epochs_) {
    if (seen.reported) continue;
    int64_t first = INT64_MAX, last = 0;
    bool all = true;
    for (const auto& member : members_) {
      std::lock_guard member_guard(member->mutex);
      auto it = member->delivered_ms.find(epoch);
      if (it == member->delivered_ms.end()) {
        all = false;
        break;
      }
      first = std::min(first, it->second);
      last = std::max(last, it->second);
    }
    if (!all) continue;
    seen.reported = true;
    std::ostringstream out;
    out << "epoch " << epoch << " nodes " << seen.nodes << " created_ms " << seen.created_ms
        << " first_ms " << first << " all_ms " << last << " changes " << seen.changes
        << " reason " << seen.reason;
    say(out.str());
  }
}

void Swarm::report_shared() {
  std::map<std::string, size_t> writers;
  {
    std::lock_guard guard(writers_mutex_);
    writers = writer_of_;
  }
  std::set<std::string> names;
  for (const auto& member : members_) {
    std::lock_guard guard(member->mutex);
    for (const auto& [name, times] : member->shared_ms) names.insert(name);
  }
  for (const std::string& name : names) {
    size_t writer = writers.count(name) ? writers[name] : SIZE_MAX;
    // The changes every member but the writer was told of, and when the last was told.
    size_t least = SIZE_MAX;
    for (size_t i = 0; i < members_.size(); ++i) {
      if (i == writer) continue;
      std::lock_guard guard(members_[i]->mutex);
      auto it = members_[i]->shared_ms.find(name);
      least = std::min(least, it == members_[i]->shared_ms.end() ? 0 : it->second.size());
    }
    size_t& reported = shared_reported_[name];
    while (least != SIZE_MAX && reported < least) {
      ++reported;
      int64_t last = 0;
      for (size_t i = 0; i < members_.size(); ++i) {
        if (i == writer) continue;
        std::lock_guard guard(members_[i]->mutex);
        last = std::max(last, members_[i]->shared_ms[name][reported - 1]);
      }
      say("shared " + name + " " + std::to_string(reported) + " all_ms " + std::to_string(last));
    }
  }
}

void Swarm::report_loop() {
  while (reporting_) {
    report_epochs();
    report_shared();
    // Only printing waits on this (the times are taken in the callbacks); every 100 ms
    // keeps the bench's own CPU out of the members' idle figure.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void Swarm::stop_all() {
  std::vector<std::thread> threads;
  std::atomic<size_t> next{0};
  for (size_t t = 0; t < std::min<size_t>(16, members_.size()); ++t) {
    threads.emplace_back([&] {
      for (size_t i = next++; i < members_.size(); i = next++) {
        if (members_[i]->driver) members_[i]->driver->stop();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
}

}  // namespace
}  // namespace kelpie

int main(int argc, char** argv) {
  kelpie::Flags flags = kelpie::parse_flags(argc, argv);
  kelpie::init_logging("warn", flags.log_file);
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  kelpie::Swarm swarm(flags);
  int64_t start = kelpie::now_ms();
  if (kelpie::Status joined = swarm.join_all(); !joined) {
    std::fprintf(stderr, "zk_scale_members: %s\n", joined.to_string().c_str());
    return 1;
  }
  std::cout << "joined " << flags.members << " ms " << kelpie::now_ms() - start << " rss_kb "
            << kelpie::rss_kb() << std::endl;
  std::thread reporter([&] { swarm.report_loop(); });
  swarm.run_commands();
  swarm.stop_reporting();
  reporter.join();
  swarm.stop_all();
  return 0;
}
