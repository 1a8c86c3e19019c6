// ClusterMember: one kelpied's cluster parts wired together — membership driver,
// epochs, peer server and client, replica service, recovery and the replicated
// store the VDI layer runs on (DESIGN.md, the layering under Processes).
//
// Contract:
//  - open() (from main, before anything is served) opens the driver named by the
//    spec ("local:/state/dir" or "zookeeper:HOSTS/path", cluster/membership.h),
//    refuses a data directory that belongs to another cluster (EINVAL, one line: the
//    superblock's cluster differs from the driver's current epoch, or the driver holds
//    no formatted cluster), starts the peer server and joins. Epochs then arrive on the driver's
//    thread: each is published to every reactor and starts recovery.
//  - store() is the ObjectStore the VDI layer must use; it waits for an epoch.
//  - close(leave): stops recovery, leaves the cluster (a new epoch) when `leave`,
//    else only stops the heartbeat (whole-cluster shutdown), then stops the server.
//  - check() compares every replica of every object (or of the given VDI ids) by
//    version and content and, with repair, rewrites bad copies from one chosen copy
//    (cluster/replica_resync.h); a repair holds the replicas' writes to each object
//    while it works on it (ResyncHold::kHoldWrites: the VDI may be attached and being
//    written). Control-plane: call from a non-reactor thread.
//  - Rule 4 after an unclean stop: the objects named in this node's dirty logs
//    (LocalStore::unclean_objects()) are resynced cluster-wide from one chosen copy
//    (this node's copy is the suspect; the replicas' writes held as for a repair)
//    once the node serves in an epoch: in the background, those of them this node
//    holds in that epoch, each up to 8 rounds (a round waits for the next epoch or
//    2 s, doubling to 30 s), with one log line giving the counts when it ends.
//  - A storage node refuses new objects above `full_ratio` of its data filesystem
//    (cluster/full_ratio.h), with ENOSPC naming the node.
//  - Unreachable peers (cluster/peer_reachability.h): every call of this node's peer
//    client is recorded; refresh_status() publishes which storage nodes of the epoch
//    have failed every call for `unreachable_timeout` (one log line when one starts
//    being reported), probes those that any member reports failing (a second opinion
//    starts at once), and, when this node is the one to decide, evicts a node that
//    at least two members report (one log line). Gateway-only nodes report too.
//    An evicted node rejoins only once no live member reports it failing any more
//    (Events::may_rejoin; the local driver asks, the zookeeper driver not yet).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/epoch_state.h"
#include "cluster/full_ratio.h"
#include "cluster/membership.h"
#include "cluster/peer_reachability.h"
#include "cluster/peer_transport.h"
#include "cluster/recovery.h"
#include "cluster/replica_service.h"
#include "cluster/replicated_store.h"
#include "cluster/vdi_fences.h"
#include "engine/directory_backing.h"
#include "engine/local_store.h"
#include "engine/superblock.h"

namespace kelpie {

struct ClusterMemberOptions {
  std::string spec;           // "local:/path" or "zookeeper:HOSTS/path"
  std::string listen;         // peer address: "HOST:PORT" or "unix:/path"
  std::string data_dir;
  std::string admin_address;
  std::string nbd_address;
  std::string zone;
  std::string vnodes = "auto";  // "auto" or a number
  bool gateway = false;
  double full_ratio = FullRatio::kDefault;  // kelpied --full-ratio (1: off)
  // A storage peer every call to which failed this long is reported unreachable
  // (kelpied --unreachable-timeout).
  std::chrono::milliseconds unreachable_timeout{10000};
  // Test-only: PeerServer::refuse_peers_while (KELPIE_TEST_REFUSE_PEERS_FILE). Empty: off.
  std::string test_refuse_peers_file;
};

struct ReplicaCheck {
  ObjectId id;
  std::string node;     // uuid
  std::string problem;  // "missing copy", "stale version", "bad checksum", "differs"
  bool repaired = false;
};

struct CheckResult {
  uint64_t objects = 0;
  uint64_t copies = 0;
  std::vector<ReplicaCheck> issues;
};

class ClusterMember {
 public:
  ClusterMember(ClusterMemberOptions options, Superblock& superblock, const ReactorPool& reactors,
                LocalStore* store);
  ~ClusterMember();

  Status open(std::function<void()> on_shutdown);
  void close(bool leave);

  ObjectStore& store() { return *replicated_; }
  ReplicatedStore& replicated() { return *replicated_; }
  MembershipDriver& driver() { return *driver_; }
  EpochState& epochs() { return *epochs_; }
  Recovery* recovery() { return recovery_.get(); }
  // Per-VDI write fences of this node's replica (fed from the VDI directory).
  VdiFences& fences() { return fences_; }
  const ClusterMemberOptions& options() const { return options_; }
  // The VDI directory's home: the driver's directory_backing("vdis.json").
  std::unique_ptr<DirectoryBacking> make_directory_backing() const;
  // Changes when another node changed the VDI directory (compare successive values;
  // cheap: a stat for the local driver, a counter of on_shared_changed otherwise).
  std::string directory_stamp() const;
  static constexpr const char* kDirectoryName = "vdis.json";
  const MemberInfo& self() const { return self_; }

  // Measures what this node stores and publishes it with its recovery progress (for
  // `node list`). Non-reactor thread; cheap (the object list cache).
  void refresh_status();

  // vdis empty: every object.
  Result<CheckResult> check(const std::set<VdiId>& vdis, bool repair);

 private:
  void on_epoch(const EpochRecord& record);
  Task<void> resync_unclean(std::vector<ObjectId> ids);
  // Publishes this node's reachability report, starts probes, evicts if it decides.
  void check_reachability();
  void log_uncorroborated(const EpochRecord& epoch, const EvictionDecision& decision);
  Task<void> probe_peer(Uuid node, std::string address);
  // Events::may_rejoin: not while another member reports this node failing.
  bool may_rejoin();

  ClusterMemberOptions options_;
  Superblock& superblock_;
  const ReactorPool& reactors_;
  LocalStore* local_;
  std::string state_dir_;
  MemberInfo self_;
  std::atomic<bool> cluster_known_{false};
  std::atomic<bool> left_after_failure_{false};
  std::atomic<uint64_t> directory_changes_{0};
  std::unique_ptr<MembershipDriver> driver_;
  std::unique_ptr<EpochState> epochs_;
  std::unique_ptr<PeerReachability> reachability_;  // before peers_: it outlives it
  std::unique_ptr<PeerClient> peers_;
  std::unique_ptr<Recovery> recovery_;
  VdiFences fences_;
  std::unique_ptr<ReplicaService> service_;
  std::unique_ptr<PeerServer> server_;
  std::unique_ptr<ReplicatedStore> replicated_;
  std::unique_ptr<FullRatio> full_ratio_;
  std::atomic<bool> unclean_started_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int> background_{0};
  std::mutex cluster_mutex_;
  Uuid cluster_{};
  // Reachability: probes in flight (any thread), and what the status thread
  // (refresh_status) last did, so that it logs and evicts once per epoch.
  std::mutex probes_mutex_;
  std::set<Uuid> probes_;
  uint64_t evicted_in_epoch_ = 0;
  uint64_t uncorroborated_epoch_ = 0;
  std::map<Uuid, size_t> uncorroborated_logged_;
  std::atomic<bool> rejoin_held_{false};
};

}  // namespace kelpie
