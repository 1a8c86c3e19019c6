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
//  - A Vdi is either the writable head of a name or a frozen snapshot (read_only).
//    A snapshot's objects are never written again: the head copies an object it
//    does not own on its first write (copy-on-write, on the object's own shard),
//    and copies a map object it does not own before changing an entry in it.
//  - A map object is durable (FUA) before the inode names it, and the inode write
//    that names it is FUA too: a FUA write is acknowledged only once everything that
//    leads to it is durable. A copy-on-write copy is durable before its map entry is
//    written (ObjectStore::create_from). Once made, a map object is never
//    made again by this head: if the inode write that names it fails, only that write
//    is retried (a replicated store undoes a failed create by removing the object
//    everywhere, while the failed inode write may have landed and name it).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/inode.h"
#include "engine/object_store.h"
#include "engine/reactor_pool.h"
#include "engine/sync.h"
#include "engine/write_gate.h"

namespace kelpie {

class Vdi {
 public:
  struct Extent {
    uint64_t length;
    bool allocated;
  };

  // Builds the in-memory VDI for an inode whose map objects are loaded by load().
  Vdi(Inode inode, bool read_only, ObjectStore& store, const ReactorPool& reactors);
  ~Vdi();

  // Writes a new VDI's inode and makes it durable. On a reactor.
  Task<Status> create();
  // Reads the map objects listed in the inode. On a reactor.
  Task<Status> load();

  VdiId id() const { return head_id_.load(std::memory_order_acquire); }
  VdiId family() const { return inode_.family; }
  bool read_only() const { return read_only_; }
  const std::string& name() const { return inode_.name; }
  // Snapshot tag (empty for a head); fixed once the Vdi exists.
  const std::string& tag() const { return inode_.tag; }
  // The snapshot this head or snapshot was made from (0 = none).
  VdiId parent() const { return parent_id_.load(std::memory_order_acquire); }
  // The inode as it stands. Stable for snapshots; for a head, call with writes
  // drained (gate closed) or on reactor 0.
  Inode inode() const;
  uint32_t object_shift() const { return inode_.object_shift; }
  uint64_t object_size() const { return inode_.object_size(); }
  uint64_t size() const { return size_bytes_.load(std::memory_order_acquire); }
  int64_t created_unix_s() const { return inode_.created_unix_s; }
  uint64_t allocated_objects() const;
  // Objects in the logical size whose map entry is this VDI / another VDI.
  uint64_t owned_objects() const;
  uint64_t shared_objects() const;
  // The VDI id that owns data object `index` (0 = zeros).
  VdiId map_owner(uint32_t index) const { return map_get(index); }

  Task<Status> read(uint64_t offset, std::span<uint8_t> out);
  Task<Status> write(uint64_t offset, std::span<const uint8_t> data, bool fua);
  // Deallocates objects the range covers whole; zeroes the partial ones.
  Task<Status> trim(uint64_t offset, uint64_t length, bool fua);
  // no_hole: keep (or make) every touched object allocated, zeroed in place.
  Task<Status> write_zeroes(uint64_t offset, uint64_t length, bool no_hole, bool fua);
  Task<Status> flush();
  // Extents from `offset`, merged, at most `max_extents`, covering at most `length`.
  std::vector<Extent> block_status(uint64_t offset, uint64_t length, size_t max_extents) const;

  // Grow or shrink (callers refuse a shrink while attached). On reactor 0.
  Task<Status> resize(uint64_t new_size);
  // Makes the current contents the frozen inode `id()` (snapshot `tag`, number
  // `snapshot_id`) and continues as a new writable head `new_head`. Call on reactor 0
  // with the gate closed and drained; nothing changes in memory if it fails.
  Task<Status> freeze_and_continue(VdiId new_head, uint32_t snapshot_id, std::string tag,
                                   int64_t now_unix_s);
  // Finishes freeze_and_continue() once the directory recorded it.
  void switch_to_new_head();

  WriteGate& gate() { return gate_; }

  // Open NBD connections; the directory refuses delete/shrink while non-zero.
  std::atomic<uint32_t> attached{0};

 private:
  struct PerReactor;
  enum class ZeroMode { kTrim, kZeroKeepHoles, kZeroNoHole };

  ObjectId data_id(uint32_t index) const { return ObjectId::data(inode_.id, inode_.family, index); }
  ObjectId map_id(uint32_t k) const { return ObjectId::map(inode_.id, inode_.family, k); }
  uint32_t map_get(uint32_t index) const;
  Task<Status> map_set(uint32_t index, VdiId owner, bool fua);
  // Makes map object k this head's own (created, or copied from an ancestor's) and
  // names it in the inode. Any reactor (hops to reactor 0 and takes inode_mutex_).
  Task<Status> ensure_map_object(uint32_t k);
  // Writes map object k durably from memory and sets inode_.map_table[k] to this head.
  // On reactor 0 under inode_mutex_.
  Task<Status> create_map_object(uint32_t k);
  // fua: durable before completion; else with the next flush.
  Task<Status> write_inode(bool fua);
  Task<Status> create_from_ancestor(uint32_t index, VdiId owner);

  // One object-sized piece, run on the object's owner reactor.
  Task<Status> read_piece(uint32_t index, uint64_t offset, std::span<uint8_t> out);
  Task<Status> write_piece(uint32_t index, uint64_t offset, std::span<const uint8_t> data, bool fua);
  Task<Status> zero_piece(uint32_t index, uint64_t offset, uint64_t length, ZeroMode mode, bool fua);
  Task<Status> zero_range(uint64_t offset, uint64_t length, ZeroMode mode, bool fua);
  PerReactor& local_state();

  Inode inode_;
  bool read_only_;
  std::atomic<VdiId> head_id_;
  std::atomic<VdiId> parent_id_;
  std::optional<Inode> pending_head_;  // written by freeze_and_continue, not yet switched to
  WriteGate gate_;
  ObjectStore& store_;
  const ReactorPool& reactors_;
  std::atomic<uint64_t> size_bytes_;
  // map_[k] points at kMapEntriesPerObject entries once map object k exists.
  std::unique_ptr<std::atomic<std::atomic<uint32_t>*>[]> map_;
  // map_owned_[k]: map object k belongs to this head and the inode naming it was
  // written (no copy needed before a change). inode_.map_table[k] == inode_.id alone:
  // map object k was made, the inode write naming it has not succeeded yet.
  std::unique_ptr<std::atomic<bool>[]> map_owned_;
  std::vector<std::unique_ptr<PerReactor>> per_reactor_;
  AsyncMutex inode_mutex_;  // on reactor 0: map table and size changes
};

}  // namespace kelpie
