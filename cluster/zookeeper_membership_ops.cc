// The zookeeper driver's calls (cluster/zookeeper_membership.h): joining and leaving,
// the cluster operations, the cached readers, shared blobs and the VDI directory's
// backing (a ZooKeeper lock and a blob).
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster/membership_codec.h"
#include "cluster/zookeeper_client.h"
#include "cluster/zookeeper_membership.h"
#include "common/admin_wire.h"
#include "common/log.h"
#include "engine/directory_backing.h"

namespace kelpie {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr auto kLockWait = std::chrono::seconds(60);

}  // namespace

// ---- joining and leaving ----

Status ZookeeperMembership::join(const MemberInfo& self, Events events) {
  if (self.id == Uuid{}) return Status::error(EINVAL, "member id is zero");
  {
    std::lock_guard guard(mutex_);
    if (phase_ != Phase::kIdle) return Status::error(EALREADY, "already joined");
  }
  if (client_->expired()) client_->close();
  if (Status connected = connect(); !connected) return connected;
  {
    std::lock_guard guard(mutex_);
    self_ = self;
    if (self_.pid == 0) self_.pid = ::getpid();
    self_id_ = uuid_to_string(self.id);
    events_ = std::move(events);
    phase_ = Phase::kJoining;
    leaving_ = false;
    deliver_ = false;
    ever_listed_ = false;
    rejoining_ = false;
    delivered_epoch_ = 0;
    election_node_.clear();
    leader_ = false;
    swept_ = false;
    leader_beat_version_ = -2;
    marker_at_join_ = marker_present_ ? marker_text_ : "";
    shutdown_seen_ = false;
    shutdown_delivered_ = false;
    stopping_ = false;
  }
  auto fail = [this](Status status) {
    stop();
    return status;
  };
  if (Status registered = register_self("joining"); !registered) return fail(registered);

  // Running or stopped? A cluster is running when its leader beats and says it serves
  // (a node of the last epoch is up with its listed incarnation). Crashed members'
  // znodes linger for a session timeout, so their presence proves nothing.
  std::shared_ptr<const EpochRecord> current;
  bool marker = false;
  {
    std::lock_guard guard(mutex_);
    current = current_;
    marker = marker_present_;
  }
  Phase phase = Phase::kAwaitFormat;
  if (current) {
    bool alone = current->nodes.size() == 1 && current->nodes[0].id == self.id;
    phase = !marker && !alone && wait_for_leader_beat() ? Phase::kRunning : Phase::kWaiting;
  }
  {
    std::lock_guard guard(mutex_);
    phase_ = phase;
    waiting_epoch_ = current ? current->epoch : 0;
  }
  if (Status written = write_member(); !written) return fail(written);
  if (Status elected = create_election_node(); !elected) return fail(elected);
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
  if (phase == Phase::kRunning && !self.gateway) {
    milliseconds timeout = client_->negotiated_timeout();
    if (!wait_listed(2 * timeout + milliseconds(2000))) {
      KELPIE_LOG_WARN("membership {}: no epoch lists this node yet; going on", options_.root);
    }
  }
  std::lock_guard guard(mutex_);
  delivered_epoch_ = current_ ? current_->epoch - 1 : 0;
  deliver_ = true;
  KELPIE_LOG_INFO("membership {}: joined as {}{} ({})", describe(), self_id_,
                  self_.gateway ? " (gateway)" : "",
                  phase_ == Phase::kWaiting       ? "waiting for the last epoch's nodes"
                  : phase_ == Phase::kAwaitFormat ? "unformatted"
                                                  : "running");
  {
    std::lock_guard signal_guard(signal_mutex_);
    kick_ = true;
  }
  signal_.notify_all();
  return Status::ok();
}

bool ZookeeperMembership::wait_for_leader_beat() {
  milliseconds timeout = client_->negotiated_timeout();
  auto deadline = Clock::now() + timeout + std::clamp(timeout / 6, milliseconds(100),
                                                      milliseconds(1000));
  (void)leader_beat_moved();  // the version to compare with
  while (Clock::now() < deadline && !stopping_) {
    std::this_thread::sleep_for(milliseconds(50));
    if (leader_beat_moved()) return true;
  }
  return false;
}

bool ZookeeperMembership::wait_listed(milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    {
      std::lock_guard guard(mutex_);
      if (listed_locked()) return true;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  return false;
}

void ZookeeperMembership::leave() {
  bool storage = false;
  {
    std::lock_guard guard(mutex_);
    if (phase_ == Phase::kIdle) return;
    leaving_ = true;  // state "leaving": the leader does not list it again
    storage = !self_.gateway && phase_ == Phase::kRunning;
  }
  std::optional<std::string> refused;
  if (storage) {
    if (Status written = write_member(); !written) refused = written.to_string();
    auto appended = append_epoch([&](const std::optional<Current>& last) -> std::optional<Current> {
      if (!last || !lists(last->record, self_.id)) return std::nullopt;
      if (last->record.nodes.size() == 1) {
        refused = "the last node of the epoch stays in it";
        return std::nullopt;
      }
      Current next = *last;
      next.record = successor(last->record, "leave " + self_id_, without(last->record.nodes, self_.id));
      return next;
    });
    if (!appended) refused = appended.status().to_string();
  }
  if (refused) KELPIE_LOG_WARN("membership: leave of {} made no epoch: {}", self_id_, *refused);
  stop();
}

void ZookeeperMembership::stop() {
  stop_thread();
  bool joined = false;
  {
    std::lock_guard guard(mutex_);
    joined = phase_ != Phase::kIdle;
    phase_ = Phase::kIdle;
    deliver_ = false;
    election_node_.clear();
    leader_ = false;
  }
  // Closing the session deletes the member's znodes now: the others see it go.
  if (joined) client_->close();
  lease_.end();
}

// ---- cluster operations ----

Result<EpochRecord> ZookeeperMembership::format(uint32_t copies, uint32_t min_copies) {
  if (copies == 0 || min_copies == 0 || min_copies > copies) {
    return Status::error(EINVAL, "need 1 <= min_copies <= copies");
  }
  {
    std::lock_guard guard(mutex_);
    if (phase_ == Phase::kIdle || phase_ == Phase::kJoining) {
      return Status::error(EINVAL, "format needs a joined member");
    }
  }
  Result<std::map<std::string, Member>> members = read_members_now();
  if (!members) return members.status();
  bool exists = false;
  auto appended = append_epoch([&](const std::optional<Current>& last) -> std::optional<Current> {
    if (last) {
      exists = true;
      return std::nullopt;
    }
    Current first;
    first.record.cluster = make_uuid();
    first.record.copies = copies;
    first.record.min_copies = min_copies;
    first.record.reason = "format";
    for (const auto& [id, member] : *members) {
      if (member.info.gateway || member.state == "leaving") continue;
      first.record.nodes.push_back(member.info);
      first.incarnations[member.info.id] = member.session;
    }
    return first;
  });
  if (!appended) return appended.status();
  if (exists) return Status::error(EEXIST, "cluster already formatted");
  (void)client_->remove(marker_path_);
  return (*appended)->record;
}

Result<EpochRecord> ZookeeperMembership::force_recover() {
  uint64_t waiting_epoch = 0;
  {
    std::lock_guard guard(mutex_);
    if (phase_ != Phase::kWaiting) return Status::error(EINVAL, "this member is not waiting for nodes");
    waiting_epoch = waiting_epoch_;
  }
  Result<std::map<std::string, Member>> members = read_members_now();
  if (!members) return members.status();
  bool waiting = true, no_nodes = false;
  auto appended = append_epoch([&](const std::optional<Current>& last) -> std::optional<Current> {
    if (!last || last->record.epoch != waiting_epoch) {
      waiting = false;
      return std::nullopt;
    }
    Current next = *last;
    next.record.nodes.clear();
    next.incarnations.clear();
    for (const auto& [id, member] : *members) {
      // Waiting members only: a crashed one's "running" znode lingers a session timeout.
      if (member.info.gateway || (member.state != "waiting" && id != self_id_)) continue;
      next.record.nodes.push_back(member.info);
      next.incarnations[member.info.id] = member.session;
    }
    if (next.record.nodes.empty()) {
      no_nodes = true;
      return std::nullopt;
    }
    next.record.reason = "recover";
    return next;
  });
  if (!appended) return appended.status();
  if (!waiting) return Status::error(EINVAL, "this member is not waiting for nodes");
  if (no_nodes) return Status::error(ENODEV, "no storage member is alive");
  (void)client_->remove(marker_path_);
  {
    std::lock_guard guard(mutex_);
    become_running_locked();
  }
  return (*appended)->record;
}

Status ZookeeperMembership::evict(const Uuid& id) {
  std::optional<Status> refused;
  auto appended = append_epoch([&](const std::optional<Current>& last) -> std::optional<Current> {
    if (!last) {
      refused = Status::error(EINVAL, "cluster is not formatted");
    } else if (!lists(last->record, id)) {
      refused = Status::error(ENOENT, uuid_to_string(id) + " is not in epoch " +
                                          std::to_string(last->record.epoch));
    } else if (last->record.nodes.size() == 1) {
      refused = Status::error(EINVAL, "evicting the last node would leave the epoch empty");
    } else {
      Current next = *last;
      next.record = successor(last->record, "evicted " + uuid_to_string(id),
                              without(last->record.nodes, id));
      return next;
    }
    return std::nullopt;
  });
  if (!appended) return appended.status();
  return refused ? *refused : Status::ok();
}

Status ZookeeperMembership::request_shutdown() {
  std::string text = uuid_to_string(make_uuid());
  KELPIE_LOG_INFO("membership {}: cluster shutdown requested", options_.root);
  Result<std::string> created = client_->create(marker_path_, text, ZOO_PERSISTENT);
  if (created) return Status::ok();
  if (created.status().code() != EEXIST) return created.status();
  return client_->set(marker_path_, text, -1).status();
}

// ---- readers ----

ClusterStatus ZookeeperMembership::status() const {
  std::lock_guard guard(mutex_);
  if (!current_) return ClusterStatus::kUnformatted;
  if (shutdown_seen_) return ClusterStatus::kShutdown;
  if (phase_ == Phase::kWaiting) return ClusterStatus::kWaiting;
  if (phase_ == Phase::kIdle && marker_present_) return ClusterStatus::kShutdown;
  return ClusterStatus::kRunning;
}

std::optional<EpochRecord> ZookeeperMembership::current_epoch() const {
  std::lock_guard guard(mutex_);
  if (!current_) return std::nullopt;
  return *current_;
}

std::vector<MemberInfo> ZookeeperMembership::live_members() const {
  std::lock_guard guard(mutex_);
  std::vector<MemberInfo> live;
  for (const auto& [id, member] : members_) {
    if (id != self_id_ && member.state != "leaving") live.push_back(member.info);
  }
  if (phase_ != Phase::kIdle) live.push_back(self_);
  sort_by_id(live);
  return live;
}

void ZookeeperMembership::publish_status(const std::string& json_text) {
  change_status([&] { status_parts_.set_base(json_text); });
}

void ZookeeperMembership::publish_status_field(const std::string& key, const std::string& value_json) {
  change_status([&] { status_parts_.set_field(key, value_json); });
}

void ZookeeperMembership::change_status(const std::function<void()>& change) {
  {
    std::lock_guard guard(mutex_);
    change();
    std::string text = status_parts_.text();
    if (status_json_ == text) return;
    status_json_ = std::move(text);
    member_dirty_ = true;
  }
  std::lock_guard guard(signal_mutex_);
  kick_ = true;
  signal_.notify_all();
}

std::map<std::string, std::string> ZookeeperMembership::member_statuses() const {
  std::lock_guard guard(mutex_);
  std::map<std::string, std::string> statuses;
  for (const auto& [id, member] : members_) {
    if (id != self_id_) statuses[id] = member.status;
  }
  if (phase_ != Phase::kIdle) statuses[self_id_] = status_json_;
  return statuses;
}

std::string ZookeeperMembership::describe() const {
  int64_t session = client_->session_id();
  char id[32];
  std::snprintf(id, sizeof(id), "0x%llx", static_cast<unsigned long long>(session));
  std::string text = "zookeeper:" + options_.hosts + options_.root + " (";
  if (session != 0) text += std::string("session ") + id + ", ";
  text += client_->state_name();
  milliseconds timeout = client_->negotiated_timeout();
  if (timeout.count() > 0) text += ", timeout " + std::to_string(timeout.count()) + " ms";
  return text + ")";
}

// ---- shared blobs ----

Status ZookeeperMembership::update_shared(const std::string& name,
                                          const std::function<Status(std::string& content)>& change) {
  if (!valid_blob_name(name)) return Status::error(EINVAL, "bad shared blob name '" + name + "'");
  std::string path = shared_dir_ + "/" + name;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    Result<ZookeeperClient::Data> blob = client_->get(path, false);
    if (!blob && blob.status().code() != ENOENT) return blob.status();
    std::string content = blob ? blob->bytes : std::string();
    if (Status changed = change(content); !changed) return changed;
    int32_t expected = blob ? blob->stat.version + 1 : 0;
    std::optional<int64_t> before;
    {
      // Set first, so our own driver thread never reports our own change.
      std::lock_guard guard(mutex_);
      if (auto it = shared_versions_.find(name); it != shared_versions_.end()) before = it->second;
      shared_versions_[name] = expected;
    }
    Status stored = blob ? client_->set(path, content, blob->stat.version).status()
                         : client_->create(path, content, ZOO_PERSISTENT).status();
    if (stored) return Status::ok();
    {
      std::lock_guard guard(mutex_);
      if (before) {
        shared_versions_[name] = *before;
      } else {
        shared_versions_.erase(name);
      }
    }
    if (stored.code() != ESTALE && stored.code() != EEXIST && stored.code() != ENOENT) {
      return stored;
    }
  }
  return Status::error(EAGAIN, "shared blob '" + name + "' kept changing");
}

Result<std::string> ZookeeperMembership::read_shared(const std::string& name) const {
  if (!valid_blob_name(name)) return Status::error(EINVAL, "bad shared blob name '" + name + "'");
  Result<ZookeeperClient::Data> blob = client_->get(shared_dir_ + "/" + name, false);
  if (!blob) return blob.status();
  return blob->bytes;
}

// ---- the VDI directory: a blob and a lock ----

class ZookeeperDirectoryBacking final : public DirectoryBacking {
 public:
  ZookeeperDirectoryBacking(ZookeeperMembership& driver, std::string name)
      : driver_(driver),
        name_(std::move(name)),
        lock_dir_(driver.locks_dir_ + "/" + name_),
        path_(driver.shared_dir_ + "/" + name_) {}
  ~ZookeeperDirectoryBacking() override { unlock(); }

  Status lock() override {
    const ZookeeperClient& client = *driver_.client_;
    if (Status made = client.create_path(lock_dir_); !made) return made;
    Result<std::string> created = client.create(lock_dir_ + "/l-", "", ZOO_EPHEMERAL_SEQUENTIAL);
    if (!created) return created.status();
    mine_ = created->substr(lock_dir_.size() + 1);
    auto deadline = Clock::now() + kLockWait;
    for (;;) {
      Result<std::vector<std::string>> names = client.children(lock_dir_, false);
      if (!names) return give_up(names.status());
      sort_by_sequence(*names);
      auto it = std::find(names->begin(), names->end(), mine_);
      if (it == names->end()) return give_up(Status::error(ENOTCONN, "lost the directory lock"));
      if (it == names->begin()) return Status::ok();
      uint64_t seen = 0;
      {
        std::lock_guard guard(driver_.signal_mutex_);
        seen = driver_.lock_events_;
      }
      Result<std::optional<Stat>> before = client.exists(lock_dir_ + "/" + *(it - 1), true);
      if (!before) return give_up(before.status());
      if (!*before) continue;
      if (Clock::now() >= deadline) {
        return give_up(Status::error(ETIMEDOUT, "VDI directory lock " + lock_dir_ + ": held by " +
                                                    "another node for 60 s"));
      }
      std::unique_lock guard(driver_.signal_mutex_);
      driver_.lock_signal_.wait_for(guard, std::chrono::seconds(1),
                                    [&] { return driver_.lock_events_ != seen; });
    }
  }

  void unlock() override {
    if (mine_.empty()) return;
    (void)driver_.client_->remove(lock_dir_ + "/" + mine_);
    mine_.clear();
  }

  Result<std::string> read() override {
    Result<ZookeeperClient::Data> blob = driver_.client_->get(path_, false);
    if (!blob) {
      if (blob.status().code() != ENOENT) return blob.status();
      version_ = -1;
      return std::string();
    }
    version_ = blob->stat.version;
    return blob->bytes;
  }

  Status write(const std::string& document) override {
    {
      std::lock_guard guard(driver_.mutex_);
      driver_.shared_versions_[name_] = version_ + 1;
    }
    Status stored = version_ < 0
                        ? driver_.client_->create(path_, document, ZOO_PERSISTENT).status()
                        : driver_.client_->set(path_, document, version_).status();
    if (!stored) {
      if (stored.code() == ESTALE || stored.code() == EEXIST) {
        return Status::error(EAGAIN, "the VDI directory changed under its lock (session lost?)");
      }
      return stored;
    }
    ++version_;
    return Status::ok();
  }

 private:
  Status give_up(Status why) {
    unlock();
    return why;
  }

  ZookeeperMembership& driver_;
  const std::string name_, lock_dir_, path_;
  std::string mine_;
  int32_t version_ = -1;
};

std::unique_ptr<DirectoryBacking> ZookeeperMembership::directory_backing(const std::string& name) {
  return std::make_unique<ZookeeperDirectoryBacking>(*this, name);
}

}  // namespace kelpie
