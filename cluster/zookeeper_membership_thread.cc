// The zookeeper driver's own thread (cluster/zookeeper_membership.h): the tick that
// keeps the member in touch (round trip, lease), learns epochs, members, blobs and
// the shutdown marker, leads, restarts after a full stop, replaces an expired
// session, and runs the Events callbacks.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "cluster/membership_codec.h"
#include "cluster/zookeeper_client.h"
#include "cluster/zookeeper_membership.h"
#include "common/admin_wire.h"
#include "common/log.h"

namespace kelpie {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& part : parts) out += (out.empty() ? "" : "; ") + part;
  return out;
}

}  // namespace

milliseconds ZookeeperMembership::negotiated_timeout() const {
  return client_->negotiated_timeout();
}

namespace {
milliseconds tick_for(milliseconds timeout) {
  return std::clamp(timeout / 6, milliseconds(100), milliseconds(1000));
}

// How long the leader of an epoch of `nodes` waits after it first misses a node
// before it appends "failed", so that nodes dying together make one epoch. Sessions
// of nodes that died at once expire over about one tick (their last round trips)
// plus one of ZooKeeper's expiry intervals (its tickTime, 2 s by default). The wait
// delays failure detection, and the writes that wait for it, by as much (2.5 s at
// the default 10 s session timeout): worth it where an epoch costs many members
// work, not for a handful of nodes, which append at once.
constexpr size_t kSettleMinNodes = 8;

milliseconds settle_for(milliseconds timeout, size_t nodes) {
  if (nodes < kSettleMinNodes) return milliseconds(0);
  return std::clamp(timeout / 4, milliseconds(500), milliseconds(2500));
}
}  // namespace

void ZookeeperMembership::run() {
  while (!stopping_) {
    milliseconds negotiated = client_->negotiated_timeout();
    milliseconds tick_time =
        tick_for(negotiated.count() > 0 ? negotiated : options_.session_timeout);
    {
      std::unique_lock lock(signal_mutex_);
      auto wake = Clock::now() + tick_time;
      if (failure_noticed_) wake = std::min(wake, *failure_noticed_ + settle_ + milliseconds(1));
      signal_.wait_until(lock, wake, [this] { return kick_ || stopping_; });
      kick_ = false;
    }
    if (stopping_) break;
    tick();
  }
}

// The one round trip of a tick: P/current's version says the latest epoch (and the
// watch on it says when the next one comes).
Result<uint64_t> ZookeeperMembership::round_trip() {
  Result<std::optional<Stat>> stat = client_->exists(current_path_, true);
  if (!stat) return stat.status();
  return *stat ? static_cast<uint64_t>((**stat).version) + 1 : 0;
}

bool ZookeeperMembership::handle_expiry() {
  {
    std::lock_guard guard(signal_mutex_);
    if (!session_expired_ && !client_->expired()) return false;
  }
  {
    std::lock_guard guard(mutex_);
    KELPIE_LOG_WARN("membership {}: the ZooKeeper session of member {} expired; opening a "
                    "new one, then rejoining",
                    options_.root, uuid_to_string(self_.id));
    election_node_.clear();
    leader_ = false;
    swept_ = false;
    members_known_ = false;
  }
  if (Status opened = open_session(); !opened) {
    KELPIE_LOG_WARN("membership: {}; retrying", opened.to_string());
    std::lock_guard guard(signal_mutex_);
    session_expired_ = true;
    return true;
  }
  Status done = ensure_tree();
  Result<uint64_t> latest = done ? round_trip() : Result<uint64_t>(done);
  if (latest) done = refresh_epochs(*latest);
  std::string state;
  bool register_again = false;
  {
    std::lock_guard guard(mutex_);
    register_again = phase_ != Phase::kIdle && !leaving_;
    // Expired: the leader fails it (or finds it with a new incarnation); it asks to
    // be listed again once it has been told every epoch it missed.
    if (phase_ == Phase::kRunning) rejoining_ = true;
    state = state_name_locked();
  }
  if (done && register_again) done = register_self(state);
  if (done && register_again) done = create_election_node();
  if (!done) {
    KELPIE_LOG_WARN("membership: re-registering after the expiry: {}", done.to_string());
    std::lock_guard guard(signal_mutex_);
    session_expired_ = true;
  }
  return true;
}

bool ZookeeperMembership::leader_beat_moved() {
  Result<ZookeeperClient::Data> beat = client_->get(leader_path_, false);
  if (!beat) return false;
  json parsed = json::parse(beat->bytes, nullptr, false);
  bool serving = !parsed.is_discarded() && parsed.is_object() && parsed.value("serving", false);
  std::lock_guard guard(mutex_);
  bool moved = leader_beat_version_ != -2 && beat->stat.version != leader_beat_version_;
  leader_beat_version_ = beat->stat.version;
  return moved && serving;
}

void ZookeeperMembership::tick() {
  handle_expiry();
  bool members_relist, shared_relist, marker_changed, election_changed;
  std::set<std::string> dirty_members, dirty_shared;
  {
    std::lock_guard guard(signal_mutex_);
    members_relist = std::exchange(members_relist_, false);
    shared_relist = std::exchange(shared_relist_, false);
    marker_changed = std::exchange(marker_changed_, false);
    election_changed = std::exchange(election_changed_, false);
    epochs_changed_ = false;
    dirty_members.swap(dirty_members_);
    dirty_shared.swap(dirty_shared_);
  }
  auto requeue = [&] {
    std::lock_guard guard(signal_mutex_);
    members_relist_ |= members_relist;
    shared_relist_ |= shared_relist;
    marker_changed_ |= marker_changed;
    election_changed_ |= election_changed;
    dirty_members_.insert(dirty_members.begin(), dirty_members.end());
    dirty_shared_.insert(dirty_shared.begin(), dirty_shared.end());
  };
  auto lost_touch = [&](const std::string& why) {
    requeue();
    if (!std::exchange(in_touch_, false)) return;
    KELPIE_LOG_WARN("membership {}: lost touch with ZooKeeper ({}); this node keeps its epoch, "
                    "holds I/O once its lease lapses (half the session timeout) and reconnects "
                    "by itself",
                    describe(), why);
  };
  if (!client_->connected()) return lost_touch(client_->state_name());
  const auto trip_start = Clock::now();
  Result<uint64_t> latest = round_trip();
  if (!latest) return lost_touch(latest.status().to_string());
  if (!std::exchange(in_touch_, true)) {
    KELPIE_LOG_WARN("membership {}: in touch with ZooKeeper again", describe());
  }
  if (Status learned = refresh_epochs(*latest); !learned) {
    KELPIE_LOG_WARN("membership: reading epochs: {}", learned.to_string());
  }
  if (marker_changed) refresh_marker();
  bool track = false;
  {
    std::lock_guard guard(mutex_);
    track = tracking_locked();
  }
  if (track && (members_relist || !dirty_members.empty() || !members_known_)) {
    if (!refresh_members(members_relist, dirty_members)) {
      std::lock_guard guard(signal_mutex_);
      members_relist_ = true;
    }
  }
  std::vector<std::string> changed_blobs = refresh_shared(shared_relist, dirty_shared);
  if (election_changed) {
    Status elected = refresh_election();
    if (!elected && elected.code() == ENOENT) elected = create_election_node();
    if (!elected) {
      std::lock_guard guard(signal_mutex_);
      election_changed_ = true;
    }
  }

  // Phase changes.
  bool waiting = false;
  {
    std::lock_guard guard(mutex_);
    if (phase_ == Phase::kAwaitFormat && current_) become_running_locked();
    if (phase_ == Phase::kWaiting && current_ && current_->epoch > waiting_epoch_) {
      become_running_locked();
    }
    waiting = phase_ == Phase::kWaiting;
    if (listed_locked() && !ever_listed_) {
      ever_listed_ = true;
      rejoining_ = false;
      member_dirty_ = true;
    }
    // Out of the epoch and told so: say so, so the leader lists it again.
    if (phase_ == Phase::kRunning && !self_.gateway && !leaving_ && deliver_ && current_ &&
        !listed_locked() && (ever_listed_ || rejoining_) &&
        delivered_epoch_ >= current_->epoch && written_seen_epoch_ < delivered_epoch_) {
      member_dirty_ = true;
    }
  }
  if (waiting) {
    if (leader_beat_moved()) {
      std::lock_guard guard(mutex_);
      KELPIE_LOG_INFO("membership {}: a running leader beats; joining", options_.root);
      become_running_locked();
    } else if (Status restarted = try_restart(); !restarted) {
      KELPIE_LOG_WARN("membership: restart: {}", restarted.to_string());
    }
  }
  bool lead_now = false;
  {
    std::lock_guard guard(mutex_);
    lead_now = leader_ && phase_ == Phase::kRunning && deliver_ && current_ && !marker_present_;
  }
  if (lead_now) {
    lead();
  } else {
    failure_noticed_.reset();
  }

  // Events, in epoch order, then the lease.
  Events events;
  std::vector<std::shared_ptr<const EpochRecord>> new_epochs;
  bool fire_shutdown = false;
  uint64_t learned = 0;
  {
    std::lock_guard guard(mutex_);
    if (deliver_) {
      events = events_;
      if (shutdown_seen_ && !shutdown_delivered_) {
        shutdown_delivered_ = true;
        fire_shutdown = true;
      }
      bool contiguous = std::any_of(history_.begin(), history_.end(), [&](const PastEpoch& e) {
        return e.header.epoch == delivered_epoch_ + 1;
      });
      for (size_t i = 0; i < history_.size(); ++i) {
        uint64_t epoch = history_[i].header.epoch;
        if (epoch > delivered_epoch_ && (contiguous || epoch == history_.back().header.epoch)) {
          new_epochs.push_back(history_record_locked(i));
        }
      }
      if (!new_epochs.empty()) {
        delivered_epoch_ = new_epochs.back()->epoch;
        compact_history_locked();
      }
    }
    learned = current_ ? current_->epoch : 0;
  }
  if (fire_shutdown && events.on_shutdown) events.on_shutdown();
  for (const std::shared_ptr<const EpochRecord>& record : new_epochs) {
    if (events.on_epoch) events.on_epoch(*record);
  }
  for (const std::string& name : changed_blobs) {
    if (events.on_shared_changed) events.on_shared_changed(name);
  }
  bool write = false;
  {
    std::lock_guard guard(mutex_);
    write = member_dirty_ && phase_ != Phase::kJoining && phase_ != Phase::kIdle;
    // The member's seen_epoch moved past an exclusion: tell the leader.
    if (phase_ == Phase::kRunning && !self_.gateway && !leaving_ && current_ &&
        !listed_locked() && (ever_listed_ || rejoining_) &&
        written_seen_epoch_ < delivered_epoch_) {
      write = true;
    }
  }
  if (write) {
    if (Status written = write_member(); !written) {
      KELPIE_LOG_WARN("membership: writing the member record: {}", written.to_string());
    }
  }
  bool all_delivered = false;
  {
    std::lock_guard guard(mutex_);
    all_delivered = deliver_ && delivered_epoch_ >= learned && learned >= *latest;
  }
  if (all_delivered) {
    milliseconds timeout = client_->negotiated_timeout();
    lease_.renew(trip_start + timeout / 2);
  }
}

// The leader: beat, compact, and make one epoch for every change it sees.
void ZookeeperMembership::lead() {
  std::map<std::string, Member> members;
  Member me;
  std::shared_ptr<const EpochRecord> current;
  bool swept = false;
  bool serving = false;
  {
    std::lock_guard guard(mutex_);
    members = members_;
    me = Member{self_, state_name_locked(), (ever_listed_ || rejoining_) ? "rejoin" : "join",
                delivered_epoch_, status_json_, client_->session_id()};
    current = current_;
    swept = std::exchange(swept_, true);
    members[uuid_to_string(me.info.id)] = me;
    auto serving_node = [&](const MemberInfo& node) {
      auto it = members.find(uuid_to_string(node.id));
      auto listed = incarnations_.find(node.id);
      return it != members.end() && it->second.state == "running" &&
             listed != incarnations_.end() && listed->second == it->second.session;
    };
    serving = std::any_of(current->nodes.begin(), current->nodes.end(), serving_node);
  }
  json beat = {{"id", uuid_to_string(me.info.id)}, {"beat", ++beat_}, {"serving", serving}};
  (void)client_->set(leader_path_, dump_json(beat), -1);
  // A node of the epoch without a member znode: wait a moment for the others that
  // died with it (settle_for), then append them all in one epoch.
  bool missing = std::any_of(current->nodes.begin(), current->nodes.end(), [&](const MemberInfo& node) {
    return members.count(uuid_to_string(node.id)) == 0;
  });
  if (!missing) {
    failure_noticed_.reset();
  } else if (!failure_noticed_) {
    failure_noticed_ = Clock::now();
    settle_ = settle_for(client_->negotiated_timeout(), current->nodes.size());
    if (settle_.count() > 0) {
      KELPIE_LOG_INFO("membership {}: a node of epoch {} is gone; appending in {} ms",
                      options_.root, current->epoch, settle_.count());
    }
  }
  if (failure_noticed_ && Clock::now() < *failure_noticed_ + settle_) return;
  if (!swept) {
    // Records left behind by an appender that died before deleting them.
    Result<std::vector<std::string>> names = client_->children(epochs_dir_, false);
    if (names) {
      for (const std::string& name : *names) {
        uint64_t epoch = std::strtoull(name.c_str(), nullptr, 10);
        if (epoch + options_.epochs_kept <= current->epoch) {
          (void)client_->remove(epochs_dir_ + "/" + name);
        }
      }
    }
  }
  auto made = append_epoch([&](const std::optional<Current>& last) -> std::optional<Current> {
    if (!last) return std::nullopt;
    Current next = *last;
    std::vector<std::string> reasons;
    for (const MemberInfo& node : last->record.nodes) {
      std::string id = uuid_to_string(node.id);
      if (members.count(id)) continue;
      // Re-checked at the source: only a member whose znode is really gone fails.
      Result<std::optional<Stat>> stat = client_->exists(members_dir_ + "/" + id, false);
      if (!stat || *stat) continue;
      next.record.nodes = without(next.record.nodes, node.id);
      next.incarnations.erase(node.id);
      reasons.push_back("failed " + id);
    }
    for (const auto& [id, member] : members) {
      if (member.info.gateway || member.state != "running") continue;
      bool listed = lists(last->record, member.info.id);
      auto incarnation = last->incarnations.find(member.info.id);
      if (listed && incarnation != last->incarnations.end() &&
          incarnation->second == member.session) {
        continue;
      }
      if (member.request == "rejoin" && member.seen_epoch < last->record.epoch) continue;
      next.record.nodes = without(next.record.nodes, member.info.id);
      next.record.nodes.push_back(member.info);
      next.incarnations[member.info.id] = member.session;
      reasons.push_back((member.request == "rejoin" ? "rejoin " : "join ") + id);
    }
    if (reasons.empty() || next.record.nodes.empty()) return std::nullopt;
    next.record.reason = joined(reasons);
    return next;
  });
  if (!made) {
    KELPIE_LOG_WARN("membership: leader: {}", made.status().to_string());
    return;
  }
  failure_noticed_.reset();
}

// After a full stop: the same nodes once every one of them is back and waiting.
Status ZookeeperMembership::try_restart() {
  std::map<std::string, Member> members;
  Member me;
  uint64_t waiting_epoch = 0;
  {
    std::lock_guard guard(mutex_);
    if (phase_ != Phase::kWaiting || !current_) return Status::ok();
    members = members_;
    me = Member{self_, "waiting", "join", delivered_epoch_, status_json_, client_->session_id()};
    waiting_epoch = waiting_epoch_;
  }
  members[uuid_to_string(me.info.id)] = me;
  auto made = append_epoch([&](const std::optional<Current>& last) -> std::optional<Current> {
    if (!last || last->record.epoch != waiting_epoch) return std::nullopt;
    Current next = *last;
    next.record.nodes.clear();
    next.incarnations.clear();
    for (const MemberInfo& node : last->record.nodes) {
      auto it = members.find(uuid_to_string(node.id));
      if (it == members.end() || it->second.state != "waiting" || it->second.info.gateway) {
        return std::nullopt;
      }
      next.record.nodes.push_back(it->second.info);
      next.incarnations[node.id] = it->second.session;
    }
    next.record.reason = "restart";
    return next;
  });
  if (!made) return made.status();
  if (!*made) return Status::ok();
  Status removed = client_->remove(marker_path_);
  if (!removed && removed.code() != ENOENT) return removed;
  std::lock_guard guard(mutex_);
  become_running_locked();
  return Status::ok();
}

bool ZookeeperMembership::is_leader() const {
  std::lock_guard guard(mutex_);
  return leader_;
}

int64_t ZookeeperMembership::session_id() const { return client_->session_id(); }

void ZookeeperMembership::stop_thread() {
  if (!thread_.joinable()) return;
  KELPIE_ASSERT(thread_.get_id() != std::this_thread::get_id());
  {
    std::lock_guard guard(signal_mutex_);
    stopping_ = true;
  }
  signal_.notify_all();
  thread_.join();
}

}  // namespace kelpie
