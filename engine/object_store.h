// ObjectStore: the one seam between the VDI layer and where objects live.
//
// Implemented by LocalStore (files in the data directory), later by the gateway
// cache (a decorator) and the replicated store (cluster/). The VDI layer and the
// NBD server never know which one they talk to.
//
// Contract (all implementations):
//  - Calls may be made from any reactor; the call completes on the caller's reactor.
//  - read() of an object that does not exist returns ENOENT; of bytes never
//    written, zeros. A block whose checksum does not match returns EIO, never data.
//  - write() with create=true replaces whatever copy exists with a zero-filled
//    object of object_size bytes first (the first write after a map entry of 0).
//    Without create, a missing object is ENOENT.
//  - Writes are in the volatile write cache until flush(); fua=true makes this
//    write durable before completion. flush() makes every write that completed
//    before flush() was called durable, on every shard, in one batch.
//  - Ranges must lie inside the object (callers validate at the edge).
//  - After a failed fdatasync the store refuses writes with EIO forever (the
//    kernel may have dropped the dirty pages; retrying would lie).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "engine/object_id.h"
#include "engine/object_version.h"
#include "engine/task.h"

namespace kelpie {

struct WriteOptions {
  bool fua = false;
  bool create = false;
  uint32_t object_size = 0;  // required with create
  // Non-empty: stored as the copy's version with the data. A write whose generation
  // is below the copy's stored generation is refused with ESTALE (an old gateway
  // fenced off by a newer attach). Empty: the stored version is left as it is (but a
  // create replaces the copy, which then has no version, {0, 0}). Stored after the data;
  // a write keeps max(stored, version), a create stores exactly `version`. Only
  // LocalStore stores versions; see local_store.h for zero/create_from with versions.
  ObjectVersion version;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  virtual Task<Status> read(ObjectId id, uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Task<Status> write(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                             WriteOptions options) = 0;
  // Makes [offset, offset+length) read as zeros, keeping the object allocated.
  virtual Task<Status> zero(ObjectId id, uint64_t offset, uint64_t length, bool fua) = 0;
  // dst becomes a copy of src (copy-on-write); dst is replaced if it exists. The copy
  // is durable when this completes (rule 5: the map entry naming dst comes after).
  virtual Task<Status> create_from(ObjectId dst, ObjectId src) = 0;
  // Deletes the object; removing a missing object succeeds.
  virtual Task<Status> remove(ObjectId id) = 0;
  virtual Task<Status> flush() = 0;
  // Every object owned by VDI `owner` that this store holds (reclaim uses it to find
  // objects no map references, including copies a crash left unreferenced).
  virtual Task<Result<std::vector<ObjectId>>> list_objects(VdiId owner) = 0;
};

}  // namespace kelpie
