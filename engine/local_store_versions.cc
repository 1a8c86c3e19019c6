// LocalStore: object versions and the fence, the object list cache (built at open()
// from the object headers, then kept current by every operation), and the calls that
// serve recovery and `cluster check`: stat_object, version_of, list_all, fetch,
// bad_blocks, install, and the two that serve old-copy removal (rule 7): sync_object,
// remove_old_copy. The contract is in local_store.h ("Versions and recovery");
// the data path, which fences and stores versions through these helpers, is in
// local_store.cc.
#include "engine/local_store.h"

#include <dirent.h>
#include <fcntl.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "common/crc32c.h"
#include "common/log.h"
#include "engine/buffer.h"
#include "engine/local_store_internal.h"

namespace kelpie {

namespace {
using local_store_internal::io_failure;
}  // namespace

// ---- versions, the object list cache and recovery --------------------------------

Status LocalStore::build_list_cache(const std::string& objects_dir) {
  std::vector<std::vector<ObjectId>> per_shard(shards_.size());
  uint64_t count = 0;
  DIR* dir = ::opendir(objects_dir.c_str());
  if (dir == nullptr) return Status::error(errno, "opendir " + objects_dir);
  while (dirent* entry = ::readdir(dir)) {
    if (auto id = ObjectId::from_hex(entry->d_name)) {
      ++count;
      per_shard[id->reactor_key() % shards_.size()].push_back(*id);
    }
  }
  ::closedir(dir);
  object_count_ = count;
  for (size_t i = 0; i < shards_.size(); ++i) {
    Shard* shard = shards_[i].get();
    Status st = shard->reactor->block_on(
        [](LocalStore* self, Shard* s, std::vector<ObjectId> ids) -> Task<Status> {
          Buffer header = Buffer::get(kHeaderSize);
          for (const ObjectId& id : ids) {
            auto fd = co_await self->io_.open(object_path(id), O_RDONLY);
            if (!fd && fd.status().code() == ENOENT) continue;
            if (!fd) co_return fd.status();
            auto n = co_await self->io_.read(*fd, header.span().first(kEncodedHeaderSize), 0);
            self->io_.close(*fd);
            Result<ObjectHeader> decoded = n ? decode_object_header(header.span().first(*n))
                                             : Result<ObjectHeader>(n.status());
            if (decoded && !(decoded->id == id)) {
              decoded = Status::error(EINVAL, "header names another object");
            }
            if (!decoded) {  // reads as EIO; never listed, so never a recovery source
              KELPIE_LOG_WARN("object {}: header unreadable ({}); left out of the object list",
                              id.to_hex(), decoded.status().to_string());
              continue;
            }
            s->listed[id] = {decoded->version, decoded->object_size, decoded->version.generation};
          }
          co_return Status::ok();
        }(this, shard, std::move(per_shard[i])));
    if (!st.is_ok()) return st;
  }
  return Status::ok();
}

Status LocalStore::check_fence(Shard& shard, const ObjectId& id,
                               const ObjectVersion& version) const {
  if (version.empty()) return Status::ok();
  auto it = shard.listed.find(id);
  if (it == shard.listed.end() || version.generation >= it->second.fence_generation) {
    return Status::ok();
  }
  return Status::error(ESTALE, "object " + id.to_hex() + ": generation " +
                                   std::to_string(version.generation) + " is below " +
                                   std::to_string(it->second.fence_generation) + " (fenced)");
}

void LocalStore::admit(Shard& shard, const ObjectId& id, const ObjectVersion& version) {
  auto it = shard.listed.find(id);
  if (it != shard.listed.end() && !version.empty()) {
    it->second.fence_generation = std::max(it->second.fence_generation, version.generation);
  }
}

void LocalStore::listed_as_new(Shard& shard, const ObjectId& id, uint32_t object_size) {
  Shard::Listed& entry = shard.listed[id];  // a replaced copy keeps its fence
  entry.version = {};
  entry.object_size = object_size;
}

Task<Status> LocalStore::store_version(Shard& shard, Object& object, ObjectVersion version,
                                       bool replace, bool fua) {
  Shard::Listed& entry = shard.listed[object.id];
  ObjectVersion next = replace ? version : std::max(entry.version, version);
  if (next == entry.version) co_return Status::ok();
  // Memory first, so concurrent writes of one object never store a lower version
  // after a higher one was issued; the disk may lag (behind is safe, ahead is not).
  entry.version = next;
  entry.fence_generation = std::max(entry.fence_generation, next.generation);
  std::array<uint8_t, kVersionRecordSize> record{};
  encode_version_record(next, record);
  Status st = co_await io_.write(object.fd, record, kVersionRecordOffset, fua);
  if (!st.is_ok()) co_return io_failure(st, object.id, "version write");
  co_return Status::ok();
}

Task<Status> LocalStore::sync_or_fail(int fd, const ObjectId& id) {
  Status st = co_await io_.datasync(fd);
  if (st.is_ok()) co_return st;
  failed_ = true;
  KELPIE_LOG_CRITICAL("fdatasync for {} failed ({}); refusing writes from now on", id.to_hex(),
                      st.to_string());
  co_return Status::error(EIO, "fdatasync failed");
}

Task<Result<ObjectCopyInfo>> LocalStore::stat_object(ObjectId id) {
  Shard* shard = &shard_of(id);
  return run_on(*shard->reactor, [](Shard* s, ObjectId oid) -> Task<Result<ObjectCopyInfo>> {
    auto it = s->listed.find(oid);
    if (it == s->listed.end()) co_return Status::error(ENOENT, "object " + oid.to_hex() + " not found");
    co_return ObjectCopyInfo{it->second.version, it->second.object_size};
  }(shard, id));
}

Task<Result<ObjectVersion>> LocalStore::version_of(ObjectId id) {
  auto info = co_await stat_object(id);
  if (!info) co_return info.status();
  co_return info->version;
}

Task<Result<std::vector<StoredObject>>> LocalStore::list_all() {
  std::vector<StoredObject> all;
  Reactor* home = Reactor::current();
  for (auto& shard : shards_) {
    co_await switch_to(*shard->reactor);
    for (const auto& [id, entry] : shard->listed) all.push_back({id, entry.version, entry.object_size});
  }
  co_await switch_to(*home);
  co_return all;
}

Task<Result<FetchedObject>> LocalStore::fetch(ObjectId id) {
  return run_on(owner(id), fetch_local(id));
}

Task<Result<FetchedObject>> LocalStore::fetch_local(ObjectId id) {
  Shard& shard = shard_of(id);
  // Shared and whole: every write this copy accepted has completed, none is running.
  auto held = co_await hold(shard, id, Mode::kExisting, 0, 0, kWholeObject, false);
  if (!held) co_return held.status();
  Object& object = held->object();
  FetchedObject fetched;
  fetched.object_size = object.object_size;
  auto it = shard.listed.find(id);
  if (it != shard.listed.end()) fetched.version = it->second.version;
  fetched.data = Buffer::get(object.object_size);
  Status st = co_await read_verified(object, 0, fetched.data.span());
  if (!st.is_ok()) co_return st;
  co_return std::move(fetched);
}

Task<Result<ObjectCopyInfo>> LocalStore::sync_object(ObjectId id) {
  return run_on(owner(id), sync_object_local(id));
}

Task<Result<ObjectCopyInfo>> LocalStore::sync_object_local(ObjectId id) {
  Shard& shard = shard_of(id);
  // Shared and whole: every write this copy accepted has completed (its data and its
  // version are in the page cache), none is running.
  auto held = co_await hold(shard, id, Mode::kExisting, 0, 0, kWholeObject, false);
  if (!held) co_return held.status();
  if (failed_) co_return Status::error(EIO, "store refuses writes after a failed fdatasync");
  auto it = shard.listed.find(id);
  if (it == shard.listed.end()) co_return Status::error(ENOENT, "object " + id.to_hex() + " not found");
  ObjectCopyInfo info{it->second.version, it->second.object_size};
  // Later writes may go on (they are newer); the pin keeps the fd open. fdatasync
  // makes everything written before it durable, whatever other syncs run meanwhile,
  // so it is issued even if the object looks clean (an eviction may be syncing it).
  held->guard.release();
  Status st = co_await sync_or_fail(held->object().fd, id);
  // A directory entry is durable once a sync of the directory began after it was made.
  if (st.is_ok() && shard.dir_dirty) st = co_await sync_or_fail(shard.dir_fd, id);
  if (!st.is_ok()) co_return st;
  co_return info;
}

Task<Status> LocalStore::remove_old_copy(ObjectId id, ObjectVersion at_most,
                                         std::function<bool()> may_remove) {
  return run_on(owner(id), remove_old_copy_local(id, at_most, std::move(may_remove)));
}

Task<Status> LocalStore::remove_old_copy_local(ObjectId id, ObjectVersion at_most,
                                               std::function<bool()> may_remove) {
  Shard& shard = shard_of(id);
  // Exclusive and whole: no write, install or fetch of this copy runs meanwhile.
  auto held = co_await hold(shard, id, Mode::kExisting, 0, 0, kWholeObject, true);
  if (!held) co_return held.status();
  auto it = shard.listed.find(id);
  if (it == shard.listed.end()) co_return Status::error(ENOENT, "object " + id.to_hex() + " not found");
  if (it->second.version > at_most) {
    co_return Status::error(EAGAIN, "object " + id.to_hex() + " holds a newer version");
  }
  if (!may_remove()) co_return Status::error(ECANCELED, "object " + id.to_hex() + " is wanted again");
  // No suspension between the check and this: a listing that begins after the check
  // (a new epoch's recovery) never sees a copy that is about to go.
  Shard::Listed was = it->second;
  shard.listed.erase(it);
  Status st = co_await io_.unlink(object_path(id));
  if (!st.is_ok()) {
    shard.listed[id] = was;
    co_return io_failure(st, id, "remove");
  }
  Object& object = held->object();
  forget_unlinked(shard, id, object);
  co_return Status::ok();
}

Task<Result<std::vector<uint32_t>>> LocalStore::bad_blocks(ObjectId id) {
  return run_on(owner(id), bad_blocks_local(id));
}

Task<Result<std::vector<uint32_t>>> LocalStore::bad_blocks_local(ObjectId id) {
  Shard& shard = shard_of(id);
  auto held = co_await hold(shard, id, Mode::kExisting, 0, 0, kWholeObject, false);
  if (!held) co_return held.status();
  Object& object = held->object();
  constexpr uint64_t kChunkBlocks = 256;  // 1 MiB at a time
  Buffer chunk = Buffer::get(kChunkBlocks * kBlockSize);
  std::array<uint32_t, kChunkBlocks> computed{};
  std::vector<uint32_t> bad;
  const uint64_t blocks = object.object_size / kBlockSize;
  for (uint64_t first = 0; first < blocks; first += kChunkBlocks) {
    uint64_t count = std::min(kChunkBlocks, blocks - first);
    std::span<uint8_t> out(chunk.data(), count * kBlockSize);
    auto n = co_await io_.read(object.fd, out, kDataOffset + first * kBlockSize);
    if (!n) co_return io_failure(n.status(), id, "read");
    if (*n < out.size()) std::memset(out.data() + *n, 0, out.size() - *n);
    crc32c_blocks(out.data(), count, kBlockSize, computed.data());
    for (uint64_t b = 0; b < count; ++b) {
      if (!block_crc_matches(object.crcs[first + b], computed[b])) {
        bad.push_back(static_cast<uint32_t>(first + b));
      }
    }
  }
  co_return bad;
}

Task<Status> LocalStore::install(ObjectId id, ObjectVersion version, uint32_t object_size,
                                 std::span<const uint8_t> data, bool only_if_newer) {
  return install_checked(id, version, object_size, data,
                         only_if_newer ? InstallIf::kNewer : InstallIf::kAlways);
}

Task<Status> LocalStore::install_unless_newer(ObjectId id, ObjectVersion version,
                                              uint32_t object_size, std::span<const uint8_t> data) {
  return install_checked(id, version, object_size, data, InstallIf::kNotOlder);
}

Task<Status> LocalStore::install_checked(ObjectId id, ObjectVersion version, uint32_t object_size,
                                         std::span<const uint8_t> data, InstallIf condition) {
  if (object_size == 0 || object_size % kBlockSize != 0 || object_size > kMaxObjectSize) {
    co_return Status::error(EINVAL, "install: bad object size " + std::to_string(object_size));
  }
  if (data.size() != object_size) {
    co_return Status::error(EINVAL, "install: data is not one whole object");
  }
  co_return co_await run_on(owner(id), install_local(id, version, object_size, data, condition));
}

Task<Status> LocalStore::install_local(ObjectId id, ObjectVersion version, uint32_t object_size,
                                       std::span<const uint8_t> data, InstallIf condition) {
  Shard& shard = shard_of(id);
  // Exclusive over the whole object: no client write interleaves with the install.
  auto held = co_await hold(shard, id, Mode::kExisting, 0, 0, kWholeObject, true);
  if (!held && (held.status().code() == ENOENT || held.status().code() == EIO)) {
    // Missing, or a header that cannot be read: create (replace) the file instead.
    auto created = co_await hold(shard, id, Mode::kCreate, object_size, 0, kWholeObject, true);
    if (!created) co_return created.status();
    co_return co_await install_into(shard, created->object(), version, object_size, data);
  }
  if (!held) co_return held.status();
  auto it = shard.listed.find(id);
  if (it != shard.listed.end()) {
    if (condition == InstallIf::kNewer && it->second.version >= version) co_return Status::ok();
    if (condition == InstallIf::kNotOlder && it->second.version > version) {
      co_return Status::error(EAGAIN, "object " + id.to_hex() + " holds a newer version");
    }
  }
  co_return co_await install_into(shard, held->object(), version, object_size, data);
}

Task<Status> LocalStore::install_into(Shard& shard, Object& object, ObjectVersion version,
                                      uint32_t object_size, std::span<const uint8_t> data) {
  // 1. A fresh header without a version, durable before any new data: from here on a
  //    crash leaves a copy that claims nothing ({0, 0}), never the old version.
  Status st = co_await mark_dirty(shard, object.id, object_size);
  if (st.is_ok()) st = co_await initialize(object, object_size);
  if (!st.is_ok()) co_return io_failure(st, object.id, "install");
  listed_as_new(shard, object.id, object_size);
  st = co_await sync_or_fail(object.fd, object.id);
  // 2. Data and crcs, durable (with the directory entry of a new file).
  if (st.is_ok()) st = co_await write_blocks(shard, object, 0, data, false);
  if (st.is_ok()) st = co_await sync_or_fail(object.fd, object.id);
  if (st.is_ok() && shard.dir_dirty) st = co_await sync_or_fail(shard.dir_fd, object.id);
  if (!st.is_ok()) co_return st;
  // 3. The version last, durable before completion: the copy now counts.
  admit(shard, object.id, version);
  co_return co_await store_version(shard, object, version, true, true);
}

}  // namespace kelpie
