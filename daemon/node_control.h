// NodeControl: the control-plane face of a running kelpied, used by the admin server.
//
// Contract:
//  - Every method is synchronous and may be called from any non-reactor thread
//    (the admin server's); implementations hop onto a reactor internally.
//  - Failures are Status values whose code is an errno and whose message is one
//    line fit for a user ("VDI 'x' not found", "VDI 'x' already exists", ...):
//      ENOENT  unknown VDI            EEXIST  VDI exists
//      EINVAL  bad name/size/object size (message says which)
//      EBUSY   VDI attached (delete/shrink refused)   ENOSPC  out of space
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace kelpie {

struct VdiSummary {
  std::string name;
  uint32_t id = 0;
  uint64_t size_bytes = 0;
  uint32_t object_size_bytes = 0;
  uint64_t allocated_objects = 0;  // objects the map references
  uint64_t used_bytes = 0;         // allocated_objects * object size
  int64_t created_unix_s = 0;
  uint32_t attached_connections = 0;  // open NBD connections to this VDI
  // Lifecycle (snapshots and clones). A snapshot's name is "NAME@TAG".
  std::string tag;               // empty for a writable VDI
  bool read_only = false;        // true for snapshots
  uint32_t parent_id = 0;        // the snapshot this VDI or snapshot was made from (0 = none)
  uint32_t family_id = 0;        // root VDI id of the clone family
  uint64_t own_bytes = 0;        // objects this VDI owns (written since its parent)
  uint64_t shared_bytes = 0;     // objects it references that an ancestor owns
  std::string restored_from;     // backup identity last restored into this VDI, "" if none
  uint32_t object_count = 0;     // objects in the logical size
};

// What `vdi backup` needs: the changed extents of snapshot `to` since snapshot `from`.
struct BackupPlan {
  std::string to_identity;    // "<node uuid>:<vdi id>" of the snapshot, unique forever
  std::string from_identity;  // "" for a full backup
  uint64_t size_bytes = 0;
  uint32_t object_size_bytes = 0;
  // Byte ranges [offset, offset+length) whose content must be sent (object granularity,
  // merged, clipped to the size). A full backup lists every allocated object.
  std::vector<std::pair<uint64_t, uint64_t>> extents;
};

struct NodeSummary {
  std::string version;       // kelpied version string
  std::string node_uuid;
  std::string data_dir;
  std::string nbd_tcp;       // "127.0.0.1:10809", empty if disabled
  std::string nbd_unix;      // socket path, empty if disabled
  std::string admin_address; // "127.0.0.1:7000"
  unsigned threads = 0;      // reactor threads
  uint32_t format_version = 0;
  uint64_t capacity_bytes = 0;  // of the data directory's filesystem
  uint64_t free_bytes = 0;
  uint64_t objects = 0;         // object files held (object list cache)
  uint32_t vdi_count = 0;
  uint32_t nbd_connections = 0;
  uint64_t uptime_s = 0;
};

// Cluster views (issue 3). A node started without --cluster answers ENOTSUP
// ("this node is not part of a cluster (started without --cluster)").
struct EpochSummary {
  uint64_t epoch = 0;
  int64_t created_unix_ms = 0;
  std::string reason;               // "format", "join <uuid>", "failed <uuid>", ...
  std::vector<std::string> nodes;   // storage node uuids of that epoch
};

struct ClusterSummary {
  std::string driver;        // "local:/path/to/state"
  std::string status;        // "unformatted", "waiting", "running", "shutdown"
  std::string cluster_uuid;  // "" before format
  uint64_t epoch = 0;
  uint32_t copies = 0;
  uint32_t min_copies = 0;
  uint32_t zones = 0;        // zones in the current epoch
  uint32_t storage_nodes = 0;
  uint32_t gateways = 0;     // live gateway-only members
  std::vector<std::string> warnings;  // e.g. "only 2 zones: objects keep 2 of 3 copies"
  std::vector<EpochSummary> history;  // oldest first
};

struct MemberSummary {
  std::string id;            // node uuid
  std::string address;       // peer address
  std::string nbd_address;
  std::string admin_address;
  std::string zone;          // "" = its own zone
  uint32_t vnodes = 0;
  bool gateway = false;
  std::string status;        // "up", "down" (in the epoch but not alive), "gateway"
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;   // bytes of object files it holds
  uint64_t objects = 0;
};

struct RecoverySummary {
  std::string node;          // node uuid
  uint64_t epoch = 0;        // the epoch it is recovering to (or has recovered)
  std::string state;         // "listing", "recovering", "incomplete", "done"
  uint64_t to_recover = 0;   // objects it must pull in this epoch
  uint64_t done = 0;
  // Objects it must hold whose newest copy may be only on nodes absent from this
  // epoch (DESIGN.md rule 2): their reads and writes fail with EIO; state "incomplete".
  uint64_t unavailable = 0;
  double rate_mib_s = 0;     // over the last few seconds
};

struct CheckIssue {
  std::string object;        // hex object id
  std::string vdi;           // owning VDI name ("" if unknown)
  std::string node;          // the replica concerned ("" when about the object)
  std::string problem;       // "missing copy", "stale version", "bad checksum", "differs"
  bool repaired = false;
};

struct CheckReport {
  uint64_t objects_checked = 0;
  uint64_t copies_checked = 0;
  uint64_t repaired = 0;
  std::vector<CheckIssue> issues;
};

class NodeControl {
 public:
  virtual ~NodeControl() = default;
  // object_shift: log2 of the object size, 20..26 (1..64 MiB).
  virtual Result<VdiSummary> create_vdi(const std::string& name, uint64_t size_bytes,
                                        uint32_t object_shift) = 0;
  virtual Status delete_vdi(const std::string& name) = 0;
  virtual Status resize_vdi(const std::string& name, uint64_t size_bytes) = 0;
  virtual Result<VdiSummary> vdi_info(const std::string& name) = 0;
  virtual std::vector<VdiSummary> list_vdis() = 0;
  virtual NodeSummary node_info() = 0;

  // Lifecycle. `name` may be "NAME" (the writable VDI) or "NAME@TAG" (a snapshot) where
  // the comment says so. Errors: ENOENT unknown VDI/snapshot, EEXIST duplicate tag or
  // name, EINVAL bad name/tag or "not a snapshot", EBUSY attached (rollback).
  // Freezes NAME's current contents as NAME@TAG (tag empty: the next free number);
  // works while NBD clients write to NAME. Returns the snapshot.
  virtual Result<VdiSummary> snapshot_vdi(const std::string& name, const std::string& tag) = 0;
  // A new writable VDI sharing the snapshot's data until written.
  virtual Result<VdiSummary> clone_vdi(const std::string& snapshot, const std::string& new_name) = 0;
  // NAME's contents become the snapshot's (NAME gets a new id). NAME must be detached.
  virtual Result<VdiSummary> rollback_vdi(const std::string& snapshot) = 0;
  // delete_vdi() accepts "NAME@TAG" to delete one snapshot; "NAME" deletes NAME and all of
  // its snapshots. Objects no remaining VDI or snapshot references are reclaimed.
  // list_vdis() lists snapshots too (tag set, read_only true).
  virtual Result<BackupPlan> backup_plan(const std::string& to_snapshot,
                                         const std::string& from_snapshot) = 0;
  // Records the identity of the stream just restored into NAME (checked by the next
  // differential restore).
  virtual Status set_restored_from(const std::string& name, const std::string& identity) = 0;

  // Cluster (ENOTSUP without --cluster).
  // EEXIST if formatted; EINVAL for copies outside 1..8 or min_copies outside 1..copies.
  virtual Result<ClusterSummary> format_cluster(uint32_t copies, uint32_t min_copies) = 0;
  virtual Result<ClusterSummary> cluster_info() = 0;
  virtual Result<std::vector<MemberSummary>> list_nodes() = 0;
  virtual Result<std::vector<RecoverySummary>> recovery_status() = 0;
  // id: a full node uuid or a unique prefix (ENOENT / EINVAL "ambiguous").
  virtual Status kill_node(const std::string& id) = 0;
  virtual Status shutdown_cluster() = 0;
  // Ends "waiting" after a full stop with the nodes alive now.
  virtual Status recover_force() = 0;
  // vdi "" = every object of the cluster. repair: rewrite bad, stale and missing
  // copies from the newest good one.
  virtual Result<CheckReport> check(const std::string& vdi, bool repair) = 0;
};

}  // namespace kelpie
