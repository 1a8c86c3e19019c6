// DirtyLog: the per-shard log of objects that may hold unsynced writes.
//
// Rule 4 of DESIGN.md, on one node: before the first write to an object since its
// last sync, its id is appended here and the log is made durable (group commit:
// one fdatasync covers every object that became dirty meanwhile). After an unclean
// stop, exactly the logged objects can have data and checksums that disagree (a
// write in flight, or power lost before FLUSH); recovery re-verifies only those.
// The log is emptied when its shard has no dirty object left.
//
// Record (32 bytes, little-endian): object id (16), object size (4), zero (8),
// crc32c of the first 28 bytes (4). Reading stops at the first bad record.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/io_backend.h"
#include "engine/object_id.h"
#include "engine/sync.h"

namespace kelpie {

struct DirtyRecord {
  ObjectId id;
  uint32_t object_size = 0;
};

class DirtyLog {
 public:
  static constexpr size_t kRecordSize = 32;

  DirtyLog(IoBackend& io, std::string path) : io_(io), path_(std::move(path)) {}
  Task<Status> open();
  void close();

  // Returns when a record for `record` is durable. Concurrent calls share one sync.
  Task<Status> append(DirtyRecord record);
  // Empties the log; call only when no object of the shard is dirty.
  Status reset();
  bool busy() const { return committing_ || !pending_.empty(); }

  static std::vector<DirtyRecord> parse(std::span<const uint8_t> bytes);

 private:
  Task<Status> commit_pending();

  IoBackend& io_;
  std::string path_;
  int fd_ = -1;
  uint64_t size_bytes_ = 0;
  std::vector<DirtyRecord> pending_;
  uint64_t next_batch_ = 1;
  uint64_t durable_batch_ = 0;
  bool committing_ = false;
  Status failure_;
  Event batch_done_;
};

}  // namespace kelpie
