// LocalStore: start-up and shutdown (dirty-log replay), the object lifecycle (open
// fds under an LRU bound, the dirty log), holding objects, and the data path (read,
// write, zero, remove, create_from, flush). Versions, the object list cache and the
// recovery calls are in local_store_versions.cc; the contract is in local_store.h.
#include "engine/local_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <unordered_set>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "engine/buffer.h"
#include "engine/local_store_internal.h"
#include "engine/superblock.h"

namespace kelpie {

namespace {
constexpr char kObjectsDir[] = "objects";

uint64_t blocks_in(uint64_t offset, uint64_t length) {
  return (offset + length + kBlockSize - 1) / kBlockSize - offset / kBlockSize;
}

using local_store_internal::io_failure;
}  // namespace

LocalStore::LocalStore(std::vector<Reactor*> reactors, IoBackend& io, std::string data_dir)
    : reactors_(std::move(reactors)), io_(io), data_dir_(std::move(data_dir)) {
  KELPIE_ASSERT(!reactors_.empty());
  for (Reactor* r : reactors_) {
    auto shard = std::make_unique<Shard>();
    shard->reactor = r;
    shard->log = std::make_unique<DirtyLog>(io_, "dirty." + std::to_string(r->index()) + ".log");
    shards_.push_back(std::move(shard));
  }
}

LocalStore::~LocalStore() {
  for (auto& shard : shards_) {
    for (auto& [id, object] : shard->objects)
      if (object->fd >= 0) io_.close(object->fd);
    if (shard->dir_fd >= 0) io_.close(shard->dir_fd);
    shard->log->close();
  }
}

std::string LocalStore::object_path(const ObjectId& id) {
  return std::string(kObjectsDir) + "/" + id.to_hex();
}

LocalStore::Shard& LocalStore::shard_of(const ObjectId& id) const {
  return *shards_[id.reactor_key() % shards_.size()];
}

Reactor& LocalStore::owner(const ObjectId& id) const { return *shard_of(id).reactor; }

// ---- the unclean-object record ----------------------------------------------------

Result<std::vector<ObjectId>> LocalStore::read_unclean_record() const {
  std::vector<ObjectId> ids;
  std::string path = data_dir_ + "/" + kUncleanFile;
  std::ifstream in(path);
  if (!in) return ids;  // none: every earlier unclean object was settled
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto id = ObjectId::from_hex(line);
    if (!id) return Status::error(EIO, path + ": not an object id: '" + line.substr(0, 64) + "'");
    ids.push_back(*id);
  }
  return ids;
}

Status LocalStore::settle_unclean(const std::vector<ObjectId>& remaining) {
  if (remaining.empty()) {
    std::string path = data_dir_ + "/" + kUncleanFile;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Status::error(errno, "unlink " + path);
    int dir = ::open(data_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return Status::error(errno, "open " + data_dir_);
    int rc = ::fsync(dir);
    int err = errno;
    ::close(dir);
    return rc == 0 ? Status::ok() : Status::error(err, "fsync " + data_dir_);
  }
  std::string text;
  for (const ObjectId& id : remaining) text += id.to_hex() + "\n";
  return write_file_atomically(data_dir_, kUncleanFile, text.data(), text.size());
}

// ---- start-up and shutdown -------------------------------------------------------

Status LocalStore::open() {
  std::string objects_dir = data_dir_ + "/" + kObjectsDir;
  if (::mkdir(objects_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::error(errno, "mkdir " + objects_dir);
  }
  std::vector<std::string> logs;
  if (DIR* dir = ::opendir(data_dir_.c_str())) {
    while (dirent* entry = ::readdir(dir)) {
      std::string name = entry->d_name;
      if (name.starts_with("dirty.") && name.ends_with(".log")) logs.push_back(name);
    }
    ::closedir(dir);
  }
  // Replay what an unclean stop left behind, before any log is reopened.
  std::vector<DirtyRecord> records;
  std::unordered_set<ObjectId, ObjectIdHash> seen;
  for (const std::string& name : logs) {
    std::string path = data_dir_ + "/" + name;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::error(errno, "open " + path);
    std::vector<uint8_t> bytes;
    uint8_t chunk[65536];
    ssize_t n;
    while ((n = ::read(fd, chunk, sizeof(chunk))) > 0) bytes.insert(bytes.end(), chunk, chunk + n);
    ::close(fd);
    for (const DirtyRecord& r : DirtyLog::parse(bytes))
      if (seen.insert(r.id).second) records.push_back(r);
  }
  if (!records.empty()) {
    KELPIE_LOG_WARN("unclean stop: re-verifying {} objects that had unsynced writes",
                    records.size());
  }
  Status status = reactors_[0]->block_on([](LocalStore* self, std::vector<DirtyRecord> todo) -> Task<Status> {
    for (const DirtyRecord& r : todo) {
      Status st = co_await self->replay_dirty(r);
      if (!st.is_ok()) co_return st;
    }
    co_return Status::ok();
  }(this, std::move(records)));
  if (!status.is_ok()) return status;
  // Objects an earlier start found unclean and that were not settled since.
  Result<std::vector<ObjectId>> earlier = read_unclean_record();
  if (!earlier) return earlier.status();
  for (const ObjectId& id : *earlier) seen.insert(id);
  unclean_objects_.assign(seen.begin(), seen.end());
  std::sort(unclean_objects_.begin(), unclean_objects_.end(),
            [](const ObjectId& a, const ObjectId& b) { return a.to_hex() < b.to_hex(); });
  // Durable before the logs go: the logs are the only other record of these ids.
  if (!logs.empty()) {
    if (Status st = settle_unclean(unclean_objects_); !st.is_ok()) return st;
  }
  for (const std::string& name : logs) ::unlink((data_dir_ + "/" + name).c_str());

  // The object list cache: built after the replay, which may recreate objects.
  Status listed = build_list_cache(objects_dir);
  if (!listed.is_ok()) return listed;

  for (auto& shard : shards_) {
    Shard* s = shard.get();
    Status st = s->reactor->block_on([](LocalStore* self, Shard* s) -> Task<Status> {
      auto dir = co_await self->io_.open(kObjectsDir, O_RDONLY | O_DIRECTORY);
      if (!dir) co_return dir.status();
      s->dir_fd = *dir;
      co_return co_await s->log->open();
    }(this, s));
    if (!st.is_ok()) return st;
    s->max_open = std::max<size_t>(64, 8192 / shards_.size());
  }
  return Status::ok();
}

Task<Status> LocalStore::replay_dirty(const DirtyRecord& record) {
  std::string path = object_path(record.id);
  auto fd = co_await io_.open(path, O_RDWR);
  if (!fd && fd.status().code() == ENOENT) {
    // Its creation or removal was in flight: what it held was never flushed.
    KELPIE_LOG_WARN("object {}: missing after unclean stop; recreating it as zeros",
                    record.id.to_hex());
    auto created = co_await io_.open(path, O_RDWR | O_CREAT);
    if (!created) co_return created.status();
    Object object;
    object.id = record.id;
    object.fd = *created;
    Status st = co_await initialize(object, record.object_size);
    if (st.is_ok()) st = co_await io_.datasync(object.fd);
    io_.close(object.fd);
    co_return st;
  }
  if (!fd) co_return fd.status();
  Object object;
  object.id = record.id;
  object.fd = *fd;
  Status st = co_await load(object);
  if (!st.is_ok()) {  // header never made it: rebuild it, keep the data
    object.object_size = record.object_size;
    object.crcs.assign(record.object_size / kBlockSize, 0);
    Buffer header = Buffer::get(kHeaderSize);
    std::memset(header.data(), 0, kHeaderSize);
    encode_object_header({record.id, record.object_size}, header.span());
    st = co_await io_.write(object.fd, header.span(), 0, false);
    if (!st.is_ok()) co_return st;
  }
  Buffer block = Buffer::get(kBlockSize);
  size_t repaired = 0;
  for (size_t b = 0; b < object.crcs.size(); ++b) {
    auto n = co_await io_.read(object.fd, block.span(), kDataOffset + b * kBlockSize);
    if (!n) co_return n.status();
    if (*n < kBlockSize) std::memset(block.data() + *n, 0, kBlockSize - *n);
    uint32_t computed = crc32c(block.data(), kBlockSize);
    if (!block_crc_matches(object.crcs[b], computed)) {
      object.crcs[b] = computed == zero_block_crc() ? 0 : computed;
      ++repaired;
    }
  }
  if (repaired > 0) {
    KELPIE_LOG_WARN("object {}: {} blocks were mid-write at the unclean stop; their checksums "
                    "now follow the data on disk", record.id.to_hex(), repaired);
    Buffer table = Buffer::get(object.crcs.size() * 4);
    for (size_t b = 0; b < object.crcs.size(); ++b) put_le32(table.data() + 4 * b, object.crcs[b]);
    st = co_await io_.write(object.fd, table.span(), kCrcTableOffset, false);
  }
  if (st.is_ok()) st = co_await io_.datasync(object.fd);
  io_.close(object.fd);
  co_return st;
}

Status LocalStore::close() {
  Status st = reactors_[0]->block_on(flush());
  if (!st.is_ok()) return st;
  for (auto& shard : shards_) {
    shard->log->close();
    ::unlink((data_dir_ + "/dirty." + std::to_string(shard->reactor->index()) + ".log").c_str());
  }
  return Status::ok();
}

// ---- object lifecycle ------------------------------------------------------------

Task<Status> LocalStore::load(Object& object) {
  Buffer header = Buffer::get(kHeaderSize);
  auto n = co_await io_.read(object.fd, header.span(), 0);
  if (!n) co_return n.status();
  auto decoded = decode_object_header(std::span<const uint8_t>(header.data(), *n));
  if (!decoded) co_return Status::error(EIO, decoded.status().message());
  if (!(decoded->id == object.id)) co_return Status::error(EIO, "object header names another object");
  object.object_size = decoded->object_size;
  object.header_version = decoded->version;
  size_t blocks = object.object_size / kBlockSize;
  Buffer table = Buffer::get(blocks * 4);
  auto got = co_await io_.read(object.fd, table.span(), kCrcTableOffset);
  if (!got) co_return got.status();
  if (*got < table.size()) std::memset(table.data() + *got, 0, table.size() - *got);
  object.crcs.resize(blocks);
  for (size_t b = 0; b < blocks; ++b) object.crcs[b] = get_le32(table.data() + 4 * b);
  co_return Status::ok();
}

Task<Status> LocalStore::initialize(Object& object, uint32_t object_size) {
  KELPIE_ASSERT(object_size > 0 && object_size % kBlockSize == 0 && object_size <= kMaxObjectSize);
  Status st = io_.truncate(object.fd, 0);
  if (st.is_ok()) st = co_await io_.fallocate(object.fd, 0, 0, kDataOffset + object_size);
  if (!st.is_ok()) co_return st;
  Buffer header = Buffer::get(kHeaderSize);
  std::memset(header.data(), 0, kHeaderSize);
  encode_object_header({object.id, object_size}, header.span());
  st = co_await io_.write(object.fd, header.span(), 0, false);
  if (!st.is_ok()) co_return st;
  object.object_size = object_size;
  object.crcs.assign(object_size / kBlockSize, 0);
  co_return Status::ok();
}

Task<Result<LocalStore::ObjectRef>> LocalStore::acquire(Shard& shard, const ObjectId& id, Mode mode,
                                                        uint32_t object_size, ObjectVersion fence) {
  while (true) {
    auto it = shard.objects.find(id);
    if (it != shard.objects.end()) {
      ObjectRef object = it->second;
      co_await object->ready.wait();
      if (object->gone) continue;
      if (!object->open_status.is_ok()) co_return object->open_status;
      ++object->pins;
      shard.lru.splice(shard.lru.end(), shard.lru, object->lru_pos);
      if (mode == Mode::kCreate) {
        RangeLock::Guard whole = co_await object->lock.lock(0, UINT64_MAX, true);
        if (object->gone) {
          release(shard, *object);
          continue;
        }
        Status st = check_fence(shard, id, fence);
        if (!st.is_ok()) {
          release(shard, *object);
          co_return st;
        }
        st = co_await mark_dirty(shard, id, object_size);
        if (st.is_ok()) st = co_await initialize(*object, object_size);
        if (!st.is_ok()) {
          release(shard, *object);
          co_return io_failure(st, id, "create");
        }
        listed_as_new(shard, id, object_size);
      }
      co_return object;
    }

    auto object = std::make_shared<Object>();
    object->id = id;
    shard.objects.emplace(id, object);
    shard.lru.push_back(object.get());
    object->lru_pos = std::prev(shard.lru.end());
    Status st;
    bool fresh = false;  // this call made the file
    if (mode == Mode::kCreate) {
      auto fd = co_await io_.open(object_path(id), O_RDWR | O_CREAT | O_EXCL);
      fresh = fd.is_ok();
      if (!fd && fd.status().code() == EEXIST) fd = co_await io_.open(object_path(id), O_RDWR);
      if (fd) {
        object->fd = *fd;
        if (fresh) {
          object_count_.fetch_add(1);
          shard.dir_dirty = true;
        } else {
          st = check_fence(shard, id, fence);  // before anything of the old copy changes
        }
        if (st.is_ok()) st = co_await mark_dirty(shard, id, object_size);
        if (st.is_ok()) st = co_await initialize(*object, object_size);
        if (st.is_ok()) listed_as_new(shard, id, object_size);
      } else {
        st = fd.status();
      }
    } else {
      auto fd = co_await io_.open(object_path(id), O_RDWR);
      if (fd) {
        object->fd = *fd;
        st = co_await load(*object);
        if (st.is_ok()) {
          shard.listed.try_emplace(id, Shard::Listed{object->header_version, object->object_size,
                                                     object->header_version.generation});
        }
      } else {
        st = fd.status().code() == ENOENT ? Status::error(ENOENT, "object " + id.to_hex() + " not found")
                                 : fd.status();
      }
    }
    object->open_status = st;
    if (!st.is_ok()) {
      object->gone = true;
      if (object->fd >= 0) io_.close(object->fd);
      object->fd = -1;
      if (fresh) {
        // A create that failed half-way (ENOSPC from fallocate, typically) leaves no
        // header-less file behind to fail every later open with "bad magic".
        Status removed = co_await io_.unlink(object_path(id));
        if (removed.is_ok()) object_count_.fetch_sub(1);
      }
      shard.lru.erase(object->lru_pos);
      shard.objects.erase(id);
      object->ready.set();
      if (st.code() != ENOENT && st.code() != ESTALE) (void)io_failure(st, id, "open");
      co_return st;
    }
    object->ready.set();
    ++object->pins;
    co_await evict_if_needed(shard);
    co_return object;
  }
}

void LocalStore::release(Shard& shard, Object& object) {
  (void)shard;
  KELPIE_ASSERT(object.pins > 0);
  if (--object.pins == 0 && object.gone && object.fd >= 0) {
    io_.close(object.fd);  // removed while others still used the fd
    object.fd = -1;
  }
}

Task<void> LocalStore::evict_if_needed(Shard& shard) {
  auto it = shard.lru.begin();
  while (shard.objects.size() > shard.max_open && it != shard.lru.end()) {
    Object* victim = *it++;
    if (victim->pins > 0 || !victim->lock.idle() || !victim->ready.is_set()) continue;
    ObjectRef keep = shard.objects[victim->id];
    if (shard.dirty.contains(victim->id)) {
      if (!shard.dirty[victim->id]) continue;  // its log record is still on the way
      // The object leaves `dirty` now, so a flush that starts while this sync runs
      // waits for it in eviction_syncs (rule 6) and fails if it fails.
      shard.dirty.erase(victim->id);
      auto sync = std::make_shared<Shard::EvictionSync>();
      shard.eviction_syncs.push_back(sync);
      ++victim->pins;
      Status st = co_await io_.datasync(victim->fd);
      --victim->pins;
      std::erase(shard.eviction_syncs, sync);
      if (!st.is_ok()) {
        failed_ = true;
        KELPIE_LOG_CRITICAL("fdatasync of {} failed ({}); refusing writes from now on",
                            victim->id.to_hex(), st.to_string());
        sync->status = Status::error(EIO, "fdatasync of an evicted object failed");
        sync->done.set();
        co_return;
      }
      sync->done.set();
      if (victim->pins > 0 || !victim->lock.idle() || victim->gone) {
        it = shard.lru.begin();
        continue;
      }
    }
    victim->gone = true;
    io_.close(victim->fd);
    victim->fd = -1;
    it = shard.lru.erase(victim->lru_pos);
    shard.objects.erase(victim->id);
  }
}

Task<Status> LocalStore::mark_dirty(Shard& shard, const ObjectId& id, uint32_t object_size) {
  if (failed_) co_return Status::error(EIO, "store refuses writes after a failed fdatasync");
  auto [it, inserted] = shard.dirty.try_emplace(id, false);
  if (inserted) {
    Status st = co_await shard.log->append({id, object_size});
    if (!st.is_ok()) {
      failed_ = true;
      KELPIE_LOG_CRITICAL("dirty log write failed ({}); refusing writes", st.to_string());
      co_return st;
    }
    auto again = shard.dirty.find(id);
    if (again != shard.dirty.end()) again->second = true;
    shard.logged.set();
    shard.logged.reset();
    co_return Status::ok();
  }
  while (true) {
    auto found = shard.dirty.find(id);
    if (found == shard.dirty.end() || found->second) co_return Status::ok();
    co_await shard.logged.wait();
  }
}

// ---- holding an object: a pin (its fd stays open) and a range lock ---------------

LocalStore::Hold::Hold(LocalStore* store, Shard* shard, ObjectRef object)
    : store_(store), shard_(shard), object_(std::move(object)) {}

LocalStore::Hold::Hold(Hold&& other) noexcept
    : guard(std::move(other.guard)),
      store_(other.store_),
      shard_(other.shard_),
      object_(std::move(other.object_)) {}

LocalStore::Hold::~Hold() {
  guard.release();
  if (object_) store_->release(*shard_, *object_);
}

Task<Result<LocalStore::Hold>> LocalStore::hold(Shard& shard, const ObjectId& id, Mode mode,
                                                uint32_t object_size, uint64_t offset,
                                                uint64_t length, bool exclusive,
                                                ObjectVersion fence) {
  while (true) {
    auto ref = co_await acquire(shard, id, mode, object_size, fence);
    if (!ref) co_return ref.status();
    mode = Mode::kExisting;  // a retry must not wipe what another writer just wrote
    Hold held(this, &shard, std::move(*ref));
    Object& object = held.object();
    uint64_t first = 0, last = UINT64_MAX;
    if (length != kWholeObject) {
      if (offset + length > object.object_size) {
        co_return Status::error(EINVAL, "range past the end of object " + id.to_hex());
      }
      first = offset / kBlockSize;
      last = first + std::max<uint64_t>(1, blocks_in(offset, length)) - 1;
    }
    held.guard = co_await object.lock.lock(first, last, exclusive);
    if (object.gone) continue;  // removed or evicted while we waited
    if (length != kWholeObject && offset + length > object.object_size) {
      // Recreated or installed with a smaller size while we waited.
      co_return Status::error(EINVAL, "range past the end of object " + id.to_hex());
    }
    co_return std::move(held);
  }
}

// ---- data operations -------------------------------------------------------------

Task<Status> LocalStore::read(ObjectId id, uint64_t offset, std::span<uint8_t> out) {
  return run_on(owner(id), read_local(id, offset, out));
}
Task<Status> LocalStore::write(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                               WriteOptions options) {
  return run_on(owner(id), write_local(id, offset, data, options));
}
Task<Status> LocalStore::zero(ObjectId id, uint64_t offset, uint64_t length, bool fua) {
  return run_on(owner(id), zero_local(id, offset, length, fua, {}));
}
Task<Status> LocalStore::zero_versioned(ObjectId id, uint64_t offset, uint64_t length, bool fua,
                                        ObjectVersion version) {
  return run_on(owner(id), zero_local(id, offset, length, fua, version));
}
Task<Status> LocalStore::remove(ObjectId id) { return remove_versioned(id, {}); }

Task<Status> LocalStore::remove_versioned(ObjectId id, ObjectVersion version) {
  return run_on(owner(id), remove_local(id, version));
}

Task<Status> LocalStore::read_verified(Object& object, uint64_t first_block, std::span<uint8_t> out) {
  KELPIE_ASSERT(out.size() % kBlockSize == 0);
  auto n = co_await io_.read(object.fd, out, kDataOffset + first_block * kBlockSize);
  if (!n) co_return io_failure(n.status(), object.id, "read");
  if (*n < out.size()) std::memset(out.data() + *n, 0, out.size() - *n);
  size_t count = out.size() / kBlockSize;
  Buffer crcs = Buffer::get(count * sizeof(uint32_t));
  auto* computed_crcs = reinterpret_cast<uint32_t*>(crcs.data());
  crc32c_blocks(out.data(), count, kBlockSize, computed_crcs);
  for (size_t b = 0; b < count; ++b) {
    uint32_t computed = computed_crcs[b];
    if (!block_crc_matches(object.crcs[first_block + b], computed)) {
      KELPIE_LOG_ERROR("object {}: checksum mismatch in block {} (stored {:08x}, data {:08x}); "
                       "returning EIO", object.id.to_hex(), first_block + b,
                       object.crcs[first_block + b], computed);
      co_return Status::error(EIO, "checksum mismatch in object " + object.id.to_hex());
    }
  }
  co_return Status::ok();
}

Task<Status> LocalStore::read_local(ObjectId id, uint64_t offset, std::span<uint8_t> out) {
  auto held = co_await hold(shard_of(id), id, Mode::kExisting, 0, offset, out.size(), false);
  if (!held) co_return held.status();
  if (out.empty()) co_return Status::ok();
  Object& object = held->object();
  uint64_t first = offset / kBlockSize;
  if (offset % kBlockSize == 0 && out.size() % kBlockSize == 0) {
    co_return co_await read_verified(object, first, out);
  }
  Buffer staging = Buffer::get(blocks_in(offset, out.size()) * kBlockSize);
  Status st = co_await read_verified(object, first, staging.span());
  if (st.is_ok()) std::memcpy(out.data(), staging.data() + offset % kBlockSize, out.size());
  co_return st;
}

Task<Status> LocalStore::write_blocks(Shard& shard, Object& object, uint64_t offset,
                                      std::span<const uint8_t> data, bool fua) {
  uint64_t first = offset / kBlockSize;
  uint64_t count = blocks_in(offset, data.size());
  std::span<const uint8_t> blocks = data;
  Buffer staging;
  if (offset % kBlockSize != 0 || data.size() % kBlockSize != 0) {
    // Read-modify-write of the partial edge blocks, verified like any read.
    staging = Buffer::get(count * kBlockSize);
    Status st = co_await read_verified(object, first, std::span<uint8_t>(staging.data(), kBlockSize));
    if (st.is_ok() && count > 1) {
      st = co_await read_verified(
          object, first + count - 1,
          std::span<uint8_t>(staging.data() + (count - 1) * kBlockSize, kBlockSize));
    }
    if (!st.is_ok()) co_return st;
    std::memcpy(staging.data() + offset % kBlockSize, data.data(), data.size());
    blocks = std::span<const uint8_t>(staging.data(), count * kBlockSize);
  }
  Buffer table = Buffer::get(count * 4);
  auto* crcs = reinterpret_cast<uint32_t*>(table.data());
  crc32c_blocks(blocks.data(), count, kBlockSize, crcs);
  for (uint64_t b = 0; b < count; ++b) put_le32(table.data() + 4 * b, crcs[b]);  // in place, LE
  Status st = co_await mark_dirty(shard, object.id, object.object_size);
  if (st.is_ok()) {
    // Data and checksums go to the kernel in one submission.
    std::vector<Task<Status>> writes;
    writes.push_back(io_.write(object.fd, blocks, kDataOffset + first * kBlockSize, fua));
    writes.push_back(io_.write(object.fd, table.span(), kCrcTableOffset + first * 4, fua));
    st = co_await when_all(std::move(writes));
  }
  // Whatever happened, the table in memory follows what we asked the disk to hold.
  for (uint64_t b = 0; b < count; ++b) object.crcs[first + b] = get_le32(table.data() + 4 * b);
  if (!st.is_ok()) co_return io_failure(st, object.id, "write");
  co_return Status::ok();
}

Task<Status> LocalStore::write_local(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                                     WriteOptions options) {
  Shard& shard = shard_of(id);
  auto held = co_await hold(shard, id, options.create ? Mode::kCreate : Mode::kExisting,
                            options.object_size, offset, data.size(), true, options.version);
  if (!held) co_return held.status();
  const bool versioned = !options.version.empty();
  if (versioned) {  // single-node writes (no version) skip all of this
    Status fenced = check_fence(shard, id, options.version);
    if (!fenced.is_ok()) co_return fenced;
    admit(shard, id, options.version);
  }
  Status st;
  if (!data.empty()) st = co_await write_blocks(shard, held->object(), offset, data, options.fua);
  if (st.is_ok() && versioned && (options.create || !data.empty())) {
    // After the data: with fua the data is durable before the version is written.
    st = co_await store_version(shard, held->object(), options.version, options.create,
                                options.fua);
  }
  if (st.is_ok() && options.fua && shard.dir_dirty) st = co_await io_.datasync(shard.dir_fd);
  co_return st;
}

Task<Status> LocalStore::zero_local(ObjectId id, uint64_t offset, uint64_t length, bool fua,
                                    ObjectVersion version) {
  Shard& shard = shard_of(id);
  auto held = co_await hold(shard, id, Mode::kExisting, 0, offset, length, true);
  if (!held) co_return held.status();
  if (!version.empty()) {
    Status fenced = check_fence(shard, id, version);
    if (!fenced.is_ok()) co_return fenced;
    admit(shard, id, version);
  }
  if (length == 0) co_return Status::ok();
  Object& object = held->object();
  Status st = co_await mark_dirty(shard, id, object.object_size);
  if (!st.is_ok()) co_return st;
  uint64_t whole_first = (offset + kBlockSize - 1) / kBlockSize;
  uint64_t whole_end = (offset + length) / kBlockSize;
  if (whole_end > whole_first) {  // whole blocks: zero in place, crc 0 = "reads as zeros"
    uint64_t n = whole_end - whole_first;
    st = co_await io_.fallocate(object.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                                kDataOffset + whole_first * kBlockSize, n * kBlockSize);
    Buffer table = Buffer::get(n * 4);
    std::memset(table.data(), 0, n * 4);
    if (st.is_ok()) st = co_await io_.write(object.fd, table.span(), kCrcTableOffset + whole_first * 4, false);
    for (uint64_t b = whole_first; b < whole_end; ++b) object.crcs[b] = 0;
    if (!st.is_ok()) co_return io_failure(st, id, "zero");
  }
  static const std::vector<uint8_t> zeros(kBlockSize, 0);
  uint64_t head_end = std::min(offset + length, whole_first * kBlockSize);
  if (whole_end <= whole_first) head_end = offset + length;  // inside one or two blocks
  for (uint64_t pos = offset; pos < head_end;) {  // partial edge before the whole blocks
    uint64_t n = std::min<uint64_t>(head_end - pos, kBlockSize - pos % kBlockSize);
    st = co_await write_blocks(shard, object, pos, std::span(zeros.data(), n), false);
    if (!st.is_ok()) co_return st;
    pos += n;
  }
  uint64_t tail_start = std::max(whole_end * kBlockSize, head_end);
  if (tail_start < offset + length) {
    st = co_await write_blocks(shard, object, tail_start,
                               std::span(zeros.data(), offset + length - tail_start), false);
    if (!st.is_ok()) co_return st;
  }
  if (fua) st = co_await io_.datasync(object.fd);
  if (st.is_ok() && !version.empty()) st = co_await store_version(shard, object, version, false, fua);
  co_return st;
}

void LocalStore::forget_unlinked(Shard& shard, const ObjectId& id, Object& object) {
  object.gone = true;
  shard.dirty.erase(id);
  shard.dir_dirty = true;
  shard.lru.erase(object.lru_pos);
  shard.objects.erase(id);
  object_count_.fetch_sub(1);
}

Task<Status> LocalStore::remove_local(ObjectId id, ObjectVersion version) {
  Shard& shard = shard_of(id);
  auto held = co_await hold(shard, id, Mode::kExisting, 0, 0, kWholeObject, true);
  if (!held) co_return held.status().code() == ENOENT ? Status::ok() : held.status();
  // Under the exclusive lock: an old gateway's late undo or trim must not remove
  // what a newer attach wrote.
  Status fenced = check_fence(shard, id, version);
  if (!fenced.is_ok()) co_return fenced;
  Object& object = held->object();
  // Logged like a write: if the unlink outlives a crash but the map entry that
  // dropped it does not, recovery recreates zeros instead of leaving a hole.
  Status st = co_await mark_dirty(shard, id, object.object_size);
  if (st.is_ok()) st = co_await io_.unlink(object_path(id));
  if (!st.is_ok()) co_return io_failure(st, id, "remove");
  forget_unlinked(shard, id, object);
  shard.listed.erase(id);
  co_return Status::ok();
}

Task<Status> LocalStore::create_from(ObjectId dst, ObjectId src) {
  return create_from_versioned(dst, src, {});
}

Task<Status> LocalStore::create_from_versioned(ObjectId dst, ObjectId src, ObjectVersion version) {
  KELPIE_ASSERT(dst.reactor_key() == src.reactor_key());  // same shard, local copy
  return run_on(owner(src), create_from_local(dst, src, version));
}

Task<Status> LocalStore::create_from_local(ObjectId dst, ObjectId src, ObjectVersion version) {
  Shard& shard = shard_of(src);
  auto from = co_await hold(shard, src, Mode::kExisting, 0, 0, kWholeObject, false);
  if (!from) co_return from.status();
  uint32_t size = from->object().object_size;
  auto to = co_await hold(shard, dst, Mode::kCreate, size, 0, kWholeObject, true, version);
  if (!to) co_return to.status();
  if (!version.empty()) {
    Status fenced = check_fence(shard, dst, version);
    if (!fenced.is_ok()) co_return fenced;
    admit(shard, dst, version);
  }
  // Data and checksums are copied as they are, inside the kernel: a block that
  // rotted in the source still fails its checksum in the copy, never passes as good.
  Object& source = from->object();
  Object& target = to->object();
  uint64_t table_bytes = size / kBlockSize * 4;
  Status st = co_await io_.copy_range(source.fd, kCrcTableOffset, target.fd, kCrcTableOffset, table_bytes);
  if (st.is_ok()) st = co_await io_.copy_range(source.fd, kDataOffset, target.fd, kDataOffset, size);
  if (!st.is_ok()) co_return io_failure(st, dst, "copy-on-write");
  target.crcs = source.crcs;
  if (!version.empty()) st = co_await store_version(shard, target, version, true, false);
  // Target before pointer (rule 5): the copy (data, crcs, version) and its directory
  // entry are durable before this returns, so the map entry that names it, FUA or
  // not, can never reach the disk first (writeback may persist the map block at any
  // time). Without this a power loss could leave the map naming a copy that was only
  // in the page cache: recovery recreates it as zeros and the ancestor's flushed data
  // is gone. Once per object per snapshot; plain writes never come here.
  if (st.is_ok()) st = co_await sync_or_fail(target.fd, dst);
  if (st.is_ok() && shard.dir_dirty) st = co_await sync_or_fail(shard.dir_fd, dst);
  co_return st;
}

void LocalStore::set_open_file_limit(size_t per_shard) {
  KELPIE_ASSERT(per_shard > 0);
  for (auto& shard : shards_) shard->max_open = per_shard;
}

Task<Status> LocalStore::flush_shard(Shard& shard) {
  AsyncMutex::Guard serial = co_await shard.flush_mutex.lock();
  if (failed_) co_return Status::error(EIO, "store refuses writes after a failed fdatasync");
  std::vector<ObjectRef> targets;
  for (auto it = shard.dirty.begin(); it != shard.dirty.end();) {
    if (!it->second) {  // a write still on its way; not covered by this flush
      ++it;
      continue;
    }
    auto found = shard.objects.find(it->first);
    if (found != shard.objects.end() && !found->second->gone) {
      ++found->second->pins;
      targets.push_back(found->second);
    }
    it = shard.dirty.erase(it);
  }
  std::vector<Task<Status>> syncs;
  for (auto& object : targets) syncs.push_back(io_.datasync(object->fd));
  if (shard.dir_dirty) {
    shard.dir_dirty = false;
    syncs.push_back(io_.datasync(shard.dir_fd));
  }
  // Objects written before this flush whose eviction took them out of `dirty`: their
  // sync is the one that makes them durable, and only it saw its error (a second
  // fdatasync of the file may not report it again), so wait for it and take its status.
  for (auto& sync : shard.eviction_syncs) {
    syncs.push_back([](std::shared_ptr<Shard::EvictionSync> pending) -> Task<Status> {
      co_await pending->done.wait();
      co_return pending->status;
    }(sync));
  }
  Status st = co_await when_all(std::move(syncs));
  for (auto& object : targets) release(shard, *object);
  // Any failed fdatasync meanwhile (an eviction, sync_object) fails this flush too:
  // the kernel may have dropped pages this flush was meant to cover.
  if (st.is_ok() && failed_) st = Status::error(EIO, "an fdatasync failed during the flush");
  if (!st.is_ok()) {
    failed_ = true;
    KELPIE_LOG_CRITICAL("fdatasync failed ({}); the kernel may have dropped dirty pages, so this "
                        "node refuses writes from now on", st.to_string());
    co_return Status::error(EIO, "fdatasync failed");
  }
  if (shard.dirty.empty() && !shard.log->busy()) {
    Status reset = shard.log->reset();
    if (!reset.is_ok()) KELPIE_LOG_WARN("dirty log reset failed: {}", reset.to_string());
  }
  co_return Status::ok();
}

Task<Status> LocalStore::flush() {
  std::vector<Task<Status>> tasks;
  for (auto& shard : shards_) tasks.push_back(run_on(*shard->reactor, flush_shard(*shard)));
  co_return co_await when_all(std::move(tasks));
}

Task<Result<std::vector<ObjectId>>> LocalStore::list_objects(VdiId owner) {
  // A directory scan: control plane only (reclaim), never on the data path.
  std::vector<ObjectId> found;
  std::string dir_path = data_dir_ + "/" + kObjectsDir;
  DIR* dir = ::opendir(dir_path.c_str());
  if (dir == nullptr) co_return Status::error(errno, "opendir " + dir_path);
  while (dirent* entry = ::readdir(dir)) {
    auto id = ObjectId::from_hex(entry->d_name);
    if (id && id->vdi == owner) found.push_back(*id);
  }
  ::closedir(dir);
  co_return found;
}

}  // namespace kelpie
