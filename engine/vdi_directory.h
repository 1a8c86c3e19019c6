// VdiDirectory: name -> VDI for one node, kept in the data directory.
//
// Contract:
//  - Control-plane calls (open, create, remove, resize) are synchronous and must be
//    made from non-reactor threads; they run their I/O on reactor 0. find() and
//    list() may be called from anywhere (a short mutex, never held across I/O).
//  - The directory file "vdis.json" is rewritten atomically after the new inode is
//    durable (target before pointer). VDI ids come from a persistent counter and are
//    never reused.
//  - remove() and shrinking resize() refuse with EBUSY while the VDI is attached.
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
  VdiDirectory(std::string data_dir, ObjectStore& store, const ReactorPool& reactors);

  Status open();
  Result<std::shared_ptr<Vdi>> create(const std::string& name, uint64_t size_bytes,
                                      uint32_t object_shift);
  Status remove(const std::string& name);
  Status resize(const std::string& name, uint64_t size_bytes);
  std::shared_ptr<Vdi> find(const std::string& name) const;
  std::vector<std::shared_ptr<Vdi>> list() const;

 private:
  Status save_locked();
  static Status validate_size(uint64_t size_bytes, uint32_t object_shift);

  std::string data_dir_;
  ObjectStore& store_;
  const ReactorPool& reactors_;
  mutable std::mutex mutex_;
  std::mutex control_mutex_;  // one control operation at a time
  std::map<std::string, std::shared_ptr<Vdi>> vdis_;
  VdiId next_id_ = 1;
};

}  // namespace kelpie
