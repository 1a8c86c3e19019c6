// The `local` membership driver: the daemons of one host share a state directory
// (DESIGN.md, "Coordination: epochs and membership drivers"). No external service.
// The contract of every call is MembershipDriver's (cluster/membership.h); this
// header adds what is particular to this driver.
//
// State directory layout:
//   lock                 flock(LOCK_EX) around every compare-and-append of the
//                        epoch log, every shared-blob update and the shutdown
//                        marker; held only for a read, a small write and fsyncs.
//   epochs.log           append-only records: u32 length, u32 crc32c (both
//                        little-endian) of the JSON body, then the JSON of an
//                        EpochRecord (epoch, cluster, copies, min_copies,
//                        created_unix_ms, reason, nodes with every MemberInfo
//                        field). Each append is fsync'd, then its directory. A
//                        torn or corrupt last record is ignored on read and
//                        truncated by the next appender, under the lock.
//   members/<uuid>.json  {"info": MemberInfo, "state": "joining"|"running",
//                        "status": published status text}; written by its owner
//                        only, atomically (temp file, fsync, rename).
//   members/<uuid>.hb    8-byte counter the member's driver thread pwrites every
//                        half heartbeat_interval.
//   shared/<name>        a shared blob: u64 change counter (little-endian), then
//                        the content; replaced atomically (temp, fsync, rename,
//                        fsync dir). Names starting with '.' are temp files.
//   shutdown             marker written by request_shutdown(): a random id.
//
// Liveness: an observer notes when IT last saw a member's counter change, on its own
// steady clock; the member is alive while that was less than failure_timeout ago,
// dead after. A member first seen (or seen again after the observer itself stalled
// for more than half the timeout, e.g. SIGSTOP) is neither until its counter moves
// or the timeout passes. Worst-case detection: failure_timeout + heartbeat_interval.
//
// Epoch changes (each a compare-and-append: the maker re-reads the last record
// under the lock and does nothing when another member already made the change):
//   "format"          format(): every live storage member; new cluster uuid.
//   "join <uuid>"     a storage node joining a running cluster, always (a restarted
//                     node is resynced), or one that joined before format and was
//                     not in epoch 1.
//   "leave <uuid>"    leave() of a storage node of the current epoch.
//   "failed <uuid>"   a live running member of the current epoch (or a gateway)
//                     saw a node of the current epoch dead, and its counter has
//                     not moved when re-read under the lock. Never while the
//                     shutdown marker exists, and never down to an empty epoch.
//   "evicted <uuid>"  evict().
//   "rejoin <uuid>"   a running storage member (joined, not leaving or stopped, no
//                     shutdown marker) that the current epoch does not list (it was
//                     failed while hung, or evicted), once: it was told every epoch up
//                     to the last (on_epoch: it learns it is out), its own heartbeat
//                     has been written for heartbeat_interval since its last stall,
//                     and it saw every node of that epoch alive and "running" (none
//                     waiting after a full stop). The last epoch's nodes plus itself.
//   "restart"         after a full stop (no member of the last epoch alive and
//                     running at join, or the shutdown marker present): the same
//                     nodes, made once every one of them is alive again. Clears
//                     the shutdown marker.
//   "recover"         force_recover(): the storage members alive now. Clears it too.
// Gateways are members but are never in an epoch and never cause one.
//
// Threads: one driver thread per instance writes the heartbeat, scans members,
// the log, the blobs and the marker every heartbeat_interval / 2, acts on them and
// runs the Events callbacks. Callbacks must not call join/leave/stop. Every other
// call is thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/membership.h"

namespace kelpie {

struct LocalMembershipOptions {
  std::string state_dir;
  std::chrono::milliseconds heartbeat_interval{250};
  // Must exceed 2 * heartbeat_interval.
  std::chrono::milliseconds failure_timeout{1500};
};

class LocalMembership final : public MembershipDriver {
 public:
  // Touches no file: the state directory must exist before join() (open_membership
  // creates it); the epoch log is read when it exists.
  explicit LocalMembership(LocalMembershipOptions options);
  ~LocalMembership() override;  // stop()
  LocalMembership(const LocalMembership&) = delete;
  LocalMembership& operator=(const LocalMembership&) = delete;

  // EALREADY when already joined; EINVAL for a zero id. Returns once the liveness of
  // the last epoch's nodes is known (up to failure_timeout when some are dead) and,
  // for a storage node joining a running cluster, its join epoch is durable.
  Status join(const MemberInfo& self, Events events) override;
  void leave() override;
  void stop() override;

  // EINVAL unless joined, or for copies 0 or min_copies outside 1..copies.
  Result<EpochRecord> format(uint32_t copies, uint32_t min_copies) override;
  // EINVAL unless this member is waiting; ENODEV when no storage member is alive.
  Result<EpochRecord> force_recover() override;
  Status request_shutdown() override;
  // EINVAL when unformatted or when it would leave the epoch empty; ENOENT when
  // the current epoch does not list `id`.
  Status evict(const Uuid& id) override;

  ClusterStatus status() const override;
  std::optional<EpochRecord> current_epoch() const override;
  std::vector<EpochRecord> epoch_history() const override;
  std::vector<MemberInfo> live_members() const override;

  // Names: 1..200 bytes, no '/', not starting with '.'. EINVAL otherwise.
  // read_shared of a blob never written: ENOENT (update_shared sees "").
  Status update_shared(const std::string& name,
                       const std::function<Status(std::string& content)>& change) override;
  Result<std::string> read_shared(const std::string& name) const override;

  // Stored in this member's file at the next heartbeat tick.
  void publish_status(const std::string& json) override;
  void publish_status_field(const std::string& key, const std::string& value_json) override;
  std::map<std::string, std::string> member_statuses() const override;

  std::string describe() const override;
  // The file `name` in the state directory (not under shared/), with an flock on
  // "<name>.lock" beside it: make_file_directory_backing(state_dir, name, true).
  std::unique_ptr<DirectoryBacking> directory_backing(const std::string& name) override;
  // Renewed at the end of every tick whose heartbeat write succeeded: the time just
  // before that write plus failure_timeout / 2.
  std::chrono::steady_clock::time_point lease_until() const override { return lease_.until(); }
  uint64_t lease_breaks() const override { return lease_.breaks(); }

 private:
  enum class Phase { kIdle, kJoining, kAwaitFormat, kWaiting, kRunning };
  struct Observed {
    uint64_t counter = 0;
    std::chrono::steady_clock::time_point last_change;
    bool seen_change = false;
  };
  struct MemberFile {
    MemberInfo info;
    std::string state;
    std::string status;
  };
  using EpochMaker =
      std::function<std::optional<EpochRecord>(const std::optional<EpochRecord>& last)>;

  void run();
  void tick();
  Result<std::optional<EpochRecord>> append_epoch(const EpochMaker& make, bool clear_marker);
  Status become_running(bool always_join);
  Status append_join();
  Status maybe_rejoin();
  Status try_restart();
  void wait_for_liveness(bool last_epoch_only);
  void stop_thread();

  // With mutex_ held.
  Status refresh_log_locked(int truncate_fd = -1) const;
  void scan_members_locked(std::chrono::steady_clock::time_point now);
  std::vector<std::string> scan_shared_locked(bool notify);
  void scan_marker_locked();
  Status write_member_file_locked();
  bool alive_locked(const std::string& id, std::chrono::steady_clock::time_point now) const;
  bool dead_locked(const std::string& id, std::chrono::steady_clock::time_point now) const;
  bool listed_locked() const;
  // Re-reads `id`'s counter: true (and noted) when it moved since the last scan.
  bool heartbeat_moved_locked(const std::string& id, std::chrono::steady_clock::time_point now);
  bool rejoin_ready_locked(std::chrono::steady_clock::time_point now) const;
  std::vector<MemberInfo> live_storage_locked() const;

  const LocalMembershipOptions options_;
  const std::string lock_path_, log_path_, members_dir_, shared_dir_, marker_path_;

  mutable std::mutex mutex_;  // guards everything below
  Phase phase_ = Phase::kIdle;
  MemberInfo self_{};
  std::string self_id_;
  Events events_;
  mutable std::vector<EpochRecord> epochs_;
  mutable uint64_t log_offset_ = 0;
  mutable bool log_error_logged_ = false;
  uint64_t waiting_epoch_ = 0;   // the last epoch when this member started waiting
  bool need_join_epoch_ = false;
  bool leaving_ = false;  // leave() began: no rejoin epoch any more
  std::map<std::string, MemberFile> members_;
  std::map<std::string, Observed> observed_;
  std::map<std::string, uint64_t> shared_versions_;
  MemberStatusText status_parts_;
  std::string status_json_ = "{}";  // status_parts_.text()
  bool status_dirty_ = false;
  bool marker_present_ = false;
  std::string marker_at_join_;
  bool shutdown_seen_ = false;
  bool shutdown_delivered_ = false;
  bool deliver_ = false;
  uint64_t delivered_epoch_ = 0;
  uint64_t scans_ = 0;
  std::optional<std::chrono::steady_clock::time_point> last_tick_;
  // Since when this member's heartbeat has been written at every tick (none after a
  // stall or a failed write).
  std::optional<std::chrono::steady_clock::time_point> heartbeat_since_;
  bool stopping_ = false;
  std::condition_variable wake_;

  // Owned by the driver thread once it runs.
  int heartbeat_fd_ = -1;
  uint64_t heartbeat_counter_ = 0;
  // lease_until() as steady-clock nanoseconds since its epoch.
  DriverLease lease_;
  std::thread thread_;
};

}  // namespace kelpie
