// Internals of ReplicatedStore shared by replicated_store.cc (the data path) and
// replicated_store_resync.cc (rule 4: settling objects after a failed update);
// include from nowhere else (the contract is replicated_store.h).
//
// Everything here is touched only on the owner reactor of the object it is about
// (ReactorPool::owner), one Shard per reactor: nothing locks.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "cluster/replicated_store.h"
#include "engine/range_lock.h"
#include "engine/sync.h"

namespace kelpie {

// An object with updates in flight (or waiting), or being settled.
struct ReplicatedStore::Entry {
  RangeLock lock;
  uint32_t users = 0;     // updates and settles that use the entry (it lives while > 0)
  uint32_t active = 0;    // updates holding a range of `lock`
  bool settling = false;  // a settle runs or waits: new updates wait for it
  Event changed;          // pulsed when `active` drops or `settling` ends
};

// An object whose replicas may differ, waiting for a background settle.
struct ReplicatedStore::Unsynced {
  bool undo_create = false;        // a failed create: remove it everywhere
  uint64_t generation = 0;         // of the update that failed (its attach's)
  std::vector<Uuid> suspects;      // nodes whose update failed
  std::optional<Uuid> chosen;      // the copy the last resync chose (reads go there)
  unsigned attempts = 0;
  std::chrono::steady_clock::time_point next_try{};
};

struct ReplicatedStore::Shard {
  std::unordered_map<ObjectId, std::unique_ptr<Entry>, ObjectIdHash> objects;
  std::unordered_map<ObjectId, Unsynced, ObjectIdHash> unsynced;
  bool retrying = false;  // retry_loop runs
  // Nodes that refused a create for space (ENOSPC), until when creates whose replica
  // set holds them are refused here before anything is sent — unless this gateway
  // removed an object since (`removals` moved on: space may be free again).
  struct FullMark {
    std::chrono::steady_clock::time_point until;
    uint64_t removals = 0;
  };
  std::map<Uuid, FullMark> full_until;
};

inline void pulse(Event& event) {
  event.set();
  event.reset();
}

}  // namespace kelpie
