// LocalStore: objects as files in the data directory, sharded over the reactors.
//
// Contract: implements ObjectStore (object_store.h). Each object belongs to one
// reactor (owner(), from its clone family: ObjectId::reactor_key()); every operation hops to that reactor,
// runs there, and hops back, so an object's state is never shared between threads.
// Per object: an open fd (LRU-bounded), the crc table in memory, and a RangeLock.
// Dirty objects are tracked per shard and logged (DirtyLog) before their first
// unsynced write; open() replays the logs of an unclean stop before anything is
// served. close() flushes and leaves no log behind (a clean stop).
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/dirty_log.h"
#include "engine/io_backend.h"
#include "engine/object_file.h"
#include "engine/object_store.h"
#include "engine/range_lock.h"
#include "engine/reactor.h"

namespace kelpie {

class LocalStore final : public ObjectStore {
 public:
  // data_dir_fd: the data directory (holding objects/ and the dirty logs).
  LocalStore(std::vector<Reactor*> reactors, IoBackend& io, std::string data_dir);
  ~LocalStore() override;

  // Scans objects/ (the object list cache), replays dirty logs left by an unclean
  // stop, then opens this run's logs. Call once from a non-reactor thread.
  Status open();
  // Flushes every shard and removes the dirty logs. Call from a non-reactor thread.
  Status close();

  Task<Status> read(ObjectId id, uint64_t offset, std::span<uint8_t> out) override;
  Task<Status> write(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                     WriteOptions options) override;
  Task<Status> zero(ObjectId id, uint64_t offset, uint64_t length, bool fua) override;
  Task<Status> create_from(ObjectId dst, ObjectId src) override;
  Task<Status> remove(ObjectId id) override;
  Task<Status> flush() override;
  Task<Result<std::vector<ObjectId>>> list_objects(VdiId owner) override;

  Reactor& owner(const ObjectId& id) const;
  uint64_t object_count() const { return object_count_.load(); }
  bool failed() const { return failed_.load(); }

 private:
  struct Object;
  struct Shard;
  using ObjectRef = std::shared_ptr<Object>;
  enum class Mode { kExisting, kCreate };

  static std::string object_path(const ObjectId& id);
  Shard& shard_of(const ObjectId& id) const;

  static constexpr uint64_t kWholeObject = UINT64_MAX;
  class Hold {
   public:
    Hold(LocalStore* store, Shard* shard, ObjectRef object);
    Hold(Hold&& other) noexcept;
    Hold(const Hold&) = delete;
    ~Hold();
    Object& object() { return *object_; }
    RangeLock::Guard guard;

   private:
    LocalStore* store_;
    Shard* shard_;
    ObjectRef object_;
  };
  // Acquires (or creates) the object, checks the range and locks its blocks
  // (length kWholeObject: every block), retrying if the object went away meanwhile.
  Task<Result<Hold>> hold(Shard& shard, const ObjectId& id, Mode mode, uint32_t object_size,
                          uint64_t offset, uint64_t length, bool exclusive);
  Task<Result<ObjectRef>> acquire(Shard& shard, const ObjectId& id, Mode mode,
                                  uint32_t object_size);
  Task<Status> load(Object& object);
  Task<Status> initialize(Object& object, uint32_t object_size);
  void release(Shard& shard, Object& object);
  Task<void> evict_if_needed(Shard& shard);
  Task<Status> mark_dirty(Shard& shard, const ObjectId& id, uint32_t object_size);

  Task<Status> read_local(ObjectId id, uint64_t offset, std::span<uint8_t> out);
  Task<Status> write_local(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                           WriteOptions options);
  Task<Status> write_blocks(Shard& shard, Object& object, uint64_t offset,
                            std::span<const uint8_t> data, bool fua);
  Task<Status> zero_local(ObjectId id, uint64_t offset, uint64_t length, bool fua);
  Task<Status> remove_local(ObjectId id);
  Task<Status> create_from_local(ObjectId dst, ObjectId src);
  Task<Status> flush_shard(Shard& shard);
  Task<Status> read_verified(Object& object, uint64_t first_block, std::span<uint8_t> out);
  Task<Status> replay_dirty(const DirtyRecord& record);

  std::vector<Reactor*> reactors_;
  IoBackend& io_;
  std::string data_dir_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> object_count_{0};
  std::atomic<bool> failed_{false};
};

}  // namespace kelpie
