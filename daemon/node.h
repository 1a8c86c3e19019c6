// Node: one kelpied's parts wired together (single node: VDI layer straight onto
// the local store), and its NodeControl face for the admin server.
//
// Contract: open() brings the node up in order (data dir lock, superblock, reactors,
// local store with dirty-log replay, VDI directory, NBD listeners); close() takes it
// down in reverse, flushing every dirty object, so the next start is clean.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_member.h"
#include "daemon/node_control.h"
#include "engine/io_backend.h"
#include "engine/local_store.h"
#include "engine/reactor_pool.h"
#include "engine/superblock.h"
#include "engine/vdi_directory.h"
#include "nbdserver/nbd_server.h"

namespace kelpie {

struct NodeOptions {
  std::string data_dir;
  std::string nbd_tcp = "127.0.0.1:10809";
  std::string nbd_unix;  // default DATA/nbd.sock; "none" disables
  std::string admin_address = "127.0.0.1:7000";
  unsigned threads = 0;  // 0: cores / kelpied processes on this host
  // A reactor polls up to this long for its next event before it sleeps, only
  // while its events come faster (engine/reactor.h); 0 never polls.
  unsigned poll_us = 64;
  // Cluster (issue 3). cluster empty: a single node, no peers.
  std::string cluster;      // "local:/state/dir"
  std::string listen;       // peer address; default unix:DATA/peer.sock
  std::string zone;
  std::string vnodes = "auto";
  bool gateway = false;
  // A storage node refuses new objects (ENOSPC) above this share of its data
  // filesystem (DESIGN.md rule 4); 1 turns it off.
  double full_ratio = 0.95;
  // A storage peer unreachable this long is reported (cluster/peer_reachability.h).
  std::chrono::milliseconds unreachable_timeout{10000};
  // Test-only: KELPIE_TEST_REFUSE_PEERS_FILE (cluster/peer_transport.h).
  std::string test_refuse_peers_file;
};

class Node final : public NodeControl {
 public:
  explicit Node(NodeOptions options);
  ~Node() override;

  Status open();
  void close();

  Result<VdiSummary> create_vdi(const std::string& name, uint64_t size_bytes,
                                uint32_t object_shift) override;
  Status delete_vdi(const std::string& name) override;
  Status resize_vdi(const std::string& name, uint64_t size_bytes) override;
  Result<VdiSummary> vdi_info(const std::string& name) override;
  std::vector<VdiSummary> list_vdis() override;
  NodeSummary node_info() override;
  Result<VdiSummary> snapshot_vdi(const std::string& name, const std::string& tag) override;
  Result<VdiSummary> clone_vdi(const std::string& snapshot, const std::string& new_name) override;
  Result<VdiSummary> rollback_vdi(const std::string& snapshot) override;
  Result<BackupPlan> backup_plan(const std::string& to_snapshot,
                                 const std::string& from_snapshot) override;
  Status set_restored_from(const std::string& name, const std::string& identity) override;

  Result<ClusterSummary> format_cluster(uint32_t copies, uint32_t min_copies) override;
  Result<ClusterSummary> cluster_info() override;
  Result<std::vector<MemberSummary>> list_nodes() override;
  Result<std::vector<RecoverySummary>> recovery_status() override;
  Status kill_node(const std::string& id) override;
  Status shutdown_cluster() override;
  Status recover_force() override;
  Result<CheckReport> check(const std::string& vdi, bool repair) override;

 private:
  VdiSummary summarize(const VdiDirectory::Listed& listed) const;
  // Cluster mode: opens the VDI directory and NBD once the first epoch is known.
  Status open_cluster();
  void serve_when_running();
  void watch_directory();
  Status ready() const;
  // A new generation for a directory operation (on NAME, when given: see
  // VdiDirectory::next_generation(name, held)); 0 on a single node.
  Result<uint64_t> raise_generation(const std::string& name = "");
  Result<ClusterSummary> summarize_cluster() const;

  NodeOptions options_;
  int lock_fd_ = -1;
  int dir_fd_ = -1;
  Superblock superblock_;
  std::vector<std::unique_ptr<Reactor>> reactors_;
  std::vector<std::thread> threads_;
  std::unique_ptr<ReactorPool> pool_;
  std::unique_ptr<UringIoBackend> io_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<VdiDirectory> directory_;
  std::unique_ptr<nbd::NbdServer> nbd_;
  std::chrono::steady_clock::time_point started_;

  std::unique_ptr<ClusterMember> cluster_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> closing_{false};
  std::atomic<bool> cluster_shutdown_{false};
  std::thread startup_;
  std::thread watcher_;

  // One writing gateway per VDI across the cluster (the directory's writer lock).
  class WriterPolicy final : public AttachPolicy {
   public:
    explicit WriterPolicy(Node& node) : node_(node) {}
    Task<Result<std::shared_ptr<Vdi>>> attach(const std::string& name,
                                              std::shared_ptr<Vdi> found) override;
    Task<void> detach(const std::string& name, std::shared_ptr<Vdi> vdi) override;
    // A directory refresh off the reactor (the cluster-wide lock, then the latest
    // document); counted for drain() like an attach.
    Task<Status> sync() override;
    // Waits (bounded) until no attach or detach is in flight. Non-reactor thread.
    void drain();

   private:
    // Counts an attach or detach in flight for drain(), for its whole duration.
    struct InFlight {
      explicit InFlight(std::atomic<int>& count) : count_(count) { count_++; }
      ~InFlight() { count_--; }
      std::atomic<int>& count_;
    };
    std::atomic<int> in_flight_{0};
    Node& node_;
    std::mutex mutex_;
    std::map<std::string, uint32_t> attached_;  // connections per VDI (or snapshot) here
    std::map<std::string, uint32_t> writers_;   // writable ones
  };
  std::unique_ptr<WriterPolicy> writer_policy_;
};

// Reactor count when --threads is not given: the cores shared among the
// kelpied processes on this host (DESIGN.md, Threads).
unsigned default_thread_count();

}  // namespace kelpie
