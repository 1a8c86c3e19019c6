// VdiDirectory: names, snapshots and clones of one node, kept in the data directory.
//
// Contract:
//  - Control-plane calls are synchronous, serialized, and made from non-reactor
//    threads; their I/O runs on reactor 0. find() and list() may be called from
//    anywhere (a short mutex, never held across I/O).
//  - The document ("vdis.json" on one node; shared state in a cluster, see
//    DirectoryBacking) is rewritten atomically after what it names is durable
//    (target before pointer). Every control operation first reconciles the latest
//    document, so operations made on other nodes are seen. VDI ids come from a persistent counter and are never reused;
//    rollback and clone make new ids.
//  - Snapshot works while NBD clients write: the head's writes are stopped and
//    drained (WriteGate), the head continues under a new id, and the old id is frozen.
//  - Deleting a VDI or snapshot records its id for reclaim before anything is
//    removed; reclaim frees the objects that no remaining VDI or snapshot of the
//    family references, and resumes after a restart.
//  - remove(), rollback() and shrinking resize() refuse with EBUSY while attached.
//  - A cluster keeps its directory with the membership service instead; this class
//    is the single-node implementation of that role.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/directory_backing.h"
#include "engine/object_store.h"
#include "engine/reactor_pool.h"
#include "engine/vdi.h"

namespace kelpie {

// How NBD attaches are admitted (a cluster: one writing gateway per VDI, recorded in
// the directory). Called on the connection's reactor; an error refuses the attach
// with its message. Without a policy every attach is admitted.
class AttachPolicy {
 public:
  virtual ~AttachPolicy() = default;
  // Returns the VDI object the connection must use (`found`, or a fresher one), with
  // its `attached` count already raised (the connection lowers it when it ends).
  virtual Task<Result<std::shared_ptr<Vdi>>> attach(const std::string& name,
                                                    std::shared_ptr<Vdi> found) = 0;
  virtual Task<void> detach(const std::string& name, std::shared_ptr<Vdi> vdi) = 0;
  // Returns once this node's directory reflects every control operation that
  // completed anywhere before the call (read-your-writes: a VDI another node just
  // reported created or snapshotted is found here). The NBD server calls it once per
  // option that looks an export up or lists them; an error fails that option.
  virtual Task<Status> sync() = 0;
};

class VdiDirectory {
 public:
  struct Listed {
    std::string name;  // "NAME" or "NAME@TAG"
    std::shared_ptr<Vdi> vdi;
    std::string restored_from;
  };

  // One node: "vdis.json" in data_dir.
  VdiDirectory(std::string data_dir, ObjectStore& store, const ReactorPool& reactors);
  // Anywhere else (a cluster keeps it in shared state, ordered cluster-wide).
  VdiDirectory(std::unique_ptr<DirectoryBacking> backing, ObjectStore& store,
               const ReactorPool& reactors);

  Status open();
  // Picks up changes other nodes made (after a change notice). Non-reactor thread.
  Status refresh();
  // A new writer generation: a cluster-wide counter, raised by every caller, so a
  // later writer's object versions are above every earlier writer's.
  Result<uint64_t> next_generation();
  // The same, for a control operation on NAME made by the node that writes it: if
  // NAME's write attach is this node's with generation `held`, the attach's
  // generation becomes the new one in the same document write (regranted = true),
  // so the objects the operation writes and the attach's later writes agree.
  struct Raised {
    uint64_t generation = 0;
    bool regranted = false;
  };
  Result<Raised> next_generation(const std::string& name, uint64_t held);
  // Whether the directory, brought up to date first, still names this node as the
  // writer of the VDI whose head is `head`, with attach generation `generation`
  // (false once another node took it over, it was detached, deleted, or its head
  // changed elsewhere). Non-reactor thread.
  Result<bool> writer_holds(VdiId head, uint64_t generation);

  // Cluster attach bookkeeping. `self` is this node's id; `alive(id)` says whether a
  // node is a live member. A VDI whose writer is another live node refuses snapshot,
  // rollback, delete and resize here with EBUSY naming that node.
  void set_cluster_identity(std::string self, std::function<bool(const std::string&)> alive);
  void set_attach_policy(AttachPolicy* policy) { attach_policy_ = policy; }
  // Told (head id, attach generation) of every VDI whose writer_generation is set,
  // each time this node reads a new version of the document or writes one, before
  // the control operation that read or wrote it goes on (a cluster's replicas fence old writers with it,
  // cluster/vdi_fences.h). Set before open().
  using WritersListener = std::function<void(const std::vector<std::pair<VdiId, uint64_t>>&)>;
  void set_writers_listener(WritersListener listener) { writers_listener_ = std::move(listener); }
  AttachPolicy* attach_policy() const { return attach_policy_; }
  // Records this node as NAME's writer with a new generation (returned; the VDI's
  // attach generation, kept in the document). EBUSY if another live node is its writer.
  // Call it only while this process holds no write attach of NAME. took_over
  // (optional) is set when a writer is still recorded: another node that is dead now,
  // or this node in an earlier run that stopped without detaching (a crash); its last
  // writes may have reached only some replicas (rule 4).
  Result<uint64_t> lock_writer(const std::string& name, bool* took_over = nullptr);
  // Ends this node's write attach of NAME. With `unsettled` (objects this node wrote
  // may still differ between replicas), the writer stays recorded, marked unsettled: it
  // no longer blocks other nodes, and the next write attach anywhere is a takeover that
  // resyncs the VDI first.
  Status unlock_writer(const std::string& name, bool unsettled = false);
  // VDIs recorded as attached for writing by a live node: (name, node).
  std::vector<std::pair<std::string, std::string>> live_writers() const;
  // NAME (or NAME@TAG) for a new NBD connection of this node, pinned (its `attached`
  // count raised) in the same control step, so no reconcile swaps it out. With
  // fresh, and no connection of this node attached, it is first loaded afresh from
  // its inode and maps: in a cluster another node may have written it since.
  Result<std::shared_ptr<Vdi>> attach_local(const std::string& name, bool fresh);
  Result<std::shared_ptr<Vdi>> create(const std::string& name, uint64_t size_bytes,
                                      uint32_t object_shift);
  // tag empty: the next free number.
  Result<Listed> snapshot(const std::string& name, const std::string& tag);
  Result<Listed> clone(const std::string& snapshot, const std::string& new_name);
  Result<Listed> rollback(const std::string& snapshot);
  // "NAME" removes the VDI and its snapshots, "NAME@TAG" one snapshot.
  Status remove(const std::string& name);
  Status resize(const std::string& name, uint64_t size_bytes);
  Status set_restored_from(const std::string& name, const std::string& identity);

  // Byte extents where snapshot `to` differs from snapshot `from` ("" = every
  // allocated object of `to`), at object granularity, merged.
  Result<std::vector<std::pair<uint64_t, uint64_t>>> changed_extents(const std::string& to,
                                                                     const std::string& from);

  std::shared_ptr<Vdi> find(const std::string& name) const;
  Result<Listed> lookup(const std::string& name) const;
  std::vector<Listed> list() const;
  // Ids deleted but not yet reclaimed (for tests and `node info`).
  size_t pending_reclaims() const;

 private:
  struct Entry {
    std::shared_ptr<Vdi> head;
    std::vector<std::shared_ptr<Vdi>> snapshots;  // oldest first
    std::string restored_from;
    std::string writer;  // node attached for writing ("" = none; clusters only)
    uint64_t writer_generation = 0;  // the generation of the last write attach granted
    bool writer_unsettled = false;   // detached with objects unsettled (unlock_writer)
  };
  // EBUSY when another live node writes `entry`.
  Status check_not_written_elsewhere(const std::string& name, const Entry& entry) const;
  struct Reclaim {
    VdiId id;
    VdiId family;
  };

  // One control operation: the control mutex, the backing's lock, and the latest
  // document reconciled into memory.
  class Control {
   public:
    explicit Control(VdiDirectory& directory);
    ~Control();
    const Status& status() const { return status_; }

   private:
    VdiDirectory& directory_;
    std::lock_guard<std::mutex> control_;
    bool locked_ = false;
    Status status_;
  };

  Status reconcile(const std::string& text);
  // Replaces the cached object of `text` by one loaded afresh (control held).
  Result<std::shared_ptr<Vdi>> reload_locked(const std::string& text);
  Status save_locked();
  // Calls the writers listener with the grants in document `text` (control held).
  void publish_writers(const std::string& text);
  Status reclaim_pending();
  // Frees target's unreferenced objects; returns how many it had to keep.
  Task<Result<size_t>> reclaim_one(Reclaim target, std::vector<std::shared_ptr<Vdi>> live);
  void requeue_retained_locked(VdiId family);
  Result<std::shared_ptr<Vdi>> load_vdi(VdiId id, VdiId family, bool read_only);
  Result<std::shared_ptr<Vdi>> make_head_from(const Vdi& snapshot, const std::string& name);
  std::shared_ptr<Vdi> find_locked(const std::string& name) const;
  static Status validate_size(uint64_t size_bytes, uint32_t object_shift);

  std::unique_ptr<DirectoryBacking> backing_;
  std::string loaded_text_;  // the document entries_ reflects
  uint64_t serial_ = 0;
  uint64_t generation_ = 0;
  std::string self_node_;
  std::function<bool(const std::string&)> alive_;
  AttachPolicy* attach_policy_ = nullptr;
  WritersListener writers_listener_;
  bool writers_published_ = false;
  std::string published_text_;  // the document last published (control held)
  ObjectStore& store_;
  const ReactorPool& reactors_;
  mutable std::mutex mutex_;
  std::mutex control_mutex_;  // one control operation at a time
  std::map<std::string, Entry> entries_;
  std::vector<Reclaim> reclaims_;
  // Deleted ids whose objects other members still shared at their last reclaim;
  // reclaimed again whenever another member of their family is deleted.
  std::vector<Reclaim> retained_;
  VdiId next_id_ = 1;
};

// Splits "NAME@TAG"; tag is empty when there is no '@'.
std::pair<std::string, std::string> split_snapshot_name(const std::string& text);

}  // namespace kelpie
