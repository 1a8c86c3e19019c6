// LocalStore: objects as files in the data directory, sharded over the reactors.
//
// Contract: implements ObjectStore (object_store.h). Each object belongs to one
// reactor (owner(), from its clone family: ObjectId::reactor_key()); every operation hops to that reactor,
// runs there, and hops back, so an object's state is never shared between threads.
// Per object: an open fd (LRU-bounded), the crc table in memory, and a RangeLock.
// Dirty objects are tracked per shard and logged (DirtyLog) before their first
// unsynced write; open() replays the logs of an unclean stop before anything is
// served. close() flushes and leaves no log behind (a clean stop).
//
// Versions and recovery (DESIGN.md rules 2 and 6, issue 3): each copy stores an
// ObjectVersion in its header, written after the data it describes and never ahead
// of it. The object list cache (every id held, with version and size) is built at
// open() from the headers and kept current by every operation; the calls below that
// are not on ObjectStore serve recovery and `cluster check`.
//  - Fence: a call with a non-empty version (remove_versioned included) whose
//    generation is below the highest generation this copy has stored or admitted
//    fails with ESTALE and changes nothing. Calls with an empty version are not fenced and leave the version alone
//    (a create replaces the copy, so its version becomes {0, 0}).
//  - A write or zero stores max(stored, version); a create, create_from or install
//    stores exactly `version` (the copy is replaced).
//  - create_from (and create_from_versioned) returns only once the copy, its crcs,
//    its version and its directory entry are durable (rule 5: the map entry that
//    will name it must not reach the disk first).
//  - flush() also covers objects whose eviction from the open-file cache began an
//    fdatasync before the flush: it waits for those syncs and fails if one failed
//    (or if any fdatasync of the store failed meanwhile).
//  - Without fua the version, like the data, is durable after flush(); a power loss
//    before it may persist them in either order, but the object is in the dirty log,
//    and rule 4 resyncs logged objects. With fua (and always for install) the data is
//    durable before the version is written.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/buffer.h"
#include "engine/dirty_log.h"
#include "engine/io_backend.h"
#include "engine/object_file.h"
#include "engine/object_store.h"
#include "engine/range_lock.h"
#include "engine/reactor.h"

namespace kelpie {

// What a copy claims: its version and its object size.
struct ObjectCopyInfo {
  ObjectVersion version;
  uint32_t object_size = 0;
};

// One entry of the object list cache.
struct StoredObject {
  ObjectId id;
  ObjectVersion version;
  uint32_t object_size = 0;
};

// A whole copy read for recovery: data.size() == object_size, every block verified.
struct FetchedObject {
  ObjectVersion version;
  uint32_t object_size = 0;
  Buffer data;
};

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
  // The data directory this store lives in (for small per-node records kept beside it).
  const std::string& data_dir() const { return data_dir_; }

  Task<Status> read(ObjectId id, uint64_t offset, std::span<uint8_t> out) override;
  Task<Status> write(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                     WriteOptions options) override;
  Task<Status> zero(ObjectId id, uint64_t offset, uint64_t length, bool fua) override;
  Task<Status> create_from(ObjectId dst, ObjectId src) override;
  Task<Status> remove(ObjectId id) override;
  Task<Status> flush() override;
  Task<Result<std::vector<ObjectId>>> list_objects(VdiId owner) override;

  // zero() and create_from() carrying a version: fenced and stored as described above.
  Task<Status> zero_versioned(ObjectId id, uint64_t offset, uint64_t length, bool fua,
                              ObjectVersion version);
  Task<Status> create_from_versioned(ObjectId dst, ObjectId src, ObjectVersion version);
  // remove() carrying the remover's version: fenced like a write (ESTALE, the copy is
  // kept, when the remover's generation is below the highest this copy has stored or
  // admitted: a newer attach wrote it). A remover of the same or a newer generation
  // removes whatever sequence the copy holds. Empty version: not fenced. ok if absent.
  Task<Status> remove_versioned(ObjectId id, ObjectVersion version);

  // From the object list cache, no I/O. ENOENT if this store does not hold the object.
  Task<Result<ObjectCopyInfo>> stat_object(ObjectId id);
  Task<Result<ObjectVersion>> version_of(ObjectId id);
  // Every object this store holds (files whose header could not be read at open()
  // are left out and logged). Reflects every operation that has completed; no I/O.
  Task<Result<std::vector<StoredObject>>> list_all();

  // The whole copy with its version, read under a shared lock of the whole object
  // (so after every write it accepted has completed). EIO if any block fails its crc:
  // a bad copy is never a recovery source. ENOENT if absent.
  Task<Result<FetchedObject>> fetch(ObjectId id);
  // Indices of the blocks whose data does not match their crc (empty: a good copy).
  Task<Result<std::vector<uint32_t>>> bad_blocks(ObjectId id);
  // Replaces whatever copy exists (whatever its version: the caller decides) with
  // `data` at `version`, durable before completion. Order: the old header is replaced
  // by one with no version and synced, then data and crcs are written and synced,
  // then the version (RWF_DSYNC): a crash leaves a copy at {0, 0} or the new copy,
  // never the new version over old or torn data. EINVAL if object_size is not a
  // multiple of 4 KiB in (0, 64 MiB] or data.size() != object_size.
  // only_if_newer: under the object's exclusive lock, do nothing (ok) when the copy
  // held is already at or above `version` (recovery must never roll a copy back).
  Task<Status> install(ObjectId id, ObjectVersion version, uint32_t object_size,
                       std::span<const uint8_t> data, bool only_if_newer = false);
  // install() for a resync (rule 4): replaces the copy unless it holds a version
  // above `version` (a later write landed after the resync read the copies), which
  // fails with EAGAIN and changes nothing. Checked under the object's exclusive lock.
  Task<Status> install_unless_newer(ObjectId id, ObjectVersion version, uint32_t object_size,
                                    std::span<const uint8_t> data);

  // Old copies (DESIGN.md rule 7, cluster/old_copies.h):
  // sync_object makes this copy durable: once every write it accepted has completed,
  // it fdatasyncs the object's file (and the objects directory if it has unsynced
  // entries) and returns the version and size the copy held then, durable on return.
  // ENOENT if absent. A failed fdatasync is never retried: the store fails (failed()),
  // as after a failed flush(). The dirty tracking is left to flush().
  Task<Result<ObjectCopyInfo>> sync_object(ObjectId id);
  // remove_old_copy removes this copy under the object's exclusive lock, only if the
  // version it holds is at or below `at_most` (else EAGAIN) and `may_remove()`, called
  // there on the owner reactor right before, returns true (else ECANCELED); nothing
  // changes otherwise. The object leaves the object list before the unlink is issued,
  // so a list_all() that starts after that check never shows it. ENOENT if absent.
  Task<Status> remove_old_copy(ObjectId id, ObjectVersion at_most,
                               std::function<bool()> may_remove);

  // The objects named in the dirty logs that open() replayed (an unclean stop left
  // them with writes in flight), with those a previous start recorded and did not
  // settle, for the cluster layer to resync; empty after clean stops. Set once by
  // open(), which records them durably (kUncleanFile, fsync'd with the directory)
  // before it removes the dirty logs, so a second crash before they are settled does
  // not forget them.
  const std::vector<ObjectId>& unclean_objects() const { return unclean_objects_; }
  // Records that only `remaining` of unclean_objects() still need settling (empty: all
  // settled; the record is removed). Durable before it returns. Non-reactor thread.
  Status settle_unclean(const std::vector<ObjectId>& remaining);
  static constexpr const char* kUncleanFile = "unclean.ids";

  // Bounds the object files kept open per shard (default: 8192 / shards, at least
  // 64); the least recently used idle one is closed beyond it, fdatasync'd first if
  // dirty. Call after open(), before serving (tests use a small limit).
  void set_open_file_limit(size_t per_shard);

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
  // With Mode::kCreate a non-empty `fence` refuses (ESTALE) to replace a copy whose
  // generation is higher, before anything is changed.
  Task<Result<Hold>> hold(Shard& shard, const ObjectId& id, Mode mode, uint32_t object_size,
                          uint64_t offset, uint64_t length, bool exclusive,
                          ObjectVersion fence = {});
  Task<Result<ObjectRef>> acquire(Shard& shard, const ObjectId& id, Mode mode,
                                  uint32_t object_size, ObjectVersion fence);
  Task<Status> load(Object& object);
  Task<Status> initialize(Object& object, uint32_t object_size);
  void release(Shard& shard, Object& object);
  Task<void> evict_if_needed(Shard& shard);
  Task<Status> mark_dirty(Shard& shard, const ObjectId& id, uint32_t object_size);
  // After its file was unlinked: drops `object` (held exclusively by the caller, whose
  // hold keeps it alive until released) from the shard's books and the object count.
  void forget_unlinked(Shard& shard, const ObjectId& id, Object& object);

  Task<Status> read_local(ObjectId id, uint64_t offset, std::span<uint8_t> out);
  Task<Status> write_local(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                           WriteOptions options);
  Task<Status> write_blocks(Shard& shard, Object& object, uint64_t offset,
                            std::span<const uint8_t> data, bool fua);
  Task<Status> zero_local(ObjectId id, uint64_t offset, uint64_t length, bool fua,
                          ObjectVersion version);
  Task<Status> remove_local(ObjectId id, ObjectVersion version);
  Task<Status> create_from_local(ObjectId dst, ObjectId src, ObjectVersion version);
  Task<Result<FetchedObject>> fetch_local(ObjectId id);
  Task<Result<ObjectCopyInfo>> sync_object_local(ObjectId id);
  Task<Status> remove_old_copy_local(ObjectId id, ObjectVersion at_most,
                                     std::function<bool()> may_remove);
  Task<Result<std::vector<uint32_t>>> bad_blocks_local(ObjectId id);
  enum class InstallIf { kAlways, kNewer, kNotOlder };
  Task<Status> install_checked(ObjectId id, ObjectVersion version, uint32_t object_size,
                               std::span<const uint8_t> data, InstallIf condition);
  Task<Status> install_local(ObjectId id, ObjectVersion version, uint32_t object_size,
                             std::span<const uint8_t> data, InstallIf condition);
  Task<Status> install_into(Shard& shard, Object& object, ObjectVersion version,
                            uint32_t object_size, std::span<const uint8_t> data);
  // Versions: the list-cache entry, the fence check, and storing a new version.
  Status check_fence(Shard& shard, const ObjectId& id, const ObjectVersion& version) const;
  void admit(Shard& shard, const ObjectId& id, const ObjectVersion& version);
  void listed_as_new(Shard& shard, const ObjectId& id, uint32_t object_size);
  Task<Status> store_version(Shard& shard, Object& object, ObjectVersion version, bool replace,
                             bool fua);
  Task<Status> sync_or_fail(int fd, const ObjectId& id);
  Status build_list_cache(const std::string& objects_dir);
  Task<Status> flush_shard(Shard& shard);
  Task<Status> read_verified(Object& object, uint64_t first_block, std::span<uint8_t> out);
  Task<Status> replay_dirty(const DirtyRecord& record);

  std::vector<Reactor*> reactors_;
  IoBackend& io_;
  std::string data_dir_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> object_count_{0};
  std::atomic<bool> failed_{false};
  std::vector<ObjectId> unclean_objects_;
  // kUncleanFile's ids (none when it is absent); EIO naming the file if it is damaged.
  Result<std::vector<ObjectId>> read_unclean_record() const;
};

}  // namespace kelpie
