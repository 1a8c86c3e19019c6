// The zookeeper driver (cluster/zookeeper_membership.h): the spec, construction and
// the watcher, connecting, and the member, marker, blob and election znodes. The
// epoch log is in zookeeper_epochs.cc.
#include "cluster/zookeeper_membership.h"

#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cluster/membership_codec.h"
#include "cluster/zookeeper_client.h"
#include "cluster/zookeeper_membership_internal.h"
#include "common/admin_wire.h"
#include "common/log.h"

namespace kelpie {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using zookeeper_internal::parse_json;

}  // namespace

namespace zookeeper_internal {

Result<json> parse_json(const std::string& text, const std::string& what) {
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return Status::error(EBADMSG, what + " is not a JSON object");
  }
  return parsed;
}

}  // namespace zookeeper_internal

// ---- the spec ----

Result<ZookeeperMembershipOptions> parse_zookeeper_spec(const std::string& spec) {
  static constexpr std::string_view kScheme = "zookeeper:";
  auto bad = [&](const std::string& why) {
    return Status::error(EINVAL, "membership '" + spec + "': " + why +
                                     " (expected zookeeper:HOST:PORT[,HOST:PORT...]/path"
                                     "[?session_timeout_ms=N])");
  };
  if (spec.rfind(kScheme, 0) != 0) return bad("not a zookeeper: spec");
  std::string rest = spec.substr(kScheme.size());
  std::string query;
  if (size_t mark = rest.find('?'); mark != std::string::npos) {
    query = rest.substr(mark + 1);
    rest = rest.substr(0, mark);
  }
  size_t slash = rest.find('/');
  if (slash == std::string::npos) return bad("no cluster path after the hosts");
  ZookeeperMembershipOptions options;
  options.hosts = rest.substr(0, slash);
  options.root = rest.substr(slash);
  if (options.hosts.empty()) return bad("no ZooKeeper host");
  size_t start = 0;
  while (start <= options.hosts.size()) {
    size_t comma = options.hosts.find(',', start);
    std::string host = options.hosts.substr(start, comma == std::string::npos ? std::string::npos
                                                                              : comma - start);
    size_t colon = host.rfind(':');
    if (colon == std::string::npos || colon == 0) return bad("host '" + host + "' is not HOST:PORT");
    std::string port = host.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoul(port) == 0 || std::stoul(port) > 65535) {
      return bad("host '" + host + "' has no valid port");
    }
    for (char c : host.substr(0, colon)) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
        return bad("host '" + host + "' has a bad character");
      }
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  int components = 0;
  for (size_t at = 0; at < options.root.size();) {
    size_t next = options.root.find('/', at + 1);
    std::string part = options.root.substr(at + 1, next == std::string::npos ? std::string::npos
                                                                             : next - at - 1);
    if (part.empty() || part == "." || part == ".." ||
        !std::all_of(part.begin(), part.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
        })) {
      return bad("bad cluster path '" + options.root + "'");
    }
    if (++components > 16) return bad("cluster path '" + options.root + "' is too deep");
    if (next == std::string::npos) break;
    at = next;
  }
  if (options.root == "/zookeeper" || options.root.rfind("/zookeeper/", 0) == 0) {
    return bad("/zookeeper is ZooKeeper's own tree");
  }
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string item = query.substr(0, amp);
    query = amp == std::string::npos ? "" : query.substr(amp + 1);
    size_t eq = item.find('=');
    std::string key = item.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (value.empty() || value.size() > 9 ||
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return bad("option '" + item + "' needs a number");
    }
    long number = std::stol(value);
    if (key == "session_timeout_ms") {
      if (number < 1000 || number > 600000) return bad("session_timeout_ms must be 1000..600000");
      options.session_timeout = milliseconds(number);
    } else if (key == "connect_timeout_ms") {
      if (number < 100 || number > 600000) return bad("connect_timeout_ms must be 100..600000");
      options.connect_timeout = milliseconds(number);
    } else {
      return bad("unknown option '" + key + "'");
    }
  }
  return options;
}

// ---- construction and the watcher ----

ZookeeperMembership::ZookeeperMembership(ZookeeperMembershipOptions options)
    : options_(std::move(options)),
      members_dir_(options_.root + "/members"),
      epochs_dir_(options_.root + "/epochs"),
      election_dir_(options_.root + "/election"),
      shared_dir_(options_.root + "/shared"),
      locks_dir_(options_.root + "/locks"),
      current_path_(options_.root + "/current"),
      leader_path_(options_.root + "/leader"),
      marker_path_(options_.root + "/shutdown"),
      client_(std::make_unique<ZookeeperClient>(options_.hosts, options_.session_timeout,
                                                &ZookeeperMembership::on_watch, this)) {
  KELPIE_ASSERT(options_.epochs_kept >= 2);
  KELPIE_ASSERT(!options_.root.empty() && options_.root[0] == '/');
}

ZookeeperMembership::~ZookeeperMembership() {
  stop();
  client_->close();
}

void ZookeeperMembership::on_watch(zhandle_t*, int type, int state, const char* path,
                                   void* context) {
  static_cast<ZookeeperMembership*>(context)->note_watch(type, state, path ? path : "");
}

// On the client's completion thread: only note what changed and wake the driver thread.
void ZookeeperMembership::note_watch(int type, int state, const std::string& path) {
  std::lock_guard guard(signal_mutex_);
  auto child_of = [&](const std::string& dir, std::string* name) {
    if (path.size() <= dir.size() + 1 || path.compare(0, dir.size() + 1, dir + "/") != 0) {
      return false;
    }
    *name = path.substr(dir.size() + 1);
    return true;
  };
  std::string name;
  if (type == ZOO_SESSION_EVENT) {
    if (state == ZOO_EXPIRED_SESSION_STATE) session_expired_ = true;
  } else if (path == members_dir_) {
    members_relist_ = true;
  } else if (child_of(members_dir_, &name)) {
    dirty_members_.insert(name);
  } else if (path == current_path_) {
    epochs_changed_ = true;
  } else if (path == marker_path_) {
    marker_changed_ = true;
  } else if (path == shared_dir_) {
    shared_relist_ = true;
  } else if (child_of(shared_dir_, &name)) {
    dirty_shared_.insert(name);
  } else if (path.rfind(election_dir_, 0) == 0) {
    election_changed_ = true;
  } else if (path.rfind(locks_dir_, 0) == 0) {
    ++lock_events_;
    lock_signal_.notify_all();
  }
  kick_ = true;
  signal_.notify_all();
}

// ---- connecting ----

Status ZookeeperMembership::open_session() {
  milliseconds wait = options_.connect_timeout.count() > 0
                          ? options_.connect_timeout
                          : std::min(options_.session_timeout, milliseconds(10000));
  if (Status opened = client_->open(wait); !opened) return opened;
  {
    std::lock_guard guard(signal_mutex_);
    session_expired_ = false;
    members_relist_ = shared_relist_ = marker_changed_ = election_changed_ = epochs_changed_ = true;
  }
  KELPIE_LOG_INFO("membership {}", describe());
  return Status::ok();
}

Status ZookeeperMembership::ensure_tree() {
  for (const std::string& path :
       {members_dir_, epochs_dir_, election_dir_, shared_dir_, locks_dir_}) {
    if (Status made = client_->create_path(path); !made) return made;
  }
  Result<std::string> leader = client_->create(leader_path_, "{}", ZOO_PERSISTENT);
  if (!leader && leader.status().code() != EEXIST) return leader.status();
  return Status::ok();
}

Status ZookeeperMembership::connect() {
  if (!client_->connected()) {
    if (Status opened = open_session(); !opened) return opened;
  }
  if (Status made = ensure_tree(); !made) return made;
  if (Status loaded = reload_current(); !loaded) return loaded;
  refresh_marker();
  if (options_.track_members) return refresh_members(true, {});
  return Status::ok();
}

// ---- members, marker, blobs, election ----

Result<ZookeeperMembership::Member> ZookeeperMembership::read_member(const std::string& id,
                                                                    bool watch) const {
  Result<ZookeeperClient::Data> data = client_->get(members_dir_ + "/" + id, watch);
  if (!data) return data.status();
  Result<json> parsed = parse_json(data->bytes, "member " + id);
  if (!parsed || !parsed->contains("info")) {
    return Status::error(EBADMSG, "member " + id + " is not a member record");
  }
  Result<MemberInfo> info = member_info_from_json((*parsed)["info"]);
  if (!info) return info.status();
  Member member;
  member.info = *info;
  member.state = parsed->value("state", "");
  member.request = parsed->value("request", "join");
  member.seen_epoch = parsed->value("seen_epoch", uint64_t{0});
  member.status = parsed->value("status", "{}");
  member.session = data->stat.ephemeralOwner;
  return member;
}

Status ZookeeperMembership::refresh_members(bool relist, const std::set<std::string>& dirty) {
  std::map<std::string, Member> members;
  std::string self_id;
  {
    std::lock_guard guard(mutex_);
    members = members_;
    self_id = self_id_;
    if (!members_known_) relist = true;
  }
  std::set<std::string> fetch = dirty;
  if (relist) {
    Result<std::vector<std::string>> names = client_->children(members_dir_, true);
    if (!names) return names.status();
    std::set<std::string> present(names->begin(), names->end());
    for (auto it = members.begin(); it != members.end();) {
      it = present.count(it->first) ? std::next(it) : members.erase(it);
    }
    for (const std::string& name : present) {
      if (!members.count(name)) fetch.insert(name);
    }
  }
  for (const std::string& id : fetch) {
    if (id == self_id || !parse_uuid(id)) continue;
    Result<Member> member = read_member(id, true);
    if (member) {
      members[id] = *member;
    } else if (member.status().code() == ENOENT) {
      members.erase(id);
    } else if (member.status().code() == ENOTCONN) {
      return member.status();
    }
  }
  std::lock_guard guard(mutex_);
  members_ = std::move(members);
  members_known_ = true;
  return Status::ok();
}

Result<std::map<std::string, ZookeeperMembership::Member>> ZookeeperMembership::read_members_now()
    const {
  Result<std::vector<std::string>> names = client_->children(members_dir_, false);
  if (!names) return names.status();
  std::map<std::string, Member> members;
  for (const std::string& id : *names) {
    if (!parse_uuid(id)) continue;
    Result<Member> member = read_member(id, false);
    if (member) {
      members[id] = *member;
    } else if (member.status().code() != ENOENT && member.status().code() != EBADMSG) {
      return member.status();
    }
  }
  return members;
}

void ZookeeperMembership::refresh_marker() {
  Result<std::optional<Stat>> stat = client_->exists(marker_path_, true);
  if (!stat) {
    std::lock_guard guard(signal_mutex_);
    marker_changed_ = true;
    return;
  }
  std::string text;
  bool present = stat->has_value();
  if (present) {
    Result<ZookeeperClient::Data> data = client_->get(marker_path_, true);
    present = data.is_ok();
    if (present) text = data->bytes;
  }
  std::lock_guard guard(mutex_);
  marker_present_ = present;
  marker_text_ = text;
  if (phase_ == Phase::kJoining || phase_ == Phase::kIdle) marker_at_join_ = text;
  if (!present) {
    marker_at_join_.clear();
    shutdown_seen_ = false;
    shutdown_delivered_ = false;
  } else if (text != marker_at_join_) {
    shutdown_seen_ = true;
  }
}

std::vector<std::string> ZookeeperMembership::refresh_shared(bool relist,
                                                             const std::set<std::string>& dirty) {
  std::set<std::string> check = dirty;
  bool first = false;
  if (relist) {
    Result<std::vector<std::string>> names = client_->children(shared_dir_, true);
    if (!names) {
      std::lock_guard guard(signal_mutex_);
      shared_relist_ = true;
      return {};
    }
    // Every blob again: each needs its data watch (one-shot) set by this session.
    check.insert(names->begin(), names->end());
    std::lock_guard guard(mutex_);
    first = !shared_known_;
    shared_known_ = true;
  }
  std::vector<std::string> changed;
  for (const std::string& name : check) {
    Result<std::optional<Stat>> stat = client_->exists(shared_dir_ + "/" + name, true);
    if (!stat || !*stat) continue;
    std::lock_guard guard(mutex_);
    auto [it, inserted] = shared_versions_.try_emplace(name, (*stat)->version);
    // A blob seen for the first time is news unless it existed when this member came.
    if ((!inserted && it->second != (*stat)->version) || (inserted && !first)) {
      it->second = (*stat)->version;
      changed.push_back(name);
    }
  }
  return changed;
}

Status ZookeeperMembership::create_election_node() {
  std::string prefix;
  {
    std::lock_guard guard(mutex_);
    if (!election_node_.empty()) return Status::ok();
    prefix = election_dir_ + "/" + self_id_ + "-n-";
  }
  Result<std::string> created = client_->create(prefix, self_id_, ZOO_EPHEMERAL_SEQUENTIAL);
  if (!created) return created.status();
  {
    std::lock_guard guard(mutex_);
    election_node_ = created->substr(election_dir_.size() + 1);
  }
  std::lock_guard guard(signal_mutex_);
  election_changed_ = true;
  kick_ = true;
  return Status::ok();
}

Status ZookeeperMembership::refresh_election() {
  for (int attempt = 0; attempt < 10; ++attempt) {
    std::string mine;
    {
      std::lock_guard guard(mutex_);
      mine = election_node_;
    }
    if (mine.empty()) return Status::ok();
    Result<std::vector<std::string>> names = client_->children(election_dir_, false);
    if (!names) return names.status();
    sort_by_sequence(*names);
    auto it = std::find(names->begin(), names->end(), mine);
    if (it == names->end()) {
      std::lock_guard guard(mutex_);
      leader_ = false;
      election_node_.clear();  // gone with an old session: made again by the caller
      return Status::error(ENOENT, "election node " + mine + " vanished");
    }
    if (it == names->begin()) {
      std::lock_guard guard(mutex_);
      if (!leader_) KELPIE_LOG_INFO("membership {}: this member leads", options_.root);
      leader_ = true;
      return Status::ok();
    }
    {
      std::lock_guard guard(mutex_);
      leader_ = false;
    }
    // Watch only the predecessor: one member wakes when a member goes.
    Result<std::optional<Stat>> predecessor = client_->exists(election_dir_ + "/" + *(it - 1), true);
    if (!predecessor) return predecessor.status();
    if (*predecessor) return Status::ok();
  }
  return Status::error(EAGAIN, "election kept changing");
}

Status ZookeeperMembership::write_member() {
  std::string path, body;
  {
    std::lock_guard guard(mutex_);
    if (phase_ == Phase::kIdle) return Status::ok();
    path = members_dir_ + "/" + self_id_;
    body = member_json_locked();
    member_dirty_ = false;
    written_seen_epoch_ = delivered_epoch_;
    written_request_ = (ever_listed_ || rejoining_) ? "rejoin" : "join";
  }
  Result<Stat> set = client_->set(path, body, -1);
  if (!set) {
    std::lock_guard guard(mutex_);
    member_dirty_ = true;
    return set.status();
  }
  return Status::ok();
}

Status ZookeeperMembership::register_self(const std::string& state) {
  std::string path, body, self_id;
  {
    std::lock_guard guard(mutex_);
    path = members_dir_ + "/" + self_id_;
    self_id = self_id_;
    body = member_json_locked();
    json parsed = json::parse(body);
    parsed["state"] = state;
    body = dump_json(parsed);
    member_dirty_ = false;
    written_seen_epoch_ = delivered_epoch_;
    written_request_ = (ever_listed_ || rejoining_) ? "rejoin" : "join";
  }
  int64_t session = client_->session_id();
  for (int attempt = 0; attempt < 5; ++attempt) {
    Result<std::optional<Stat>> old = client_->exists(path, false);
    if (!old) return old.status();
    Status made = Status::ok();
    if (*old && (*old)->ephemeralOwner == session) {
      made = client_->set(path, body, -1).status();
    } else if (*old) {
      // A previous incarnation (killed, its session not expired yet): replaced at once.
      made = client_->multi({{ZookeeperClient::Op::Kind::kDelete, path, "", 0, (*old)->version},
                             {ZookeeperClient::Op::Kind::kCreate, path, body, ZOO_EPHEMERAL, -1}});
    } else {
      made = client_->create(path, body, ZOO_EPHEMERAL).status();
    }
    if (made) break;
    if (made.code() != EEXIST && made.code() != ENOENT && made.code() != ESTALE) return made;
    if (attempt == 4) return made;
  }
  // Election nodes of earlier incarnations would make a dead leader.
  Result<std::vector<std::string>> names = client_->children(election_dir_, false);
  if (!names) return names.status();
  std::string mine;
  {
    std::lock_guard guard(mutex_);
    mine = election_node_;
  }
  for (const std::string& name : *names) {
    if (name.rfind(self_id + "-", 0) == 0 && name != mine) {
      (void)client_->remove(election_dir_ + "/" + name);
    }
  }
  return Status::ok();
}

// ---- helpers with mutex_ held ----

bool ZookeeperMembership::listed_locked() const {
  if (!current_ || !lists(*current_, self_.id)) return false;
  auto it = incarnations_.find(self_.id);
  return it != incarnations_.end() && it->second == client_->session_id();
}

bool ZookeeperMembership::tracking_locked() const {
  return options_.track_members || leader_ || phase_ == Phase::kWaiting;
}

std::string ZookeeperMembership::state_name_locked() const {
  if (leaving_) return "leaving";
  switch (phase_) {
    case Phase::kRunning: return "running";
    case Phase::kWaiting:
    case Phase::kAwaitFormat: return "waiting";
    default: return "joining";
  }
}

std::string ZookeeperMembership::member_json_locked() const {
  json body = {{"info", member_info_to_json(self_)},
               {"state", state_name_locked()},
               {"request", (ever_listed_ || rejoining_) ? "rejoin" : "join"},
               {"seen_epoch", delivered_epoch_},
               {"status", status_json_}};
  return dump_json(body);
}

std::vector<MemberInfo> ZookeeperMembership::live_storage_locked() const {
  std::vector<MemberInfo> nodes;
  for (const auto& [id, member] : members_) {
    if (id != self_id_ && !member.info.gateway && member.state != "leaving") {
      nodes.push_back(member.info);
    }
  }
  if (!self_.gateway && phase_ != Phase::kIdle) nodes.push_back(self_);
  return nodes;
}

void ZookeeperMembership::become_running_locked() {
  if (phase_ == Phase::kRunning) return;
  phase_ = Phase::kRunning;
  member_dirty_ = true;
}

}  // namespace kelpie
