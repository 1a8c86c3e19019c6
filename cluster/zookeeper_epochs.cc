// The zookeeper driver's epoch log (cluster/zookeeper_membership.h): reading
// P/current and the compact records under P/epochs, appending an epoch (one
// compare-and-append zoo_multi), and the kept history, whose older entries hold only
// what changed and are rebuilt from a newer one when asked for.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cluster/membership_codec.h"
#include "cluster/zookeeper_client.h"
#include "cluster/zookeeper_membership.h"
#include "cluster/zookeeper_membership_internal.h"
#include "common/admin_wire.h"
#include "common/crc32c.h"
#include "common/log.h"

namespace kelpie {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using zookeeper_internal::parse_json;

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

}  // namespace kelpie
