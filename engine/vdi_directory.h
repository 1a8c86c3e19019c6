// VdiDirectory: names, snapshots and clones of one node, kept in the data directory.
//
// Contract:
//  - Control-plane calls are synchronous, serialized, and made from non-reactor
//    threads; their I/O runs on reactor 0. find() and list() may be called from
//    anywhere (a short mutex, never held across I/O).
//  - "vdis.json" is rewritten atomically after what it names is durable (target
//    before pointer). VDI ids come from a persistent counter and are never reused;
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

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/object_store.h"
#include "engine/reactor_pool.h"
#include "engine/vdi.h"

namespace kelpie {

class VdiDirectory {
 public:
  struct Listed {
    std::string name;  // "NAME" or "NAME@TAG"
    std::shared_ptr<Vdi> vdi;
    std::string restored_from;
  };

  VdiDirectory(std::string data_dir, ObjectStore& store, const ReactorPool& reactors);

  Status open();
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
  };
  struct Reclaim {
    VdiId id;
    VdiId family;
  };

  Status save_locked();
  Status reclaim_pending();
  // Frees target's unreferenced objects; returns how many it had to keep.
  Task<Result<size_t>> reclaim_one(Reclaim target, std::vector<std::shared_ptr<Vdi>> live);
  void requeue_retained_locked(VdiId family);
  Result<std::shared_ptr<Vdi>> load_vdi(VdiId id, VdiId family, bool read_only);
  Result<std::shared_ptr<Vdi>> make_head_from(const Vdi& snapshot, const std::string& name);
  std::shared_ptr<Vdi> find_locked(const std::string& name) const;
  static Status validate_size(uint64_t size_bytes, uint32_t object_shift);

  std::string data_dir_;
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
