#include "cluster/local_membership.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>

#include "common/admin_wire.h"
#include "common/crc32c.h"
#include "common/log.h"

namespace kelpie {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kMaxRecordBytes = 16u << 20;
constexpr size_t kRecordHeaderBytes = 8;
constexpr size_t kBlobHeaderBytes = 8;
constexpr size_t kMaxBlobNameBytes = 200;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

Status os_error(const std::string& what, const std::string& path) {
  return Status::error(errno, what + " " + path);
}

void put_u32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}
void put_u64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}
uint64_t get_le(const char* data, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<uint8_t>(data[i]);
  return value;
}

Status write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("write", path);
    }
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status fsync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return os_error("open", dir);
  if (::fsync(fd.get()) != 0) return os_error("fsync", dir);
  return Status::ok();
}

// The bytes of `path` from `offset` (at most `limit`). ENOENT when it is missing.
Result<std::string> read_file(const std::string& path, uint64_t offset = 0,
                              size_t limit = SIZE_MAX) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return os_error("open", path);
  std::string out;
  char buffer[65536];
  while (out.size() < limit) {
    ssize_t n = ::pread(fd.get(), buffer, std::min(sizeof(buffer), limit - out.size()),
                        static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("read", path);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return out;
}

// Replaces dir/name: temp file, fsync, rename, fsync of the directory.
Status write_file_atomically(const std::string& dir, const std::string& name,
                             const std::string& data) {
  static std::atomic<uint64_t> sequence{0};
  std::string final_path = dir + "/" + name;
  std::string temp_path = dir + "/." + name + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(sequence.fetch_add(1));
  {
    Fd fd(::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) return os_error("create", temp_path);
    Status written = write_all(fd.get(), data, temp_path);
    if (written && ::fsync(fd.get()) != 0) written = os_error("fsync", temp_path);
    if (!written) {
      ::unlink(temp_path.c_str());
      return written;
    }
  }
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    Status renamed = os_error("rename", final_path);
    ::unlink(temp_path.c_str());
    return renamed;
  }
  return fsync_dir(dir);
}

// The state lock: released when the Fd closes.
Result<Fd> lock_state(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) return os_error("open", path);
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return os_error("flock", path);
  }
  return fd;
}

std::optional<Uuid> parse_uuid(const std::string& text) {
  if (text.size() != 36) return std::nullopt;
  Uuid uuid{};
  size_t byte = 0;
  for (size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int high = nibble(text[i]), low = nibble(text[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    uuid[byte++] = static_cast<uint8_t>(high * 16 + low);
    i += 2;
  }
  return uuid;
}

json member_info_to_json(const MemberInfo& member) {
  return {{"id", uuid_to_string(member.id)},
          {"peer_address", member.peer_address},
          {"admin_address", member.admin_address},
          {"nbd_address", member.nbd_address},
          {"zone", member.zone},
          {"vnodes", member.vnodes},
          {"gateway", member.gateway},
          {"capacity_bytes", member.capacity_bytes},
          {"pid", member.pid}};
}

Result<Uuid> uuid_field(const json& object, const char* key) {
  Result<std::string> text = json_string_field(object, key);
  if (!text) return text.status();
  std::optional<Uuid> uuid = parse_uuid(*text);
  if (!uuid) return Status::error(EBADMSG, std::string("field '") + key + "' is not a uuid");
  return *uuid;
}

Result<MemberInfo> member_info_from_json(const json& object) {
  MemberInfo member;
  Result<Uuid> id = uuid_field(object, "id");
  Result<std::string> peer = json_string_field(object, "peer_address");
  Result<std::string> admin = json_string_field(object, "admin_address");
  Result<std::string> nbd = json_string_field(object, "nbd_address");
  Result<std::string> zone = json_string_field(object, "zone");
  Result<uint64_t> vnodes = json_u64_field(object, "vnodes");
  Result<bool> gateway = json_bool_field(object, "gateway");
  Result<uint64_t> capacity = json_u64_field(object, "capacity_bytes");
  Result<int64_t> pid = json_i64_field(object, "pid");
  for (const Status& s : {id.status(), peer.status(), admin.status(), nbd.status(),
                          zone.status(), vnodes.status(), gateway.status(), capacity.status(),
                          pid.status()}) {
    if (!s) return s;
  }
  member.id = *id;
  member.peer_address = *peer;
  member.admin_address = *admin;
  member.nbd_address = *nbd;
  member.zone = *zone;
  member.vnodes = static_cast<uint32_t>(*vnodes);
  member.gateway = *gateway;
  member.capacity_bytes = *capacity;
  member.pid = static_cast<int>(*pid);
  return member;
}

json record_to_json(const EpochRecord& record) {
  json nodes = json::array();
  for (const MemberInfo& node : record.nodes) nodes.push_back(member_info_to_json(node));
  return {{"epoch", record.epoch},
          {"cluster", uuid_to_string(record.cluster)},
          {"copies", record.copies},
          {"min_copies", record.min_copies},
          {"created_unix_ms", record.created_unix_ms},
          {"reason", record.reason},
          {"nodes", nodes}};
}

Result<EpochRecord> record_from_json(const json& object) {
  EpochRecord record;
  Result<uint64_t> epoch = json_u64_field(object, "epoch");
  Result<Uuid> cluster = uuid_field(object, "cluster");
  Result<uint64_t> copies = json_u64_field(object, "copies");
  Result<uint64_t> min_copies = json_u64_field(object, "min_copies");
  Result<int64_t> created = json_i64_field(object, "created_unix_ms");
  Result<std::string> reason = json_string_field(object, "reason");
  for (const Status& s : {epoch.status(), cluster.status(), copies.status(),
                          min_copies.status(), created.status(), reason.status()}) {
    if (!s) return s;
  }
  auto nodes = object.find("nodes");
  if (nodes == object.end() || !nodes->is_array()) {
    return Status::error(EBADMSG, "field 'nodes' must be an array");
  }
  for (const json& node : *nodes) {
    Result<MemberInfo> member = member_info_from_json(node);
    if (!member) return member.status();
    record.nodes.push_back(*member);
  }
  record.epoch = *epoch;
  record.cluster = *cluster;
  record.copies = static_cast<uint32_t>(*copies);
  record.min_copies = static_cast<uint32_t>(*min_copies);
  record.created_unix_ms = *created;
  record.reason = *reason;
  return record;
}

std::string encode_record(const EpochRecord& record) {
  std::string body = dump_json(record_to_json(record));
  std::string out;
  put_u32(out, static_cast<uint32_t>(body.size()));
  put_u32(out, crc32c(body.data(), body.size()));
  return out + body;
}

// Parses whole records from `bytes`; stops at the first incomplete or bad one.
// Returns how many bytes the good records take.
size_t parse_records(const std::string& bytes, uint64_t last_epoch,
                     std::vector<EpochRecord>& out, std::string& problem) {
  size_t at = 0;
  while (bytes.size() - at >= kRecordHeaderBytes) {
    uint32_t length = static_cast<uint32_t>(get_le(bytes.data() + at, 4));
    uint32_t crc = static_cast<uint32_t>(get_le(bytes.data() + at + 4, 4));
    if (length > kMaxRecordBytes) {
      problem = "record length " + std::to_string(length) + " out of range";
      break;
    }
    if (bytes.size() - at - kRecordHeaderBytes < length) break;  // incomplete
    const char* body = bytes.data() + at + kRecordHeaderBytes;
    if (crc32c(body, length) != crc) {
      problem = "record crc mismatch";
      break;
    }
    json parsed = json::parse(body, body + length, nullptr, false);
    Result<EpochRecord> record =
        parsed.is_discarded() ? Result<EpochRecord>(Status::error(EBADMSG, "not JSON"))
                              : record_from_json(parsed);
    if (!record) {
      problem = "bad record: " + record.status().message();
      break;
    }
    if (record->epoch != last_epoch + 1) {
      problem = "epoch " + std::to_string(record->epoch) + " follows " +
                std::to_string(last_epoch);
      break;
    }
    last_epoch = record->epoch;
    out.push_back(std::move(*record));
    at += kRecordHeaderBytes + length;
  }
  return at;
}

bool lists(const EpochRecord& record, const Uuid& id) {
  return std::any_of(record.nodes.begin(), record.nodes.end(),
                     [&](const MemberInfo& node) { return node.id == id; });
}

// The record after `last` with `nodes` (sorted here).
EpochRecord successor(const EpochRecord& last, std::string reason,
                      std::vector<MemberInfo> nodes) {
  EpochRecord next = last;
  next.reason = std::move(reason);
  next.nodes = std::move(nodes);
  return next;
}

std::vector<MemberInfo> without(const std::vector<MemberInfo>& nodes, const Uuid& id) {
  std::vector<MemberInfo> kept;
  for (const MemberInfo& node : nodes) {
    if (node.id != id) kept.push_back(node);
  }
  return kept;
}

bool valid_blob_name(const std::string& name) {
  return !name.empty() && name.size() <= kMaxBlobNameBytes && name[0] != '.' &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos;
}

// Names in `dir` ending with `suffix` (without it), skipping temp files.
std::vector<std::string> list_dir(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> names;
  DIR* handle = ::opendir(dir.c_str());
  if (handle == nullptr) return names;
  while (dirent* entry = ::readdir(handle)) {
    std::string name = entry->d_name;
    if (name.empty() || name[0] == '.' || name.size() <= suffix.size()) continue;
    if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    names.push_back(name.substr(0, name.size() - suffix.size()));
  }
  ::closedir(handle);
  return names;
}

}  // namespace

const char* cluster_status_name(ClusterStatus status) {
  switch (status) {
    case ClusterStatus::kUnformatted: return "unformatted";
    case ClusterStatus::kWaiting: return "waiting";
    case ClusterStatus::kRunning: return "running";
    case ClusterStatus::kShutdown: return "shutdown";
  }
  return "unknown";
}

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
  status_json_ = json_text;
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
    lease_until_ns_.store((beat_time + options_.failure_timeout / 2).time_since_epoch().count(),
                          std::memory_order_release);
  }
  // After the callbacks: a member out of the epoch is told so before it rejoins.
  if (Status rejoined = maybe_rejoin(); !rejoined) {
    KELPIE_LOG_ERROR("membership {}: rejoin: {}", describe(), rejoined.to_string());
  }
}

std::chrono::steady_clock::time_point LocalMembership::lease_until() const {
  return Clock::time_point(Clock::duration(lease_until_ns_.load(std::memory_order_acquire)));
}

// ---- opening a driver from its spec ----

Result<std::unique_ptr<MembershipDriver>> open_membership(const std::string& spec) {
  static constexpr std::string_view kLocal = "local:";
  if (spec.rfind("zookeeper:", 0) == 0) {
    return Status::error(EINVAL, "membership '" + spec +
                                     "': the ZooKeeper driver is not built yet; use local:/path");
  }
  if (spec.rfind(kLocal, 0) != 0) {
    return Status::error(EINVAL, "membership '" + spec + "': expected local:/path");
  }
  std::string path = spec.substr(kLocal.size());
  if (path.empty()) return Status::error(EINVAL, "membership 'local:' needs a directory path");
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) return Status::error(error.value(), "membership: mkdir " + path);
  LocalMembershipOptions options;
  options.state_dir = path;
  return std::unique_ptr<MembershipDriver>(std::make_unique<LocalMembership>(std::move(options)));
}

}  // namespace kelpie
