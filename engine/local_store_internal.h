// Internals of LocalStore, shared by the two files that implement it; include from
// nowhere else (the public contract is local_store.h).
//  - local_store.cc: start-up and shutdown, the object lifecycle (open fds, LRU,
//    dirty log), holding objects, and the data path (read, write, zero, remove,
//    create_from, flush).
//  - local_store_versions.cc: versions and the fence, the object list cache, and the
//    calls that serve recovery, `cluster check` and old-copy removal (stat_object ...
//    install, sync_object, remove_old_copy).
//
// Contract: an Object and the Shard that holds it are touched only on that shard's
// reactor (LocalStore::owner()); nothing here locks. An Object is used only while
// pinned (pins > 0, see LocalStore::Hold); `gone` means removed or evicted, so a
// caller that finds it set acquires the object again.
#pragma once

#include <list>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/status.h"
#include "engine/dirty_log.h"
#include "engine/local_store.h"
#include "engine/range_lock.h"
#include "engine/reactor.h"
#include "engine/reactor_pool.h"
#include "engine/sync.h"
#include "engine/task.h"

namespace kelpie {

struct LocalStore::Object {
  ObjectId id;
  int fd = -1;
  uint32_t object_size = 0;
  std::vector<uint32_t> crcs;  // one per 4 KiB block, 0 = never written
  ObjectVersion header_version;  // as load() found it (seeds the list cache if needed)
  RangeLock lock;
  Event ready;
  Status open_status;
  bool gone = false;  // removed or evicted: re-acquire
  int pins = 0;
  std::list<Object*>::iterator lru_pos;
};

struct LocalStore::Shard {
  Reactor* reactor = nullptr;
  std::unordered_map<ObjectId, ObjectRef, ObjectIdHash> objects;
  std::list<Object*> lru;  // front = least recently used
  // Objects with unsynced writes -> whether their dirty-log record is durable yet.
  std::unordered_map<ObjectId, bool, ObjectIdHash> dirty;
  Event logged;
  bool dir_dirty = false;
  int dir_fd = -1;  // objects/, synced when entries were created or removed
  AsyncMutex flush_mutex;
  std::unique_ptr<DirtyLog> log;
  size_t max_open = 1024;
  // fdatasyncs of evicted dirty objects still running: those objects left `dirty`
  // when their sync began, so a flush waits for these instead, and fails with them.
  struct EvictionSync {
    Event done;
    Status status;
  };
  std::vector<std::shared_ptr<EvictionSync>> eviction_syncs;
  // The object list cache: every object of this shard on disk, whether open or not.
  // `version` follows what was written to the header; `fence_generation` is the
  // highest generation admitted (raised before the data lands, kept across creates
  // and installs; in memory only).
  struct Listed {
    ObjectVersion version;
    uint32_t object_size = 0;
    uint64_t fence_generation = 0;
  };
  std::unordered_map<ObjectId, Listed, ObjectIdHash> listed;
};

namespace local_store_internal {

// Logs a failed object I/O (`what`: "read", "write", ...) and returns `st` unchanged.
inline Status io_failure(const Status& st, const ObjectId& id, const char* what) {
  KELPIE_LOG_ERROR("object {}: {} failed: {}", id.to_hex(), what, st.to_string());
  return st;
}

}  // namespace local_store_internal
}  // namespace kelpie
