// The `zookeeper` membership driver: clusters across many hosts, coordinated by a
// real ZooKeeper ensemble through the ZooKeeper C client (libzookeeper-mt)
// (DESIGN.md, "Coordination: epochs and membership drivers"). The contract of every
// call is MembershipDriver's (cluster/membership.h); the semantics of joins, leaves,
// failures, full stops ("restart"), force_recover ("recover"), eviction and
// "rejoin" are the `local` driver's (cluster/local_membership.h). This header adds
// what is particular to ZooKeeper.
//
// Spec (kelpied --cluster, open_membership, parse_zookeeper_spec):
//   zookeeper:HOST:PORT[,HOST:PORT...]/path/to/cluster[?OPTION=VALUE[&...]]
// e.g. zookeeper:10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181/kelpie/prod
// HOST is a name or an IPv4 address; the path has 1..16 components of
// [A-Za-z0-9._-] (not "." or ".."), no trailing '/'. Several clusters share one
// ensemble under different paths. Options:
//   session_timeout_ms=N   1000..600000, default 10000. The server may negotiate it
//                          into its [minSessionTimeout, maxSessionTimeout] (2 and 20
//                          ticks by default); the driver uses what was negotiated.
//   connect_timeout_ms=N   how long open/join wait for a first connection; default
//                          min(session timeout, 10 s).
//
// Layout under the path P (made on first use; every znode world-readable):
//   P/members/<uuid>        EPHEMERAL, one per joined member, written by its owner:
//                           {"info": MemberInfo, "state": "joining"|"waiting"|
//                           "running"|"leaving", "request": "join"|"rejoin",
//                           "seen_epoch": N, "status": published status text}.
//                           Its session id (the znode's ephemeralOwner) is the
//                           member's incarnation.
//   P/current               the latest epoch in full: a JSON header line (the
//                           EpochRecord fields but its nodes, "format": 2), then one
//                           text line per node with its session, the incarnation
//                           (cluster/zookeeper_records.h: ~115 bytes a node). Its
//                           znode version is epoch - 1.
//   P/epochs/<%020u epoch>  compact epoch records: the header line plus "nodes_crc"
//                           (crc32c of the sorted uuids), then a line per node added
//                           ("+ ", with its session) and removed ("- ") against the
//                           epoch before. Appending epoch e+1 is ONE zoo_multi:
//                           create P/epochs/<e+1> and set P/current at version e-1.
//                           ZNODEEXISTS/ZBADVERSION means another member appended
//                           first: re-read and re-decide (compare-and-append).
//                           The appender decides from the epoch it holds when
//                           P/current's version shows it is the newest.
//                           Up to epochs_kept records are kept; the appender deletes
//                           the one that falls out (epoch_history() returns those).
//                           A member applies each new epoch's record to the epoch it
//                           holds; it reads P/current only when it holds none (a
//                           joiner, or every member at format) or has fallen behind
//                           the kept records.
//   P/election/<uuid>-n-<seq>  EPHEMERAL_SEQUENTIAL: the member with the lowest
//                           sequence number is the leader; each member watches only
//                           its predecessor (no herd when the leader changes).
//   P/leader                {"id": uuid, "beat": N}, set by the running leader every
//                           tick: a joining member that sees it move knows the
//                           cluster is running (else it waits, as after a full stop).
//   P/shared/<name>         shared blobs; update_shared() is read, change, then
//                           zoo_set at the version read (zoo_create when missing),
//                           retried on ZBADVERSION/ZNODEEXISTS: totally ordered.
//   P/locks/<name>/l-<seq>  EPHEMERAL_SEQUENTIAL: the VDI directory's lock
//                           (directory_backing()); the lowest holds it.
//   P/shutdown              request_shutdown(): a random id. Deleted by "restart" or
//                           "recover".
// Nothing grows per epoch without bound: members, election and lock znodes are
// ephemeral, epochs/ holds at most epochs_kept records, the rest is one znode each.
//
// Who makes which epoch (each a compare-and-append as above):
//   the caller:  "format" (format()), "leave <uuid>" (leave(), after writing state
//                "leaving"), "evicted <uuid>" (evict()), "recover" (force_recover()).
//   the leader (running, no shutdown marker), one epoch per batch of changes it sees:
//                "failed <uuid>"  a node of the last epoch whose members/<uuid> is gone
//                                 (its session expired or closed; re-checked with an
//                                 exists() right before appending), never down to an
//                                 empty epoch. In an epoch of 8 nodes or more the
//                                 leader appends it a settle time (a quarter of the
//                                 session timeout, 0.5..2.5 s) after it first misses
//                                 a node, so nodes that die together (their sessions
//                                 expire over a second or two) make one epoch;
//                "join <uuid>"    a running storage member asking to join that the
//                                 last epoch does not list with its incarnation (a new
//                                 node, or one restarted before its session expired);
//                "rejoin <uuid>"  the same for a member whose session expired or that
//                                 was failed/evicted while alive, once its seen_epoch
//                                 shows it was told of the last epoch (it knows it is
//                                 out, and peers fence it).
//                Several at once are joined with "; " in one epoch ("failed a; join b"),
//                so 1,000 members joining or dying make a few epochs, not 1,000.
//   any waiting member: "restart" once every node of the last epoch has a member
//                znode in state "waiting" (a crashed node's stale "running" znode
//                does not count), then deletes P/shutdown.
// A storage node that joins a running cluster returns from join() once an epoch
// lists it (bounded: 2 session timeouts), like the local driver.
//
// Liveness and the lease: a member is alive while its ephemeral znode exists, i.e.
// until its session expires (the full session timeout after ZooKeeper last heard
// from it) or it closes the session. Every tick (session timeout / 6, 100..1000 ms)
// the driver thread makes one round trip (exists(P/current), which also says the
// latest epoch); lease_until() = the time just before the last successful round trip
// + negotiated session timeout / 2, renewed only after every epoch learned so far
// went out through on_epoch. While ZooKeeper is unreachable the member keeps its
// epoch, makes no change, and its lease lapses after half the timeout; the client
// reconnects by itself. If the session expired, the driver opens a new session,
// reads and delivers the epochs it missed, re-registers ("rejoin") and is listed
// again by the leader: it serves again only after that.
//
// Threads: the ZooKeeper client's own threads run the watcher, which only records
// which part changed and wakes the driver thread (a small mutex and condvar). The
// driver thread makes every zoo_* call of the membership protocol and runs the
// Events callbacks in epoch order. Control calls (format, evict, update_shared, ...)
// make synchronous zoo_* calls on the caller's thread: never call them on a reactor.
// Readers (status, current_epoch, live_members, member_statuses, ...) return the
// driver thread's cached view without a round trip; lease_until() is an atomic load.
//
// Options for many lightweight members (the scale bench): track_members = false
// makes a member watch the member list only while it is the leader or waiting;
// live_members()/member_statuses() then show only itself otherwise.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/membership.h"

typedef struct _zhandle zhandle_t;

namespace kelpie {

class ZookeeperClient;

struct ZookeeperMembershipOptions {
  std::string hosts;  // "HOST:PORT[,HOST:PORT...]"
  std::string root;   // "/kelpie/c1"
  std::chrono::milliseconds session_timeout{10000};
  std::chrono::milliseconds connect_timeout{0};  // 0: min(session_timeout, 10 s)
  size_t epochs_kept = 64;                       // at least 2
  bool track_members = true;
};

// "zookeeper:..." (above) -> options. EINVAL with one line naming the problem.
Result<ZookeeperMembershipOptions> parse_zookeeper_spec(const std::string& spec);

class ZookeeperMembership final : public MembershipDriver {
 public:
  // Touches nothing: connect() or join() connects.
  explicit ZookeeperMembership(ZookeeperMembershipOptions options);
  ~ZookeeperMembership() override;  // stop(), then closes the session
  ZookeeperMembership(const ZookeeperMembership&) = delete;
  ZookeeperMembership& operator=(const ZookeeperMembership&) = delete;

  // Opens the session (waiting up to connect_timeout), makes P's znodes and reads
  // the current epoch and members. ETIMEDOUT "zookeeper HOSTS: no connection within
  // N ms" when the ensemble is unreachable. Called by join() when not connected.
  Status connect();

  // EALREADY when already joined; EINVAL for a zero id; ETIMEDOUT as connect().
  Status join(const MemberInfo& self, Events events) override;
  void leave() override;
  // Stops the driver thread and closes the session: the member znode goes at once.
  void stop() override;

  Result<EpochRecord> format(uint32_t copies, uint32_t min_copies) override;
  Result<EpochRecord> force_recover() override;
  Status request_shutdown() override;
  Status evict(const Uuid& id) override;

  ClusterStatus status() const override;
  std::optional<EpochRecord> current_epoch() const override;
  std::vector<EpochRecord> epoch_history() const override;
  std::vector<MemberInfo> live_members() const override;

  // Blobs up to ~1 MB (ZooKeeper's jute.maxbuffer). ENOTCONN while disconnected.
  Status update_shared(const std::string& name,
                       const std::function<Status(std::string& content)>& change) override;
  Result<std::string> read_shared(const std::string& name) const override;

  void publish_status(const std::string& json) override;
  void publish_status_field(const std::string& key, const std::string& value_json) override;
  std::map<std::string, std::string> member_statuses() const override;

  // "zookeeper:HOSTS/path (session 0x..., connected, timeout N ms)".
  std::string describe() const override;
  // P/shared/<name> with the lock P/locks/<name> (a lock wait is bounded: 60 s).
  std::unique_ptr<DirectoryBacking> directory_backing(const std::string& name) override;
  std::chrono::steady_clock::time_point lease_until() const override { return lease_.until(); }
  uint64_t lease_breaks() const override { return lease_.breaks(); }

  // For tests and the scale bench: the negotiated session timeout (0 before a
  // session), whether this member leads, and the session id (0 when none).
  std::chrono::milliseconds negotiated_timeout() const;
  bool is_leader() const;
  int64_t session_id() const;

 private:
  // Applies `change` to the status parts (mutex_ held) and, if the text changed,
  // wakes the driver thread to write the member record.
  void change_status(const std::function<void()>& change);
  friend class ZookeeperDirectoryBacking;
  enum class Phase { kIdle, kJoining, kAwaitFormat, kWaiting, kRunning };
  struct Member {
    MemberInfo info;
    std::string state;
    std::string request;
    uint64_t seen_epoch = 0;
    std::string status;
    int64_t session = 0;
  };
  struct Current {
    EpochRecord record;
    std::map<Uuid, int64_t> incarnations;
  };
  using EpochMaker = std::function<std::optional<Current>(const std::optional<Current>& last)>;
  // One kept epoch. The newest, and any not delivered yet, keep the whole record
  // (shared with current_ and with delivery, never copied); the others only their
  // header and what changed against the previous epoch, so the history costs
  // O(nodes + changes), not O(nodes x epochs_kept).
  struct PastEpoch {
    std::shared_ptr<const EpochRecord> full;  // null once compacted
    EpochRecord header;                       // the record without its nodes
    // The previous epoch is this one without `added` (by id), plus `removed`.
    std::vector<MemberInfo> added, removed;
    bool has_delta = false;  // the previous entry is epoch - 1 and the delta is valid
  };

  static void on_watch(zhandle_t* handle, int type, int state, const char* path, void* context);
  void note_watch(int type, int state, const std::string& path);

  Status open_session();
  Status ensure_tree();
  void run();
  void tick();
  bool handle_expiry();
  Result<uint64_t> round_trip();
  Status refresh_epochs(uint64_t latest);
  Status reload_current();
  Status refresh_members(bool relist, const std::set<std::string>& dirty);
  // Every member znode now (a round trip per member), for format and force_recover.
  Result<std::map<std::string, Member>> read_members_now() const;
  Result<Member> read_member(const std::string& id, bool watch) const;
  // The leader's beat: whether a running leader that serves epochs beats now.
  bool leader_beat_moved();
  void refresh_marker();
  std::vector<std::string> refresh_shared(bool relist, const std::set<std::string>& dirty);
  Status refresh_election();
  Status register_self(const std::string& state);
  Status write_member();
  Status create_election_node();
  Result<std::optional<Current>> append_epoch(const EpochMaker& make);
  Result<std::optional<Current>> read_current_znode() const;
  void lead();
  Status try_restart();
  void become_running_locked();
  bool wait_for_leader_beat();
  bool wait_listed(std::chrono::milliseconds timeout);
  void load_history() const;
  // History, with mutex_ held: append the new current epoch (trims to epochs_kept);
  // the whole record of entry `index` (shared, or rebuilt from a newer one); drop
  // the whole records no one needs any more.
  void push_history_locked(std::shared_ptr<const EpochRecord> record);
  std::shared_ptr<const EpochRecord> history_record_locked(size_t index) const;
  void compact_history_locked();
  void stop_thread();

  // With mutex_ held.
  bool listed_locked() const;
  bool tracking_locked() const;
  std::string state_name_locked() const;
  std::vector<MemberInfo> live_storage_locked() const;
  std::string member_json_locked() const;

  const ZookeeperMembershipOptions options_;
  const std::string members_dir_, epochs_dir_, election_dir_, shared_dir_, locks_dir_,
      current_path_, leader_path_, marker_path_;
  std::unique_ptr<ZookeeperClient> client_;

  // The watcher's mailbox: what changed since the driver thread last looked.
  std::mutex signal_mutex_;
  std::condition_variable signal_;
  bool members_relist_ = true, shared_relist_ = true, marker_changed_ = true,
       election_changed_ = true, epochs_changed_ = true, session_expired_ = false,
       kick_ = false;
  std::set<std::string> dirty_members_, dirty_shared_;
  uint64_t lock_events_ = 0;
  std::condition_variable lock_signal_;

  mutable std::mutex mutex_;  // guards everything below; never held across a zoo_* call
  Phase phase_ = Phase::kIdle;
  MemberInfo self_{};
  std::string self_id_;
  Events events_;
  // The current epoch: one immutable record shared with history_ and delivery, and
  // its incarnations (updated in place, not copied per epoch).
  std::shared_ptr<const EpochRecord> current_;
  std::map<Uuid, int64_t> incarnations_;
  mutable std::deque<PastEpoch> history_;  // oldest first, at most epochs_kept
  mutable bool history_loaded_ = false;
  uint64_t delivered_epoch_ = 0;
  bool deliver_ = false;
  uint64_t waiting_epoch_ = 0;
  bool leaving_ = false;
  bool ever_listed_ = false;     // listed with this session: a later exclusion rejoins
  bool rejoining_ = false;       // re-registered after a session expiry
  std::map<std::string, Member> members_;
  bool members_known_ = false;
  std::map<std::string, int64_t> shared_versions_;
  bool shared_known_ = false;  // the blobs were listed once: later ones are news
  MemberStatusText status_parts_;
  std::string status_json_ = "{}";  // status_parts_.text()
  bool member_dirty_ = false;
  uint64_t written_seen_epoch_ = 0;
  std::string written_request_;
  bool marker_present_ = false;
  std::string marker_text_, marker_at_join_;
  bool shutdown_seen_ = false, shutdown_delivered_ = false;
  std::string election_node_;  // my P/election child, "" when none
  bool leader_ = false;
  bool swept_ = false;  // the leader compacted epochs/ once since it became leader
  uint64_t beat_ = 0;
  int64_t leader_beat_version_ = -2;  // P/leader's version when last looked at (-1: none)

  std::atomic<bool> stopping_{false};
  bool in_touch_ = true;  // driver thread only: the last round trip succeeded
  // Driver thread only: when the leader first missed a node of the epoch (it appends
  // the failures a settle time later, all in one epoch); none while every node is there.
  std::optional<std::chrono::steady_clock::time_point> failure_noticed_;
  std::chrono::milliseconds settle_{0};  // the wait after failure_noticed_

  DriverLease lease_;
  std::thread thread_;
};

}  // namespace kelpie
