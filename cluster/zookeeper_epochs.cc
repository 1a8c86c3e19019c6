// The zookeeper driver's epoch log (cluster/zookeeper_membership.h): reading
// P/current and the compact records under P/epochs (coded by zookeeper_records.cc),
// appending an epoch (one compare-and-append zoo_multi), and the kept history, whose
// older entries hold only what changed and are rebuilt from a newer one when asked for.
#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "cluster/membership_codec.h"
#include "cluster/zookeeper_client.h"
#include "cluster/zookeeper_membership.h"
#include "cluster/zookeeper_records.h"
#include "common/log.h"

namespace kelpie {
namespace {

using std::chrono::milliseconds;
using zookeeper_records::Change;
using zookeeper_records::nodes_crc;

constexpr int kAppendAttempts = 50;

std::string epoch_name(uint64_t epoch) {
  char name[32];
  std::snprintf(name, sizeof(name), "%020" PRIu64, epoch);
  return name;
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
  Result<zookeeper_records::Full> full = zookeeper_records::decode_full(data->bytes, current_path_);
  if (!full) return full.status();
  const EpochRecord* record = &full->record;
  if (static_cast<uint64_t>(data->stat.version) + 1 != record->epoch) {
    return Status::error(EBADMSG, current_path_ + " holds epoch " + std::to_string(record->epoch) +
                                      " at version " + std::to_string(data->stat.version));
  }
  return std::optional<Current>(Current{std::move(full->record), std::move(full->incarnations)});
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
    Result<Change> change =
        zookeeper_records::decode_change(data->bytes, "epoch record " + std::to_string(have + 1));
    if (!change) return change.status();
    if (change->header.epoch != have + 1) return reload_current();
    // One new record, merged from the shared base (sorted) and the added nodes:
    // O(nodes) copies, no sort; the incarnations change in place below.
    auto less = [](const MemberInfo& a, const MemberInfo& b) { return a.id < b.id; };
    std::sort(change->added.begin(), change->added.end(), less);
    std::vector<Uuid> gone;
    gone.reserve(change->added.size() + change->removed.size());
    for (const MemberInfo& node : change->removed) gone.push_back(node.id);
    for (const MemberInfo& node : change->added) gone.push_back(node.id);
    std::sort(gone.begin(), gone.end());
    auto next = std::make_shared<EpochRecord>(std::move(change->header));
    next->nodes.reserve(base->nodes.size() + change->added.size());
    auto added = change->added.begin();
    for (const MemberInfo& node : base->nodes) {
      while (added != change->added.end() && added->id < node.id) next->nodes.push_back(*added++);
      if (!std::binary_search(gone.begin(), gone.end(), node.id)) next->nodes.push_back(node);
    }
    next->nodes.insert(next->nodes.end(), added, change->added.end());
    if (nodes_crc(next->nodes) != change->nodes_crc) {
      KELPIE_LOG_WARN("membership: epoch {} does not apply to epoch {}; reloading", have + 1, have);
      return reload_current();
    }
    std::lock_guard guard(mutex_);
    if (!current_ || current_->epoch != have) continue;
    for (const MemberInfo& node : change->removed) incarnations_.erase(node.id);
    for (const auto& [id, session] : change->incarnations) incarnations_[id] = session;
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
    // The epoch this member has when it is the newest (P/current's version says so):
    // no ~100 KB read of P/current per epoch at 1,000 nodes. Should it change before
    // the multi below, the multi fails and this re-reads.
    Result<std::optional<Current>> last = std::optional<Current>();
    Result<uint64_t> newest = round_trip();
    if (!newest) return newest.status();
    {
      std::lock_guard guard(mutex_);
      if (current_ && current_->epoch == *newest) {
        last = std::optional<Current>(Current{*current_, incarnations_});
      }
    }
    if (!*last) last = read_current_znode();
    if (!last) return last.status();
    std::optional<Current> next = make(*last);
    if (!next) return std::optional<Current>();
    uint64_t number = *last ? (*last)->record.epoch + 1 : 1;
    next->record.epoch = number;
    next->record.created_unix_ms = std::chrono::duration_cast<milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count();
    sort_by_id(next->record.nodes);
    std::vector<Uuid> listed;
    listed.reserve(next->record.nodes.size());
    for (const MemberInfo& node : next->record.nodes) listed.push_back(node.id);
    std::erase_if(next->incarnations, [&](const auto& entry) {
      return !std::binary_search(listed.begin(), listed.end(), entry.first);
    });
    // The compact record: what changed against the last epoch.
    Change change;
    change.header = header_of(next->record);
    change.nodes_crc = nodes_crc(next->record.nodes);
    std::map<Uuid, const MemberInfo*> before;
    if (*last) {
      for (const MemberInfo& node : (*last)->record.nodes) before[node.id] = &node;
    }
    for (const MemberInfo& node : next->record.nodes) {
      auto old = before.find(node.id);
      auto incarnation = next->incarnations.find(node.id);
      int64_t session = incarnation == next->incarnations.end() ? 0 : incarnation->second;
      auto last_incarnation = *last ? (*last)->incarnations.find(node.id)
                                    : std::map<Uuid, int64_t>::const_iterator();
      bool same = old != before.end() && identical(*old->second, node) &&
                  last_incarnation != (*last)->incarnations.end() &&
                  last_incarnation->second == session;
      if (same) {
        before.erase(old);
        continue;
      }
      if (old != before.end()) {
        change.removed.push_back(*old->second);
        before.erase(old);
      }
      change.added.push_back(node);
      change.incarnations[node.id] = session;
    }
    for (const auto& [id, node] : before) change.removed.push_back(*node);
    std::string full = zookeeper_records::encode_full(next->record, next->incarnations);

    std::vector<ZookeeperClient::Op> ops;
    ops.push_back({ZookeeperClient::Op::Kind::kCreate, epochs_dir_ + "/" + epoch_name(number),
                   zookeeper_records::encode_change(change), ZOO_PERSISTENT, -1});
    if (*last) {
      ops.push_back({ZookeeperClient::Op::Kind::kSet, current_path_, full, 0,
                     static_cast<int>(number - 2)});
    } else {
      ops.push_back({ZookeeperClient::Op::Kind::kCreate, current_path_, full,
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
  uint64_t oldest = 0;
  {
    std::lock_guard guard(mutex_);
    if (history_loaded_ || history_.empty()) return;
    oldest = history_.front().header.epoch;
  }
  // The change records from the oldest epoch held back: record e gives epoch e's
  // delta against e - 1, and record e - 1 gives that epoch's header. No full records.
  std::vector<Change> changes;  // changes[i] is epoch oldest - i's
  bool unreachable = false;     // not read for now: read the rest on a later call
  for (uint64_t epoch = oldest; epoch >= 1 && changes.size() < options_.epochs_kept; --epoch) {
    std::string what = "epoch record " + std::to_string(epoch);
    Result<ZookeeperClient::Data> data = client_->get(epochs_dir_ + "/" + epoch_name(epoch), false);
    if (!data) {
      // ENOENT: compacted away, the history ends here. Anything else (ZooKeeper out of
      // reach) must not cut the history short for good: recovery's authority walk
      // would start at this member's join for every later epoch.
      unreachable = data.status().code() != ENOENT;
      break;
    }
    Result<Change> change = zookeeper_records::decode_change(data->bytes, what);
    if (!change || change->header.epoch != epoch) break;
    changes.push_back(std::move(*change));
  }
  std::lock_guard guard(mutex_);
  history_loaded_ = !unreachable;
  if (history_.empty() || history_.front().header.epoch != oldest) return;
  for (size_t i = 0; i + 1 < changes.size() && history_.size() < options_.epochs_kept; ++i) {
    PastEpoch& front = history_.front();
    if (!front.has_delta) {
      front.added = std::move(changes[i].added);
      front.removed = std::move(changes[i].removed);
      front.has_delta = true;
    }
    PastEpoch entry;
    entry.header = std::move(changes[i + 1].header);
    history_.push_front(std::move(entry));
  }
}

}  // namespace kelpie
