// Membership: who is in the cluster, in which epoch, and the totally ordered
// cluster operations (DESIGN.md, "Coordination: epochs and membership drivers").
//
// One interface, several drivers: `local` (cluster/local_membership.h: a state
// directory shared by the daemons of one host) and `zookeeper`
// (cluster/zookeeper_membership.h: a ZooKeeper ensemble, for many hosts).
// open_membership() below picks one from its spec.
//
// Contract (every driver):
//  - An epoch record is the full list of storage nodes of that epoch (gateways are
//    members but never in an epoch record: they change no placement). Epochs are
//    numbered 1, 2, ... without gaps; record e+1 is appended only if the last record
//    is e (compare-and-append), so every node sees the same sequence. The log
//    survives restarts.
//  - Epoch 1 is made by format(); before it the cluster is "unformatted" and joins
//    only register members. After format, a storage node's join, clean leave, crash
//    or hang (no heartbeat for the failure timeout, judged on each observer's
//    monotonic clock) makes a new epoch with the full node list.
//  - A live storage member evicted from the current epoch is told so, then rejoins by itself.
//  - After a full stop or crash (no member of the last epoch is running), no epoch is
//    made until every node of the last epoch has joined again (status kWaiting), or
//    until force_recover().
//  - Callbacks (Events) run on the driver's own thread, never on a reactor; the
//    receiver posts them to its reactors. They are delivered in epoch order, each
//    epoch once, starting with the current one right after join().
//  - update_shared() runs `change` with exclusive access to one named shared blob
//    (the VDI directory): calls on all nodes are totally ordered; `change` sees the
//    latest content, and what it leaves is stored durably before update_shared
//    returns, unless it returns an error (then nothing is stored). Other members
//    are told through on_shared_changed.
//  - publish_status() stores a small JSON object text about this node (recovery
//    progress) that every member can read with member_statuses();
//    publish_status_field() sets one more top-level field of it (the peer
//    reachability report, cluster/peer_reachability.h), which publish_status() keeps.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/uuid.h"

namespace kelpie {

class DirectoryBacking;

struct MemberInfo {
  Uuid id{};
  std::string peer_address;   // "HOST:PORT" or "unix:/path" — where peers reach it
  std::string admin_address;  // "HOST:PORT" of its admin server
  std::string nbd_address;    // "HOST:PORT" of its NBD listener ("" if none)
  std::string zone;           // empty: its own zone
  uint32_t vnodes = 0;        // 0 for a gateway
  bool gateway = false;
  uint64_t capacity_bytes = 0;
  int pid = 0;
};

struct EpochRecord {
  uint64_t epoch = 0;
  Uuid cluster{};
  uint32_t copies = 0;
  uint32_t min_copies = 0;
  int64_t created_unix_ms = 0;  // wall clock, for display only
  std::string reason;           // "format", "join <uuid>", "leave <uuid>", "failed <uuid>", ...
  std::vector<MemberInfo> nodes;  // storage nodes only, sorted by id
};

enum class ClusterStatus {
  kUnformatted,  // no epoch yet
  kWaiting,      // restarting after a full stop: waiting for the last epoch's nodes
  kRunning,
  kShutdown,     // `cluster shutdown` was requested
};
const char* cluster_status_name(ClusterStatus status);

class MembershipDriver {
 public:
  struct Events {
    // A new epoch (also the current one, once, right after join()).
    std::function<void(const EpochRecord&)> on_epoch;
    // Another member changed the named shared blob.
    std::function<void(const std::string& name)> on_shared_changed;
    // The cluster was told to shut down (every member stops cleanly).
    std::function<void()> on_shutdown;
    // Asked (on the driver's thread, no driver lock held) before this storage member,
    // alive but out of the current epoch (failed while hung, or evicted), asks to be
    // listed again: false holds the rejoin, and it is asked again on a later tick.
    // Null: always rejoin. (local driver; the zookeeper driver does not ask yet.)
    std::function<bool()> may_rejoin;
  };

  virtual ~MembershipDriver() = default;

  // Registers `self`, starts the heartbeat and failure detection. For a storage
  // node of a formatted cluster this appends the epoch that adds it (unless the last
  // epoch already lists it with the same address, zone and vnodes and the cluster is
  // waiting for its nodes after a full stop).
  virtual Status join(const MemberInfo& self, Events events) = 0;
  // Clean leave: a storage node's departure makes a new epoch. Stops the heartbeat.
  virtual void leave() = 0;
  // Stops the heartbeat without leaving (a clean stop of the whole cluster, or a
  // process that exits: the others notice by heartbeat).
  virtual void stop() = 0;

  // Makes epoch 1 from every live storage member. EEXIST if already formatted.
  virtual Result<EpochRecord> format(uint32_t copies, uint32_t min_copies) = 0;
  // Ends kWaiting: makes a new epoch from the storage members alive now.
  virtual Result<EpochRecord> force_recover() = 0;
  // Asks every member to stop (on_shutdown on each).
  virtual Status request_shutdown() = 0;
  // Removes a member now (as if it had failed): a new epoch without it.
  virtual Status evict(const Uuid& id) = 0;

  virtual ClusterStatus status() const = 0;
  virtual std::optional<EpochRecord> current_epoch() const = 0;
  // Oldest first.
  virtual std::vector<EpochRecord> epoch_history() const = 0;
  // Every registered member whose heartbeat is alive, gateways included.
  virtual std::vector<MemberInfo> live_members() const = 0;

  virtual Status update_shared(const std::string& name,
                               const std::function<Status(std::string& content)>& change) = 0;
  virtual Result<std::string> read_shared(const std::string& name) const = 0;

  virtual void publish_status(const std::string& json) = 0;
  // Sets the top-level field `key` of this node's status to `value_json` (a JSON
  // value); publish_status() replaces the rest but keeps it. Any thread.
  virtual void publish_status_field(const std::string& key, const std::string& value_json) = 0;
  // Member id (uuid string) -> its last published status.
  virtual std::map<std::string, std::string> member_statuses() const = 0;

  // "local:/path" and such: for `cluster info`.
  virtual std::string describe() const = 0;

  // Where the cluster keeps the VDI directory named `name` (a shared-blob name) and
  // the cluster-wide lock that orders its control operations
  // (engine/directory_backing.h). Usable once join() returned.
  virtual std::unique_ptr<DirectoryBacking> directory_backing(const std::string& name) = 0;

  // The lease (DESIGN.md, Coordination): this member may serve I/O under the epoch
  // views it was given until this steady-clock time. The driver renews it only when
  // it has just confirmed the member is still in touch (local: its heartbeat written
  // and the log re-read; zookeeper: an answer from the ensemble), and only after
  // every epoch learned so far went out through on_epoch. It lasts half the failure
  // timeout, so a member that stalled or lost touch holds its I/O well before the
  // others may fail it and take over its objects. Any thread; lock-free.
  virtual std::chrono::steady_clock::time_point lease_until() const = 0;
  // How many times the lease was renewed after it had lapsed (or ended). A gateway
  // that sees this count change since it was granted a VDI's write attach may have
  // been failed out and replaced meanwhile: it must check its attach before it
  // writes again. Any thread; lock-free.
  virtual uint64_t lease_breaks() const = 0;
};

// The lease as the drivers keep it (lock-free for readers): renew() moves its end and
// counts a renewal that comes after the end had passed.
class DriverLease {
 public:
  using Clock = std::chrono::steady_clock;
  void renew(Clock::time_point until) {
    const int64_t now = Clock::now().time_since_epoch().count();
    if (until_ns_.load(std::memory_order_acquire) <= now) breaks_.fetch_add(1, std::memory_order_acq_rel);
    until_ns_.store(until.time_since_epoch().count(), std::memory_order_release);
  }
  void end() { until_ns_.store(0, std::memory_order_release); }
  Clock::time_point until() const {
    return Clock::time_point(Clock::duration(until_ns_.load(std::memory_order_acquire)));
  }
  uint64_t breaks() const { return breaks_.load(std::memory_order_acquire); }

 private:
  std::atomic<int64_t> until_ns_{0};
  std::atomic<uint64_t> breaks_{0};
};

// What a driver publishes as its status: the text publish_status() gave (an object)
// with the fields publish_status_field() set. Not thread-safe (the driver's lock).
class MemberStatusText {
 public:
  void set_base(const std::string& json) { base_ = json; }
  void set_field(const std::string& key, const std::string& value_json) { fields_[key] = value_json; }
  // The combined text: `base` alone while no field is set; a base that is not a JSON
  // object then gives way to the fields.
  std::string text() const;

 private:
  std::string base_ = "{}";
  std::map<std::string, std::string> fields_;
};

// Opens the driver a spec names (kelpied --cluster), not joined yet:
//   local:/path                     LocalMembership on that state directory (made
//                                   when missing), default timings.
//   zookeeper:HOST:PORT[,...]/path[?session_timeout_ms=N]
//                                   ZookeeperMembership (its header documents the
//                                   spec); connects first, so an unreachable ensemble
//                                   fails here, within min(session timeout, 10 s).
// EINVAL with one line naming the problem for anything else.
Result<std::unique_ptr<MembershipDriver>> open_membership(const std::string& spec);

}  // namespace kelpie
