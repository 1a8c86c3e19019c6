#include "cluster/zookeeper_membership.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cluster/membership_codec.h"
#include "cluster/zookeeper_client.h"
#include "common/admin_wire.h"
#include "common/crc32c.h"
#include "common/log.h"

namespace kelpie {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kAppendAttempts = 50;

std::string epoch_name(uint64_t epoch) {
  char name[32];
  std::snprintf(name, sizeof(name), "%020" PRIu64, epoch);
  return name;
}

std::string session_hex(int64_t session) {
  char text[32];
  std::snprintf(text, sizeof(text), "0x%" PRIx64, static_cast<uint64_t>(session));
  return text;
}

int64_t parse_session(const std::string& text) {
  return static_cast<int64_t>(std::strtoull(text.c_str(), nullptr, 16));
}

uint32_t nodes_crc(const std::vector<MemberInfo>& nodes) {
  std::vector<std::string> ids;
  for (const MemberInfo& node : nodes) ids.push_back(uuid_to_string(node.id));
  std::sort(ids.begin(), ids.end());
  std::string all;
  for (const std::string& id : ids) all += id;
  return crc32c(all.data(), all.size());
}

bool same_member(const MemberInfo& a, const MemberInfo& b) {
  return member_info_to_json(a) == member_info_to_json(b);
}

json header_json(const EpochRecord& record) {
  json header = record_to_json(record);
  header.erase("nodes");
  return header;
}

// The header fields of a compact record (its nodes come from applying it).
Result<EpochRecord> header_from_json(const json& object) {
  json with_nodes = object;
  with_nodes["nodes"] = json::array();
  return record_from_json(with_nodes);
}

Result<std::vector<MemberInfo>> members_field(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_array()) {
    return Status::error(EBADMSG, std::string("field '") + key + "' must be an array");
  }
  std::vector<MemberInfo> out;
  for (const json& item : *it) {
    Result<MemberInfo> member = member_info_from_json(item);
    if (!member) return member.status();
    out.push_back(*member);
  }
  return out;
}

std::map<Uuid, int64_t> incarnations_from_json(const json& object) {
  std::map<Uuid, int64_t> out;
  auto it = object.find("incarnations");
  if (it == object.end() || !it->is_object()) return out;
  for (auto& [id, session] : it->items()) {
    std::optional<Uuid> uuid = parse_uuid(id);
    if (uuid && session.is_string()) out[*uuid] = parse_session(session.get<std::string>());
  }
  return out;
}

json incarnations_to_json(const std::map<Uuid, int64_t>& incarnations) {
  json out = json::object();
  for (const auto& [id, session] : incarnations) out[uuid_to_string(id)] = session_hex(session);
  return out;
}

Result<json> parse_json(const std::string& text, const std::string& what) {
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return Status::error(EBADMSG, what + " is not a JSON object");
  }
  return parsed;
}

// The record without its nodes.
EpochRecord header_of(const EpochRecord& record) {
  EpochRecord header;
  header.epoch = record.epoch;
  header.cluster = record.cluster;
  header.copies = record.copies;
  header.min_copies = record.min_copies;
  header.created_unix_ms = record.created_unix_ms;
  header.reason = record.reason;
  return header;
}

bool identical(const MemberInfo& a, const MemberInfo& b) {
  return a.id == b.id && a.peer_address == b.peer_address && a.admin_address == b.admin_address &&
         a.nbd_address == b.nbd_address && a.zone == b.zone && a.vnodes == b.vnodes &&
         a.gateway == b.gateway && a.capacity_bytes == b.capacity_bytes && a.pid == b.pid;
}

std::vector<const MemberInfo*> by_id(const std::vector<MemberInfo>& nodes) {
  std::vector<const MemberInfo*> out;
  out.reserve(nodes.size());
  for (const MemberInfo& node : nodes) out.push_back(&node);
  auto less = [](const MemberInfo* a, const MemberInfo* b) { return a->id < b->id; };
  if (!std::is_sorted(out.begin(), out.end(), less)) std::stable_sort(out.begin(), out.end(), less);
  return out;
}

// What `after` changed against `before`: `before` is `after` without `added` (by
// id), plus `removed`.
void diff_nodes(const std::vector<MemberInfo>& before, const std::vector<MemberInfo>& after,
                std::vector<MemberInfo>& added, std::vector<MemberInfo>& removed) {
  std::vector<const MemberInfo*> a = by_id(before), b = by_id(after);
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i]->id < b[j]->id)) {
      removed.push_back(*a[i++]);
    } else if (i == a.size() || b[j]->id < a[i]->id) {
      added.push_back(*b[j++]);
    } else {
      if (!identical(*a[i], *b[j])) {
        removed.push_back(*a[i]);
        added.push_back(*b[j]);
      }
      ++i;
      ++j;
    }
  }
}

// The nodes of the epoch before the one whose nodes are `nodes` and whose delta
// is (added, removed).
void undo_delta(std::vector<MemberInfo>& nodes, const std::vector<MemberInfo>& added,
                const std::vector<MemberInfo>& removed) {
  std::set<Uuid> ids;
  for (const MemberInfo& node : added) ids.insert(node.id);
  std::erase_if(nodes, [&](const MemberInfo& node) { return ids.count(node.id) != 0; });
  nodes.insert(nodes.end(), removed.begin(), removed.end());
  sort_by_id(nodes);
}

}  // namespace

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

// ---- the epoch log ----

Result<std::optional<ZookeeperMembership::Current>> ZookeeperMembership::read_current_znode()
    const {
  Result<ZookeeperClient::Data> data = client_->get(current_path_, false);
  if (!data) {
    if (data.status().code() == ENOENT) return std::optional<Current>();
    return data.status();
  }
  Result<json> parsed = parse_json(data->bytes, current_path_);
  if (!parsed) return parsed.status();
  Result<EpochRecord> record = record_from_json(*parsed);
  if (!record) return Status::error(EBADMSG, current_path_ + ": " + record.status().message());
  if (static_cast<uint64_t>(data->stat.version) + 1 != record->epoch) {
    return Status::error(EBADMSG, current_path_ + " holds epoch " + std::to_string(record->epoch) +
                                      " at version " + std::to_string(data->stat.version));
  }
  return std::optional<Current>(Current{*record, incarnations_from_json(*parsed)});
}

Status ZookeeperMembership::reload_current() {
  Result<std::optional<Current>> read = read_current_znode();
  if (!read) return read.status();
  if (!*read) return Status::ok();
  std::lock_guard guard(mutex_);
  uint64_t have = current_ ? current_->epoch : 0;
  if (have >= (*read)->record.epoch) return Status::ok();
  if (history_.empty() || history_.back().header.epoch + 1 != (*read)->record.epoch) {
    history_.clear();
    history_loaded_ = false;
  }
  current_ = std::make_shared<const EpochRecord>(std::move((*read)->record));
  incarnations_ = std::move((*read)->incarnations);
  push_history_locked(current_);
  return Status::ok();
}

Status ZookeeperMembership::refresh_epochs(uint64_t latest) {
  for (;;) {
    std::shared_ptr<const EpochRecord> base;
    {
      std::lock_guard guard(mutex_);
      base = current_;
    }
    uint64_t have = base ? base->epoch : 0;
    if (have >= latest) return Status::ok();
    if (!base) return reload_current();
    Result<ZookeeperClient::Data> data = client_->get(epochs_dir_ + "/" + epoch_name(have + 1), false);
    if (!data) return data.status().code() == ENOENT ? reload_current() : data.status();
    Result<json> delta = parse_json(data->bytes, "epoch record " + std::to_string(have + 1));
    if (!delta) return delta.status();
    Result<EpochRecord> header = header_from_json(*delta);
    Result<std::vector<MemberInfo>> added = members_field(*delta, "added");
    Result<std::vector<MemberInfo>> removed = members_field(*delta, "removed");
    if (!header || !added || !removed || header->epoch != have + 1) return reload_current();
    // One new record; the base is shared, not copied, and the incarnations change
    // in place below.
    auto next = std::make_shared<EpochRecord>(std::move(*header));
    next->nodes.clear();
    next->nodes.reserve(base->nodes.size() + added->size());
    std::set<Uuid> gone;
    for (const MemberInfo& node : *removed) gone.insert(node.id);
    for (const MemberInfo& node : *added) gone.insert(node.id);
    for (const MemberInfo& node : base->nodes) {
      if (!gone.count(node.id)) next->nodes.push_back(node);
    }
    for (const MemberInfo& node : *added) next->nodes.push_back(node);
    std::map<Uuid, int64_t> fresh = incarnations_from_json(*delta);
    sort_by_id(next->nodes);
    if (nodes_crc(next->nodes) != delta->value("nodes_crc", uint32_t{0})) {
      KELPIE_LOG_WARN("membership: epoch {} does not apply to epoch {}; reloading", have + 1, have);
      return reload_current();
    }
    std::lock_guard guard(mutex_);
    if (!current_ || current_->epoch != have) continue;
    for (const MemberInfo& node : *removed) incarnations_.erase(node.id);
    for (const auto& [id, session] : fresh) incarnations_[id] = session;
    current_ = std::move(next);
    push_history_locked(current_);
  }
}

void ZookeeperMembership::push_history_locked(std::shared_ptr<const EpochRecord> record) {
  PastEpoch entry;
  entry.header = header_of(*record);
  if (!history_.empty() && history_.back().header.epoch + 1 == record->epoch) {
    std::shared_ptr<const EpochRecord> previous = history_record_locked(history_.size() - 1);
    diff_nodes(previous->nodes, record->nodes, entry.added, entry.removed);
    entry.has_delta = true;
  }
  entry.full = std::move(record);
  history_.push_back(std::move(entry));
  while (history_.size() > options_.epochs_kept) history_.pop_front();
  compact_history_locked();
}

std::shared_ptr<const EpochRecord> ZookeeperMembership::history_record_locked(size_t index) const {
  if (history_[index].full) return history_[index].full;
  // compact_history_locked() drops a whole record only when the next entry has a
  // delta, and the newest entry always keeps its own.
  size_t from = index + 1;
  while (!history_[from].full) ++from;
  std::vector<MemberInfo> nodes = history_[from].full->nodes;
  for (size_t i = from; i > index; --i) undo_delta(nodes, history_[i].added, history_[i].removed);
  auto record = std::make_shared<EpochRecord>(history_[index].header);
  record->nodes = std::move(nodes);
  return record;
}

void ZookeeperMembership::compact_history_locked() {
  for (size_t i = 0; i + 1 < history_.size(); ++i) {
    PastEpoch& entry = history_[i];
    bool undelivered = deliver_ && entry.header.epoch > delivered_epoch_;
    if (entry.full && history_[i + 1].has_delta && !undelivered) entry.full.reset();
  }
}

std::vector<EpochRecord> ZookeeperMembership::epoch_history() const {
  load_history();
  std::lock_guard guard(mutex_);
  // One pass from the newest back, rebuilding compacted entries from the next one.
  std::vector<EpochRecord> out(history_.size());
  for (size_t i = history_.size(); i-- > 0;) {
    if (history_[i].full) {
      out[i] = *history_[i].full;
    } else {
      out[i] = history_[i].header;
      out[i].nodes = out[i + 1].nodes;
      undo_delta(out[i].nodes, history_[i + 1].added, history_[i + 1].removed);
    }
  }
  return out;
}

Result<std::optional<ZookeeperMembership::Current>> ZookeeperMembership::append_epoch(
    const EpochMaker& make) {
  for (int attempt = 0; attempt < kAppendAttempts; ++attempt) {
    Result<std::optional<Current>> last = read_current_znode();
    if (!last) return last.status();
    std::optional<Current> next = make(*last);
    if (!next) return std::optional<Current>();
    uint64_t number = *last ? (*last)->record.epoch + 1 : 1;
    next->record.epoch = number;
    next->record.created_unix_ms = std::chrono::duration_cast<milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count();
    sort_by_id(next->record.nodes);
    for (auto it = next->incarnations.begin(); it != next->incarnations.end();) {
      it = lists(next->record, it->first) ? std::next(it) : next->incarnations.erase(it);
    }
    // The compact record: what changed against the last epoch.
    json added = json::array(), removed = json::array(), incarnations = json::object();
    std::map<Uuid, const MemberInfo*> before;
    if (*last) {
      for (const MemberInfo& node : (*last)->record.nodes) before[node.id] = &node;
    }
    for (const MemberInfo& node : next->record.nodes) {
      auto old = before.find(node.id);
      int64_t session = next->incarnations.count(node.id) ? next->incarnations[node.id] : 0;
      bool same = old != before.end() && same_member(*old->second, node) &&
                  (*last)->incarnations.count(node.id) &&
                  (*last)->incarnations.at(node.id) == session;
      if (same) {
        before.erase(old);
        continue;
      }
      if (old != before.end()) {
        removed.push_back(member_info_to_json(*old->second));
        before.erase(old);
      }
      added.push_back(member_info_to_json(node));
      incarnations[uuid_to_string(node.id)] = session_hex(session);
    }
    for (const auto& [id, node] : before) removed.push_back(member_info_to_json(*node));
    json delta = header_json(next->record);
    delta["added"] = added;
    delta["removed"] = removed;
    delta["incarnations"] = incarnations;
    delta["nodes_crc"] = nodes_crc(next->record.nodes);
    json full = record_to_json(next->record);
    full["incarnations"] = incarnations_to_json(next->incarnations);

    std::vector<ZookeeperClient::Op> ops;
    ops.push_back({ZookeeperClient::Op::Kind::kCreate, epochs_dir_ + "/" + epoch_name(number),
                   dump_json(delta), ZOO_PERSISTENT, -1});
    if (*last) {
      ops.push_back({ZookeeperClient::Op::Kind::kSet, current_path_, dump_json(full), 0,
                     static_cast<int>(number - 2)});
    } else {
      ops.push_back({ZookeeperClient::Op::Kind::kCreate, current_path_, dump_json(full),
                     ZOO_PERSISTENT, -1});
    }
    Status appended = client_->multi(ops);
    if (!appended) {
      int code = appended.code();
      if (code == EEXIST || code == ESTALE || code == ENOENT) continue;  // another appender won
      return appended;
    }
    KELPIE_LOG_INFO("epoch {}: {} ({} nodes)", number, next->record.reason,
                    next->record.nodes.size());
    if (number > options_.epochs_kept) {
      (void)client_->remove(epochs_dir_ + "/" + epoch_name(number - options_.epochs_kept));
    }
    {
      std::lock_guard guard(mutex_);
      if (current_ ? current_->epoch + 1 == number : number == 1) {
        current_ = std::make_shared<const EpochRecord>(next->record);
        incarnations_ = next->incarnations;
        push_history_locked(current_);
      }
    }
    {
      std::lock_guard guard(signal_mutex_);
      kick_ = true;
    }
    signal_.notify_all();
    return next;
  }
  return Status::error(EAGAIN, "the epoch log at " + epochs_dir_ + " kept changing; try again");
}

void ZookeeperMembership::load_history() const {
  std::optional<EpochRecord> oldest;
  {
    std::lock_guard guard(mutex_);
    if (history_loaded_ || history_.empty()) return;
    oldest = *history_record_locked(0);
  }
  std::deque<EpochRecord> older;
  EpochRecord record = *oldest;
  Result<ZookeeperClient::Data> data = client_->get(epochs_dir_ + "/" + epoch_name(record.epoch), false);
  while (data && record.epoch > 1 && older.size() + 1 < options_.epochs_kept) {
    Result<json> delta = parse_json(data->bytes, "epoch record");
    if (!delta) break;
    Result<std::vector<MemberInfo>> added = members_field(*delta, "added");
    Result<std::vector<MemberInfo>> removed = members_field(*delta, "removed");
    if (!added || !removed) break;
    data = client_->get(epochs_dir_ + "/" + epoch_name(record.epoch - 1), false);
    if (!data) break;
    Result<json> previous = parse_json(data->bytes, "epoch record");
    if (!previous) break;
    Result<EpochRecord> header = header_from_json(*previous);
    if (!header || header->epoch + 1 != record.epoch) break;
    std::set<Uuid> new_ids;
    for (const MemberInfo& node : *added) new_ids.insert(node.id);
    for (const MemberInfo& node : record.nodes) {
      if (!new_ids.count(node.id)) header->nodes.push_back(node);
    }
    for (const MemberInfo& node : *removed) header->nodes.push_back(node);
    sort_by_id(header->nodes);
    older.push_front(*header);
    record = *header;
  }
  std::lock_guard guard(mutex_);
  history_loaded_ = true;
  if (history_.empty() || history_.front().header.epoch != oldest->epoch) return;
  // Compact entries: each older one is rebuilt from the one after it.
  EpochRecord after = std::move(*oldest);
  while (!older.empty() && history_.size() < options_.epochs_kept) {
    PastEpoch& front = history_.front();
    front.added.clear();
    front.removed.clear();
    diff_nodes(older.back().nodes, after.nodes, front.added, front.removed);
    front.has_delta = true;
    PastEpoch entry;
    entry.header = header_of(older.back());
    history_.push_front(std::move(entry));
    after = std::move(older.back());
    older.pop_back();
  }
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
