#include "cluster/local_membership.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>

#include "cluster/local_state_files.h"
#include "cluster/membership_codec.h"
#include "common/admin_wire.h"
#include "common/log.h"
#include "engine/directory_backing.h"

namespace kelpie {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace local_state;

constexpr size_t kBlobHeaderBytes = 8;

}  // namespace

LocalMembership::LocalMembership(LocalMembershipOptions options)
    : options_(std::move(options)),
      lock_path_(options_.state_dir + "/lock"),
      log_path_(options_.state_dir + "/epochs.log"),
      members_dir_(options_.state_dir + "/members"),
      shared_dir_(options_.state_dir + "/shared"),
      marker_path_(options_.state_dir + "/shutdown") {
  KELPIE_ASSERT(options_.heartbeat_interval.count() > 0);
  KELPIE_ASSERT(options_.failure_timeout > 2 * options_.heartbeat_interval);
  std::lock_guard guard(mutex_);
  (void)refresh_log_locked();  // a missing or unreadable log reads as empty for now
}

LocalMembership::~LocalMembership() { stop(); }

std::string LocalMembership::describe() const { return "local:" + options_.state_dir; }

std::unique_ptr<DirectoryBacking> LocalMembership::directory_backing(const std::string& name) {
  return make_file_directory_backing(options_.state_dir, name, true);
}

// ---- the epoch log ----

Status LocalMembership::refresh_log_locked(int truncate_fd) const {
  Result<std::string> tail = read_file(log_path_, log_offset_);
  if (!tail) return tail.status().code() == ENOENT ? Status::ok() : tail.status();
  std::string problem;
  uint64_t last = epochs_.empty() ? 0 : epochs_.back().epoch;
  size_t good = parse_records(*tail, last, epochs_, problem);
  log_offset_ += good;
  if (good == tail->size()) return Status::ok();
  if (truncate_fd < 0) {
    // Another member may be writing it right now: only an appender may judge it.
    if (!problem.empty() && !log_error_logged_) {
      KELPIE_LOG_DEBUG("{}: {} at offset {}", log_path_, problem, log_offset_);
      log_error_logged_ = true;
    }
    return Status::ok();
  }
  KELPIE_LOG_WARN("{}: dropping a torn last record at offset {} ({} bytes{}{})", log_path_,
                  log_offset_, tail->size() - good, problem.empty() ? "" : ": ", problem);
  if (::ftruncate(truncate_fd, static_cast<off_t>(log_offset_)) != 0 ||
      ::fdatasync(truncate_fd) != 0) {
    return os_error("truncate", log_path_);
  }
  log_error_logged_ = false;
  return Status::ok();
}

Result<std::optional<EpochRecord>> LocalMembership::append_epoch(const EpochMaker& make,
                                                                 bool clear_marker) {
  Result<Fd> lock = lock_state(lock_path_);
  if (!lock) return lock.status();
  Fd log(::open(log_path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
  if (!log.valid()) return os_error("open", log_path_);
  std::lock_guard guard(mutex_);
  if (Status s = refresh_log_locked(log.get()); !s) return s;
  std::optional<EpochRecord> last;
  if (!epochs_.empty()) last = epochs_.back();
  std::optional<EpochRecord> next = make(last);
  if (!next) return std::optional<EpochRecord>();
  next->epoch = last ? last->epoch + 1 : 1;
  next->created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  std::sort(next->nodes.begin(), next->nodes.end(),
            [](const MemberInfo& a, const MemberInfo& b) { return a.id < b.id; });
  std::string bytes = encode_record(*next);
  if (Status s = write_all(log.get(), bytes, log_path_); !s) {
    // Leave no partial record behind us; if even this fails the next appender will.
    (void)::ftruncate(log.get(), static_cast<off_t>(log_offset_));
    return s;
  }
  if (::fdatasync(log.get()) != 0) return os_error("fdatasync", log_path_);
  if (Status s = fsync_dir(options_.state_dir); !s) return s;
  if (clear_marker && ::unlink(marker_path_.c_str()) == 0) {
    (void)fsync_dir(options_.state_dir);
  }
  epochs_.push_back(*next);
  log_offset_ += bytes.size();
  KELPIE_LOG_INFO("epoch {}: {} ({} nodes)", next->epoch, next->reason, next->nodes.size());
  return next;
}

// ---- joining and leaving ----

Status LocalMembership::join(const MemberInfo& self, Events events) {
  if (self.id == Uuid{}) return Status::error(EINVAL, "member id is zero");
  std::error_code error;
  std::filesystem::create_directories(members_dir_, error);
  if (!error) std::filesystem::create_directories(shared_dir_, error);
  if (error) return Status::error(error.value(), "mkdir in " + options_.state_dir);
  std::string id = uuid_to_string(self.id);
  std::string heartbeat_path = members_dir_ + "/" + id + ".hb";
  uint64_t epoch_at_start = 0;
  {
    std::lock_guard guard(mutex_);
    if (phase_ != Phase::kIdle) return Status::error(EALREADY, "already joined");
    self_ = self;
    if (self_.pid == 0) self_.pid = ::getpid();
    self_id_ = id;
    events_ = std::move(events);
    phase_ = Phase::kJoining;
    stopping_ = false;
    deliver_ = false;
    leaving_ = false;
    last_tick_.reset();
    heartbeat_since_.reset();
    observed_.clear();
    // The file says "joining" before the heartbeat moves, so nobody takes a
    // restarted member for a running one.
    Status written = write_member_file_locked();
    if (written) heartbeat_fd_ = ::open(heartbeat_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (!written || heartbeat_fd_ < 0) {
      phase_ = Phase::kIdle;
      return written ? os_error("open", heartbeat_path) : written;
    }
    char old[8] = {};
    heartbeat_counter_ = ::pread(heartbeat_fd_, old, sizeof(old), 0) == 8 ? get_le(old, 8) : 0;
    (void)refresh_log_locked();
    epoch_at_start = epochs_.empty() ? 0 : epochs_.back().epoch;
    scan_marker_locked();  // notes the marker present at join: not a shutdown for us
    (void)scan_shared_locked(false);
  }
  thread_ = std::thread([this] { run(); });
  wait_for_liveness(true);

  bool running = false, resynced = false;
  {
    std::lock_guard guard(mutex_);
    (void)refresh_log_locked();
    auto now = Clock::now();
    if (epochs_.empty()) {
      phase_ = Phase::kAwaitFormat;
    } else {
      for (const MemberInfo& node : epochs_.back().nodes) {
        auto member = members_.find(uuid_to_string(node.id));
        if (node.id != self_.id && member != members_.end() &&
            alive_locked(member->first, now) && member->second.state == "running") {
          running = true;
        }
      }
      if (marker_present_) running = false;
      // Others may have restarted the cluster with us (and our new addresses)
      // while we were learning who is alive: that epoch already resyncs us.
      const EpochRecord& last = epochs_.back();
      resynced = last.epoch > epoch_at_start && lists(last, self_.id) &&
                 (last.reason == "restart" || last.reason == "recover");
      if (resynced) running = true;
      if (!running) {
        phase_ = Phase::kWaiting;
        waiting_epoch_ = epochs_.back().epoch;
      }
    }
  }
  Status joined = running ? become_running(!resynced) : Status::ok();
  if (joined && phase_ == Phase::kWaiting) joined = try_restart();
  if (!joined) {
    stop();
    return joined;
  }
  std::lock_guard guard(mutex_);
  delivered_epoch_ = epochs_.empty() ? 0 : epochs_.back().epoch - 1;
  deliver_ = true;
  KELPIE_LOG_INFO("membership {}: joined as {}{} ({})", describe(), self_id_,
                  self_.gateway ? " (gateway)" : "",
                  phase_ == Phase::kWaiting ? "waiting for the last epoch's nodes"
                  : phase_ == Phase::kAwaitFormat ? "unformatted"
                                                   : "running");
  return Status::ok();
}

void LocalMembership::wait_for_liveness(bool last_epoch_only) {
  auto deadline = Clock::now() + options_.failure_timeout + options_.heartbeat_interval;
  for (;;) {
    {
      std::lock_guard guard(mutex_);
      auto now = Clock::now();
      if (!last_epoch_only) scan_members_locked(now);
      bool known = scans_ > 0;
      for (const auto& [id, observed] : observed_) {
        if (id == self_id_) continue;
        if (last_epoch_only &&
            (epochs_.empty() || !lists(epochs_.back(), *parse_uuid(id)))) {
          continue;
        }
        if (!alive_locked(id, now) && !dead_locked(id, now)) known = false;
      }
      if (known || now >= deadline) return;
    }
    std::this_thread::sleep_for(options_.heartbeat_interval / 4);
  }
}

Status LocalMembership::become_running(bool always_join) {
  {
    std::lock_guard guard(mutex_);
    phase_ = Phase::kRunning;
    need_join_epoch_ = !self_.gateway && (always_join || !listed_locked());
    if (Status s = write_member_file_locked(); !s) return s;
  }
  return append_join();
}

Status LocalMembership::append_join() {
  auto appended = append_epoch(
      [&](const std::optional<EpochRecord>& last) -> std::optional<EpochRecord> {
        if (!last || !need_join_epoch_ || phase_ != Phase::kRunning) return std::nullopt;
        need_join_epoch_ = false;
        std::vector<MemberInfo> nodes = without(last->nodes, self_.id);
        nodes.push_back(self_);
        return successor(*last, "join " + self_id_, std::move(nodes));
      },
      false);
  return appended.status();
}

Status LocalMembership::maybe_rejoin() {
  {
    std::lock_guard guard(mutex_);
    if (!rejoin_ready_locked(Clock::now())) return Status::ok();
  }
  // Outside the lock: the receiver reads member statuses (peers that still can not
  // reach this node hold it out, cluster/peer_reachability.h).
  if (events_.may_rejoin && !events_.may_rejoin()) return Status::ok();
  auto appended = append_epoch(
      [&](const std::optional<EpochRecord>& last) -> std::optional<EpochRecord> {
        // Re-checked on the log as it is under the lock: one rejoin per exclusion, and
        // none once a shutdown was requested (the marker is written under this lock).
        if (!last || !rejoin_ready_locked(Clock::now()) ||
            ::access(marker_path_.c_str(), F_OK) == 0) {
          return std::nullopt;
        }
        std::vector<MemberInfo> nodes = last->nodes;
        nodes.push_back(self_);
        return successor(*last, "rejoin " + self_id_, std::move(nodes));
      },
      false);
  return appended.status();
}

Status LocalMembership::try_restart() {
  auto appended = append_epoch(
      [&](const std::optional<EpochRecord>& last) -> std::optional<EpochRecord> {
        if (phase_ != Phase::kWaiting || !last || last->epoch != waiting_epoch_) {
          return std::nullopt;
        }
        auto now = Clock::now();
        std::vector<MemberInfo> nodes;
        for (const MemberInfo& node : last->nodes) {
          std::string id = uuid_to_string(node.id);
          if (!alive_locked(id, now)) return std::nullopt;
          auto member = members_.find(id);
          bool fresh = id == self_id_ || (member != members_.end() && !member->second.info.gateway);
          nodes.push_back(id == self_id_ ? self_ : fresh ? member->second.info : node);
        }
        return successor(*last, "restart", std::move(nodes));
      },
      true);
  if (!appended) return appended.status();
  if (!*appended) return Status::ok();
  return become_running(false);
}

void LocalMembership::leave() {
  std::optional<std::string> refused;
  bool storage = false;
  {
    std::lock_guard guard(mutex_);
    if (phase_ == Phase::kIdle) return;
    leaving_ = true;  // before our leave epoch: the driver thread must not rejoin after it
    storage = !self_.gateway && phase_ == Phase::kRunning;
  }
  if (storage) {
    auto appended = append_epoch(
        [&](const std::optional<EpochRecord>& last) -> std::optional<EpochRecord> {
          if (!last || !lists(*last, self_.id)) return std::nullopt;
          if (last->nodes.size() == 1) {
            refused = "the last node of the epoch stays in it";
            return std::nullopt;
          }
          return successor(*last, "leave " + self_id_, without(last->nodes, self_.id));
        },
        false);
    if (!appended) refused = appended.status().to_string();
  }
  if (refused) KELPIE_LOG_WARN("membership: leave of {} made no epoch: {}", self_id_, *refused);
  std::string id = self_id_;
  stop();
  ::unlink((members_dir_ + "/" + id + ".hb").c_str());
  ::unlink((members_dir_ + "/" + id + ".json").c_str());
  (void)fsync_dir(members_dir_);
}

void LocalMembership::stop() {
  stop_thread();
  std::lock_guard guard(mutex_);
  if (heartbeat_fd_ >= 0) ::close(heartbeat_fd_);
  heartbeat_fd_ = -1;
  phase_ = Phase::kIdle;
  deliver_ = false;
}

void LocalMembership::stop_thread() {
  if (!thread_.joinable()) return;
  KELPIE_ASSERT(thread_.get_id() != std::this_thread::get_id());
  {
    std::lock_guard guard(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

// ---- cluster operations ----

Result<EpochRecord> LocalMembership::format(uint32_t copies, uint32_t min_copies) {
  if (copies == 0 || min_copies == 0 || min_copies > copies) {
    return Status::error(EINVAL, "need 1 <= min_copies <= copies");
  }
  {
    std::lock_guard guard(mutex_);
    if (phase_ == Phase::kIdle || phase_ == Phase::kJoining) {
      return Status::error(EINVAL, "format needs a joined member");
    }
  }
  wait_for_liveness(false);
  bool exists = false;
  auto appended = append_epoch(
      [&](const std::optional<EpochRecord>& last) -> std::optional<EpochRecord> {
        if (last) {
          exists = true;
          return std::nullopt;
        }
        EpochRecord first;
        first.cluster = make_uuid();
        first.copies = copies;
        first.min_copies = min_copies;
        first.reason = "format";
        first.nodes = live_storage_locked();
        return first;
      },
      true);
  if (!appended) return appended.status();
  if (exists) return Status::error(EEXIST, "cluster already formatted");
  if (Status s = become_running(false); !s) return s;
  return **appended;
}

Result<EpochRecord> LocalMembership::force_recover() {
  bool waiting = true, no_nodes = false;
  auto appended = append_epoch(
      [&](const std::optional<EpochRecord>& last) -> std::optional<EpochRecord> {
        if (phase_ != Phase::kWaiting || !last || last->epoch != waiting_epoch_) {
          waiting = false;
          return std::nullopt;
        }
        std::vector<MemberInfo> nodes = live_storage_locked();
        if (nodes.empty()) {
          no_nodes = true;
          return std::nullopt;
        }
        return successor(*last, "recover", std::move(nodes));
      },
      true);
  if (!appended) return appended.status();
  if (!waiting) return Status::error(EINVAL, "this member is not waiting for nodes");
  if (no_nodes) return Status::error(ENODEV, "no storage member is alive");
  if (Status s = become_running(false); !s) return s;
  return **appended;
}

Status LocalMembership::evict(const Uuid& id) {
  std::optional<Status> refused;
  auto appended = append_epoch(
      [&](const std::optional<EpochRecord>& last) -> std::optional<EpochRecord> {
        if (!last) {
          refused = Status::error(EINVAL, "cluster is not formatted");
        } else if (!lists(*last, id)) {
          refused = Status::error(ENOENT, uuid_to_string(id) + " is not in epoch " +
                                              std::to_string(last->epoch));
        } else if (last->nodes.size() == 1) {
          refused = Status::error(EINVAL, "evicting the last node would leave the epoch empty");
        } else {
          return successor(*last, "evicted " + uuid_to_string(id), without(last->nodes, id));
        }
        return std::nullopt;
      },
      false);
  if (!appended) return appended.status();
  return refused ? *refused : Status::ok();
}

Status LocalMembership::request_shutdown() {
  Result<Fd> lock = lock_state(lock_path_);
  if (!lock) return lock.status();
  KELPIE_LOG_INFO("membership {}: cluster shutdown requested", describe());
  return write_file_atomically(options_.state_dir, "shutdown", uuid_to_string(make_uuid()));
}

// ---- shared blobs ----

Status LocalMembership::update_shared(const std::string& name,
                                      const std::function<Status(std::string& content)>& change) {
  if (!valid_blob_name(name)) return Status::error(EINVAL, "bad shared blob name '" + name + "'");
  Result<Fd> lock = lock_state(lock_path_);
  if (!lock) return lock.status();
  Result<std::string> blob = read_file(shared_dir_ + "/" + name);
  if (!blob && blob.status().code() != ENOENT) return blob.status();
  if (blob && blob->size() < kBlobHeaderBytes) {
    return Status::error(EBADMSG, "shared blob '" + name + "' is truncated");
  }
  uint64_t version = blob ? get_le(blob->data(), 8) : 0;
  std::string content = blob ? blob->substr(kBlobHeaderBytes) : std::string();
  if (Status s = change(content); !s) return s;
  std::string bytes;
  put_u64(bytes, version + 1);
  bytes += content;
  {
    // Set first, so our own driver thread never reports our own change.
    std::lock_guard guard(mutex_);
    shared_versions_[name] = version + 1;
  }
  Status written = write_file_atomically(shared_dir_, name, bytes);
  if (!written) {
    std::lock_guard guard(mutex_);
    shared_versions_[name] = version;
  }
  return written;
}

Result<std::string> LocalMembership::read_shared(const std::string& name) const {
  if (!valid_blob_name(name)) return Status::error(EINVAL, "bad shared blob name '" + name + "'");
  Result<std::string> blob = read_file(shared_dir_ + "/" + name);
  if (!blob) return blob.status();
  if (blob->size() < kBlobHeaderBytes) {
    return Status::error(EBADMSG, "shared blob '" + name + "' is truncated");
  }
  return blob->substr(kBlobHeaderBytes);
}

// ---- status ----

void LocalMembership::publish_status(const std::string& json_text) {
  std::lock_guard guard(mutex_);
  status_parts_.set_base(json_text);
  status_json_ = status_parts_.text();
  status_dirty_ = true;
}

void LocalMembership::publish_status_field(const std::string& key, const std::string& value_json) {
  std::lock_guard guard(mutex_);
  status_parts_.set_field(key, value_json);
  std::string text = status_parts_.text();
  if (text == status_json_) return;
  status_json_ = std::move(text);
  status_dirty_ = true;
}

std::map<std::string, std::string> LocalMembership::member_statuses() const {
  std::lock_guard guard(mutex_);
  std::map<std::string, std::string> statuses;
  auto now = Clock::now();
  for (const auto& [id, member] : members_) {
    if (id != self_id_ && alive_locked(id, now)) statuses[id] = member.status;
  }
  if (phase_ != Phase::kIdle) statuses[self_id_] = status_json_;
  return statuses;
}

ClusterStatus LocalMembership::status() const {
  std::lock_guard guard(mutex_);
  (void)refresh_log_locked();
  if (epochs_.empty()) return ClusterStatus::kUnformatted;
  if (shutdown_seen_) return ClusterStatus::kShutdown;
  if (phase_ == Phase::kWaiting) return ClusterStatus::kWaiting;
  if (phase_ == Phase::kIdle && ::access(marker_path_.c_str(), F_OK) == 0) {
    return ClusterStatus::kShutdown;
  }
  return ClusterStatus::kRunning;
}

std::optional<EpochRecord> LocalMembership::current_epoch() const {
  std::lock_guard guard(mutex_);
  (void)refresh_log_locked();
  if (epochs_.empty()) return std::nullopt;
  return epochs_.back();
}

std::vector<EpochRecord> LocalMembership::epoch_history() const {
  std::lock_guard guard(mutex_);
  (void)refresh_log_locked();
  return epochs_;
}

std::vector<MemberInfo> LocalMembership::live_members() const {
  std::lock_guard guard(mutex_);
  std::vector<MemberInfo> live;
  auto now = Clock::now();
  for (const auto& [id, member] : members_) {
    if (id != self_id_ && alive_locked(id, now)) live.push_back(member.info);
  }
  if (phase_ != Phase::kIdle) live.push_back(self_);
  std::sort(live.begin(), live.end(),
            [](const MemberInfo& a, const MemberInfo& b) { return a.id < b.id; });
  return live;
}

// ---- helpers with mutex_ held ----

bool LocalMembership::alive_locked(const std::string& id, Clock::time_point now) const {
  if (id == self_id_ && phase_ != Phase::kIdle) return true;
  auto it = observed_.find(id);
  return it != observed_.end() && it->second.seen_change &&
         now - it->second.last_change < options_.failure_timeout;
}

bool LocalMembership::dead_locked(const std::string& id, Clock::time_point now) const {
  if (id == self_id_ && phase_ != Phase::kIdle) return false;
  auto it = observed_.find(id);
  return it == observed_.end() || now - it->second.last_change >= options_.failure_timeout;
}

bool LocalMembership::heartbeat_moved_locked(const std::string& id, Clock::time_point now) {
  Result<std::string> counter = read_file(members_dir_ + "/" + id + ".hb", 0, 8);
  if (!counter || counter->size() != 8) return false;
  uint64_t value = get_le(counter->data(), 8);
  auto it = observed_.find(id);
  if (it == observed_.end() || it->second.counter == value) return false;
  it->second = Observed{value, now, true};
  return true;
}

bool LocalMembership::rejoin_ready_locked(Clock::time_point now) const {
  if (phase_ != Phase::kRunning || self_.gateway || leaving_ || stopping_ || !deliver_ ||
      need_join_epoch_ || marker_present_ || shutdown_seen_ || epochs_.empty() || listed_locked()) {
    return false;
  }
  // Told of every epoch up to the last, so it knows it is out (and peers fence it).
  if (delivered_epoch_ < epochs_.back().epoch) return false;
  // Its heartbeat has moved long enough for every observer's scan to have seen it,
  // so nobody fails it again on a counter read before it continued.
  if (!heartbeat_since_ || now - *heartbeat_since_ < options_.heartbeat_interval) return false;
  // It judges liveness afresh after a stall: a hung member that continues sees the
  // others alive only once their counters move again. A node still "joining" may be
  // waiting after a full stop: its restart epoch comes first.
  return std::all_of(epochs_.back().nodes.begin(), epochs_.back().nodes.end(),
                     [&](const MemberInfo& node) {
                       std::string id = uuid_to_string(node.id);
                       auto member = members_.find(id);
                       return alive_locked(id, now) && member != members_.end() &&
                              member->second.state == "running";
                     });
}

bool LocalMembership::listed_locked() const {
  return !epochs_.empty() && lists(epochs_.back(), self_.id);
}

std::vector<MemberInfo> LocalMembership::live_storage_locked() const {
  std::vector<MemberInfo> nodes;
  auto now = Clock::now();
  for (const auto& [id, member] : members_) {
    if (id != self_id_ && !member.info.gateway && alive_locked(id, now)) {
      nodes.push_back(member.info);
    }
  }
  if (!self_.gateway && phase_ != Phase::kIdle) nodes.push_back(self_);
  return nodes;
}

Status LocalMembership::write_member_file_locked() {
  json file = {{"info", member_info_to_json(self_)},
               {"state", phase_ == Phase::kRunning ? "running" : "joining"},
               {"status", status_json_}};
  status_dirty_ = false;
  return write_file_atomically(members_dir_, self_id_ + ".json", dump_json(file));
}

void LocalMembership::scan_members_locked(Clock::time_point now) {
  // Heartbeats before member files: a member rewrites its file before its
  // heartbeat moves, so a moving counter never goes with a stale "running".
  std::vector<std::string> beating = list_dir(members_dir_, ".hb");
  for (const std::string& id : beating) {
    Result<std::string> counter = read_file(members_dir_ + "/" + id + ".hb", 0, 8);
    if (!counter || counter->size() != 8) continue;
    uint64_t value = get_le(counter->data(), 8);
    auto [it, inserted] = observed_.try_emplace(id, Observed{value, now, false});
    if (!inserted && it->second.counter != value) it->second = Observed{value, now, true};
  }
  if (!epochs_.empty()) {
    for (const MemberInfo& node : epochs_.back().nodes) {
      observed_.try_emplace(uuid_to_string(node.id), Observed{0, now, false});
    }
  }
  std::map<std::string, MemberFile> members;
  for (const std::string& id : list_dir(members_dir_, ".json")) {
    if (!parse_uuid(id)) continue;
    Result<std::string> text = read_file(members_dir_ + "/" + id + ".json");
    if (!text) continue;
    json parsed = json::parse(*text, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("info")) continue;
    Result<MemberInfo> info = member_info_from_json(parsed["info"]);
    Result<std::string> state = json_string_field(parsed, "state");
    Result<std::string> status = json_string_field(parsed, "status");
    if (!info || !state || !status) continue;
    members[id] = MemberFile{*info, *state, *status};
  }
  members_ = std::move(members);
  ++scans_;
}

std::vector<std::string> LocalMembership::scan_shared_locked(bool notify) {
  std::vector<std::string> changed;
  for (const std::string& name : list_dir(shared_dir_, "")) {
    Result<std::string> header = read_file(shared_dir_ + "/" + name, 0, kBlobHeaderBytes);
    if (!header || header->size() != kBlobHeaderBytes) continue;
    uint64_t version = get_le(header->data(), 8);
    auto [it, inserted] = shared_versions_.try_emplace(name, version);
    if (inserted || it->second != version) {
      it->second = version;
      if (notify) changed.push_back(name);
    }
  }
  return changed;
}

void LocalMembership::scan_marker_locked() {
  Result<std::string> marker = read_file(marker_path_, 0, 64);
  marker_present_ = marker.is_ok();
  if (phase_ == Phase::kJoining) marker_at_join_ = marker_present_ ? *marker : "";
  if (!marker_present_) {
    marker_at_join_.clear();
    shutdown_seen_ = false;
    shutdown_delivered_ = false;
  } else if (*marker != marker_at_join_) {
    shutdown_seen_ = true;
  }
}

// ---- the driver thread ----

void LocalMembership::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    tick();
    lock.lock();
    wake_.wait_for(lock, options_.heartbeat_interval / 2, [this] { return stopping_; });
  }
}

void LocalMembership::tick() {
  const auto beat_time = Clock::now();
  char counter[8];
  ++heartbeat_counter_;
  for (int i = 0; i < 8; ++i) counter[i] = static_cast<char>(heartbeat_counter_ >> (8 * i));
  bool beat = ::pwrite(heartbeat_fd_, counter, sizeof(counter), 0) == sizeof(counter);
  if (!beat) KELPIE_LOG_ERROR("membership: heartbeat write failed: {}", std::strerror(errno));

  std::vector<EpochRecord> new_epochs;
  std::vector<std::string> changed_blobs;
  std::vector<Uuid> dead;
  bool fire_shutdown = false, to_running = false, restart = false, join_again = false;
  Events events;
  {
    std::lock_guard guard(mutex_);
    auto now = Clock::now();
    if (last_tick_ && now - *last_tick_ > options_.failure_timeout / 2) {
      // This thread did not run (SIGSTOP, overload): what it saw is too old to judge by.
      KELPIE_LOG_WARN("membership: driver stalled for {} ms; liveness observed afresh",
                      std::chrono::duration_cast<std::chrono::milliseconds>(now - *last_tick_)
                          .count());
      for (auto& [id, observed] : observed_) observed = Observed{observed.counter, now, false};
      heartbeat_since_.reset();
    }
    last_tick_ = now;
    if (!beat) {
      heartbeat_since_.reset();
    } else if (!heartbeat_since_) {
      heartbeat_since_ = now;
    }
    scan_members_locked(now);
    (void)refresh_log_locked();
    scan_marker_locked();
    changed_blobs = scan_shared_locked(true);
    if (status_dirty_ && phase_ != Phase::kJoining) (void)write_member_file_locked();
    if (shutdown_seen_ && !shutdown_delivered_ && deliver_) {
      shutdown_delivered_ = true;
      fire_shutdown = true;
    }
    if (deliver_) {
      for (const EpochRecord& record : epochs_) {
        if (record.epoch > delivered_epoch_) new_epochs.push_back(record);
      }
      if (!new_epochs.empty()) delivered_epoch_ = new_epochs.back().epoch;
      events = events_;
    }
    if (phase_ == Phase::kAwaitFormat && !epochs_.empty()) to_running = true;
    if (phase_ == Phase::kWaiting) {
      if (epochs_.back().epoch > waiting_epoch_) {
        to_running = true;
      } else {
        restart = std::all_of(epochs_.back().nodes.begin(), epochs_.back().nodes.end(),
                              [&](const MemberInfo& node) {
                                return alive_locked(uuid_to_string(node.id), now);
                              });
      }
    }
    join_again = phase_ == Phase::kRunning && need_join_epoch_;
    if (phase_ == Phase::kRunning && !marker_present_ && (listed_locked() || self_.gateway)) {
      for (const MemberInfo& node : epochs_.back().nodes) {
        if (dead_locked(uuid_to_string(node.id), now)) dead.push_back(node.id);
      }
    }
  }

  Status acted = Status::ok();
  if (to_running) acted = become_running(false);
  if (restart) acted = try_restart();
  if (join_again) acted = append_join();
  for (const Uuid& id : dead) {
    auto appended = append_epoch(
        [&](const std::optional<EpochRecord>& last) -> std::optional<EpochRecord> {
          auto now = Clock::now();
          if (!last || !lists(*last, id) || last->nodes.size() == 1 || marker_present_ ||
              heartbeat_moved_locked(uuid_to_string(id), now) ||
              !dead_locked(uuid_to_string(id), now)) {
            return std::nullopt;
          }
          return successor(*last, "failed " + uuid_to_string(id), without(last->nodes, id));
        },
        false);
    if (!appended) acted = appended.status();
  }
  if (!acted) KELPIE_LOG_ERROR("membership {}: {}", describe(), acted.to_string());

  if (fire_shutdown && events.on_shutdown) events.on_shutdown();
  for (const EpochRecord& record : new_epochs) {
    if (events.on_epoch) events.on_epoch(record);
  }
  for (const std::string& name : changed_blobs) {
    if (events.on_shared_changed) events.on_shared_changed(name);
  }
  // The lease, after the callbacks: every epoch read above is published before the
  // member may serve again.
  if (beat) {
    lease_.renew(beat_time + options_.failure_timeout / 2);
  }
  // After the callbacks: a member out of the epoch is told so before it rejoins.
  if (Status rejoined = maybe_rejoin(); !rejoined) {
    KELPIE_LOG_ERROR("membership {}: rejoin: {}", describe(), rejoined.to_string());
  }
}

}  // namespace kelpie
