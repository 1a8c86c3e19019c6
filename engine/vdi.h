// Vdi: one virtual disk image as byte ranges over objects (the VDI layer).
//
// Contract:
//  - read/write/trim/write_zeroes/flush may be called from any reactor, concurrently,
//    from any number of connections; ranges are validated by the caller (NBD edge)
//    and asserted here. Each object-sized piece runs on its object's owner reactor,
//    so per-object decisions (allocate, copy-on-write, deallocate) are serialized.
//  - The object map is the only record of allocation. A data object is written
//    before the map entry that points at it (rule 5: target before pointer); a
//    referenced object that is missing reads as EIO, never zeros.
//  - flush() makes every write completed before it durable, for every connection
//    (it flushes the whole object store), which is what CAN_MULTI_CONN promises.
//  - block_status() answers from the map alone.
#pragma once

#include <atomic>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/inode.h"
#include "engine/object_store.h"
#include "engine/reactor_pool.h"
#include "engine/sync.h"

namespace kelpie {

class Vdi {
 public:
  struct Extent {
    uint64_t length;
    bool allocated;
  };

  // Builds the in-memory VDI for an inode whose map objects are loaded by load().
  Vdi(Inode inode, ObjectStore& store, const ReactorPool& reactors);
  ~Vdi();

  // Writes a new VDI's inode and makes it durable. On a reactor.
  Task<Status> create();
  // Reads the map objects listed in the inode. On a reactor.
  Task<Status> load();

  VdiId id() const { return inode_.id; }
  const std::string& name() const { return inode_.name; }
  uint32_t object_shift() const { return inode_.object_shift; }
  uint64_t object_size() const { return inode_.object_size(); }
  uint64_t size() const { return size_bytes_.load(std::memory_order_acquire); }
  int64_t created_unix_s() const { return inode_.created_unix_s; }
  uint64_t allocated_objects() const;

  Task<Status> read(uint64_t offset, std::span<uint8_t> out);
  Task<Status> write(uint64_t offset, std::span<const uint8_t> data, bool fua);
  // Deallocates objects the range covers whole; zeroes the partial ones.
  Task<Status> trim(uint64_t offset, uint64_t length, bool fua);
  // no_hole: keep (or make) every touched object allocated, zeroed in place.
  Task<Status> write_zeroes(uint64_t offset, uint64_t length, bool no_hole, bool fua);
  Task<Status> flush();
  // Extents from `offset`, merged, at most `max_extents`, covering at most `length`.
  std::vector<Extent> block_status(uint64_t offset, uint64_t length, size_t max_extents) const;

  // Grow or shrink (callers refuse a shrink while attached). On a reactor.
  Task<Status> resize(uint64_t new_size);
  // Removes every object of this VDI. On a reactor; the VDI must not be attached.
  Task<Status> destroy();

  // Open NBD connections; the directory refuses delete/shrink while non-zero.
  std::atomic<uint32_t> attached{0};

 private:
  struct PerReactor;
  enum class ZeroMode { kTrim, kZeroKeepHoles, kZeroNoHole };

  ObjectId data_id(uint32_t index) const { return ObjectId::data(inode_.id, inode_.family, index); }
  ObjectId map_id(uint32_t k) const { return ObjectId::map(inode_.id, inode_.family, k); }
  uint32_t map_get(uint32_t index) const;
  Task<Status> map_set(uint32_t index, VdiId owner, bool fua);
  Task<Status> ensure_map_object(uint32_t k);
  Task<Status> write_inode();

  // One object-sized piece, run on the object's owner reactor.
  Task<Status> read_piece(uint32_t index, uint64_t offset, std::span<uint8_t> out);
  Task<Status> write_piece(uint32_t index, uint64_t offset, std::span<const uint8_t> data, bool fua);
  Task<Status> zero_piece(uint32_t index, uint64_t offset, uint64_t length, ZeroMode mode, bool fua);
  Task<Status> zero_range(uint64_t offset, uint64_t length, ZeroMode mode, bool fua);
  PerReactor& local_state();

  Inode inode_;
  ObjectStore& store_;
  const ReactorPool& reactors_;
  std::atomic<uint64_t> size_bytes_;
  // map_[k] points at kMapEntriesPerObject entries once map object k exists.
  std::unique_ptr<std::atomic<std::atomic<uint32_t>*>[]> map_;
  std::vector<std::unique_ptr<PerReactor>> per_reactor_;
  AsyncMutex inode_mutex_;  // on reactor 0: map table and size changes
};

}  // namespace kelpie
