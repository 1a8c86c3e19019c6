#include "engine/vdi.h"

#include <cstring>
#include <unordered_map>

#include "common/bytes.h"
#include "common/log.h"
#include "engine/buffer.h"

namespace kelpie {

struct Vdi::PerReactor {
  // Data object indices with an allocation or deallocation in flight.
  std::unordered_map<uint32_t, Event*> busy;
  // One writer at a time per map object block image.
  std::unordered_map<uint32_t, AsyncMutex> map_locks;
};

Vdi::Vdi(Inode inode, bool read_only, ObjectStore& store, const ReactorPool& reactors)
    : inode_(std::move(inode)),
      read_only_(read_only),
      head_id_(inode_.id),
      parent_id_(inode_.parent),
      store_(store),
      reactors_(reactors),
      size_bytes_(inode_.size_bytes),
      map_(new std::atomic<std::atomic<uint32_t>*>[kMaxMapObjects]),
      map_owned_(new std::atomic<bool>[kMaxMapObjects]) {
  inode_.map_table.resize(kMaxMapObjects, kNoVdi);
  for (uint32_t k = 0; k < kMaxMapObjects; ++k) {
    map_[k].store(nullptr);
    map_owned_[k].store(inode_.map_table[k] == inode_.id);
  }
  for (size_t i = 0; i < reactors_.size(); ++i) per_reactor_.push_back(std::make_unique<PerReactor>());
}

Vdi::~Vdi() {
  for (uint32_t k = 0; k < kMaxMapObjects; ++k) delete[] map_[k].load();
}

Vdi::PerReactor& Vdi::local_state() { return *per_reactor_[Reactor::current()->index()]; }

namespace {
std::atomic<uint32_t>* new_map_chunk() {
  auto* chunk = new std::atomic<uint32_t>[kMapEntriesPerObject];
  for (uint32_t i = 0; i < kMapEntriesPerObject; ++i) chunk[i].store(0, std::memory_order_relaxed);
  return chunk;
}
}  // namespace

uint32_t Vdi::map_get(uint32_t index) const {
  if (index / kMapEntriesPerObject >= kMaxMapObjects) return kNoVdi;
  std::atomic<uint32_t>* chunk = map_[index / kMapEntriesPerObject].load(std::memory_order_acquire);
  return chunk == nullptr ? kNoVdi : chunk[index % kMapEntriesPerObject].load(std::memory_order_acquire);
}

uint64_t Vdi::allocated_objects() const {
  uint64_t count = 0;
  uint64_t objects = (size() + object_size() - 1) >> object_shift();
  for (uint64_t i = 0; i < objects; ++i) count += map_get(static_cast<uint32_t>(i)) != kNoVdi;
  return count;
}

uint64_t Vdi::owned_objects() const {
  uint64_t count = 0;
  uint64_t objects = (size() + object_size() - 1) >> object_shift();
  VdiId self = id();
  for (uint64_t i = 0; i < objects; ++i) count += map_get(static_cast<uint32_t>(i)) == self;
  return count;
}

uint64_t Vdi::shared_objects() const { return allocated_objects() - owned_objects(); }

Inode Vdi::inode() const {
  Inode copy = inode_;
  copy.size_bytes = size();
  return copy;
}

Task<Status> Vdi::write_inode(bool fua) {
  Inode snapshot = inode_;
  snapshot.size_bytes = size();
  std::vector<uint8_t> image = encode_inode(snapshot);
  co_return co_await store_.write(ObjectId::inode(inode_.id, inode_.family), 0, image, {fua});
}

Task<Status> Vdi::create() {
  // Durable by itself (FUA, directory entry included) before the directory names it;
  // no flush of anything else, so a clone stays O(1) however much is dirty.
  std::vector<uint8_t> image = encode_inode(inode_);
  ObjectId id = ObjectId::inode(inode_.id, inode_.family);
  co_return co_await store_.write(id, 0, image, {true, true, kInodeObjectSize});
}

Task<Status> Vdi::load() {
  Buffer image = Buffer::get(kMapObjectSize);
  for (uint32_t k = 0; k < kMaxMapObjects; ++k) {
    VdiId owner = inode_.map_table[k];
    if (owner == kNoVdi) continue;
    Status st = co_await store_.read(ObjectId::map(owner, inode_.family, k), 0, image.span());
    if (!st.is_ok()) {
      co_return Status::error(st.code() == ENOENT ? EIO : st.code(),
                              "VDI '" + inode_.name + "': map object " + std::to_string(k) +
                                  " unreadable: " + st.to_string());
    }
    std::atomic<uint32_t>* chunk = new_map_chunk();
    for (uint32_t i = 0; i < kMapEntriesPerObject; ++i) {
      chunk[i].store(get_le32(image.data() + 4 * i), std::memory_order_relaxed);
    }
    map_[k].store(chunk, std::memory_order_release);
  }
  co_return Status::ok();
}

Task<Status> Vdi::create_map_object(uint32_t k) {
  // A new map object, or this head's own copy of an ancestor's (copy-on-write).
  // Target before pointer: written in full and durable (FUA) before the table names
  // it, so a power loss can not leave the inode naming a missing or zeroed map object
  // (one whose writes were never flushed is recreated as zeros: a copied ancestor map
  // would lose the entries of flushed data).
  std::atomic<uint32_t>* chunk = map_[k].load();
  Status st;
  if (chunk == nullptr) {
    st = co_await store_.write(map_id(k), 0, {}, {true, true, kMapObjectSize});
  } else {
    Buffer image = Buffer::get(kMapObjectSize);
    for (uint32_t i = 0; i < kMapEntriesPerObject; ++i) put_le32(image.data() + 4 * i, chunk[i].load());
    st = co_await store_.write(map_id(k), 0, image.span(), {true, true, kMapObjectSize});
  }
  if (!st.is_ok()) co_return st;
  if (chunk == nullptr) map_[k].store(new_map_chunk(), std::memory_order_release);
  inode_.map_table[k] = inode_.id;
  co_return Status::ok();
}

Task<Status> Vdi::ensure_map_object(uint32_t k) {
  if (map_owned_[k].load(std::memory_order_acquire)) co_return Status::ok();
  Reactor* home = Reactor::current();
  co_await switch_to(reactors_.at(0));
  Status st;
  {
    AsyncMutex::Guard guard = co_await inode_mutex_.lock();
    if (!map_owned_[k].load()) {
      // The table names this head's map k only once map k was made. After that a
      // failed inode write is retried alone: that write may have landed (a replicated
      // store settles it by resyncing the newest inode to every replica), and making
      // map k again could fail and be undone (removed everywhere) under that inode.
      if (inode_.map_table[k] != inode_.id) st = co_await create_map_object(k);
      // FUA: a map entry is reachable only through the inode, and a FUA write that
      // had to name map k must survive a power loss (so must the next FUA write
      // here, which finds map_owned_ set and writes no inode). Once per map object
      // per head, beside create_map_object's own FUA write; no flush covers it.
      if (st.is_ok()) st = co_await write_inode(true);
      if (st.is_ok()) map_owned_[k].store(true, std::memory_order_release);
    }
  }
  co_await switch_to(*home);
  co_return st;
}

Task<Status> Vdi::map_set(uint32_t index, VdiId owner, bool fua) {
  uint32_t k = index / kMapEntriesPerObject;
  Status st = co_await ensure_map_object(k);
  if (!st.is_ok()) co_return st;
  ObjectId id = map_id(k);
  Reactor* home = Reactor::current();
  co_await switch_to(reactors_.owner(id));
  {
    AsyncMutex::Guard guard = co_await local_state().map_locks[k].lock();
    std::atomic<uint32_t>* chunk = map_[k].load(std::memory_order_acquire);
    uint32_t entry = index % kMapEntriesPerObject;
    chunk[entry].store(owner, std::memory_order_release);
    // Write the whole 4 KiB block around the entry from memory, under the lock, so
    // the block on disk always equals the newest image.
    constexpr uint32_t kEntriesPerBlock = 4096 / 4;
    uint32_t first = entry / kEntriesPerBlock * kEntriesPerBlock;
    Buffer block = Buffer::get(4096);
    for (uint32_t i = 0; i < kEntriesPerBlock; ++i) {
      put_le32(block.data() + 4 * i, chunk[first + i].load(std::memory_order_relaxed));
    }
    st = co_await store_.write(id, uint64_t{first} * 4, block.span(), {fua});
  }
  co_await switch_to(*home);
  co_return st;
}

// ---- per-object pieces (on the owner reactor) ----------------------------------

Task<Status> Vdi::read_piece(uint32_t index, uint64_t offset, std::span<uint8_t> out) {
  while (true) {
    VdiId owner = map_get(index);
    if (owner == kNoVdi) {
      std::memset(out.data(), 0, out.size());
      co_return Status::ok();
    }
    Status st = co_await store_.read(ObjectId::data(owner, inode_.family, index), offset, out);
    if (st.code() != ENOENT) co_return st;
    if (map_get(index) != owner) continue;  // deallocated or replaced meanwhile
    KELPIE_LOG_ERROR("VDI '{}': object {} is in the map but missing", inode_.name, index);
    co_return Status::error(EIO, "referenced object missing");
  }
}

Task<Status> Vdi::create_from_ancestor(uint32_t index, VdiId owner) {
  co_return co_await store_.create_from(data_id(index), ObjectId::data(owner, inode_.family, index));
}

Task<Status> Vdi::write_piece(uint32_t index, uint64_t offset, std::span<const uint8_t> data,
                              bool fua) {
  PerReactor& local = local_state();
  while (true) {
    VdiId owner = map_get(index);
    if (owner == inode_.id) {
      Status st = co_await store_.write(data_id(index), offset, data, {fua});
      if (st.code() == ENOENT && map_get(index) != inode_.id) continue;
      co_return st;
    }
    if (auto busy = local.busy.find(index); busy != local.busy.end()) {
      co_await busy->second->wait();
      continue;
    }
    Event done;
    local.busy[index] = &done;
    Status st;
    bool whole = offset == 0 && data.size() == object_size();
    if (owner == kNoVdi || whole) {
      // The first write after a map entry of 0 replaces whatever copy exists.
      st = co_await store_.write(data_id(index), offset, data,
                                 {fua, true, static_cast<uint32_t>(object_size())});
    } else {
      // Copy-on-write: the ancestor's object is copied where it lives, then written.
      st = co_await create_from_ancestor(index, owner);
      if (st.is_ok()) st = co_await store_.write(data_id(index), offset, data, {fua});
    }
    if (st.is_ok()) st = co_await map_set(index, inode_.id, fua);
    local.busy.erase(index);
    done.set();
    co_return st;
  }
}

Task<Status> Vdi::zero_piece(uint32_t index, uint64_t offset, uint64_t length, ZeroMode mode,
                             bool fua) {
  PerReactor& local = local_state();
  bool whole = offset == 0 && length == object_size();
  bool keep_allocated = mode == ZeroMode::kZeroNoHole;
  while (true) {
    if (auto busy = local.busy.find(index); busy != local.busy.end()) {
      co_await busy->second->wait();
      continue;
    }
    VdiId owner = map_get(index);
    if (owner == inode_.id && !(whole && !keep_allocated)) {
      Status st = co_await store_.zero(data_id(index), offset, length, fua);
      if (st.code() == ENOENT && map_get(index) != inode_.id) continue;
      co_return st;
    }
    if (owner == kNoVdi && !keep_allocated) co_return Status::ok();
    Event done;
    local.busy[index] = &done;
    Status st;
    auto object_bytes = static_cast<uint32_t>(object_size());
    if (whole && !keep_allocated) {
      // Drop the pointer first, then the target (an ancestor's object stays its own).
      st = co_await map_set(index, kNoVdi, fua);
      if (st.is_ok() && owner == inode_.id) st = co_await store_.remove(data_id(index));
    } else if (owner == kNoVdi || whole) {
      // NO_HOLE on a hole, or over a whole ancestor object: a fresh zero object.
      st = co_await store_.write(data_id(index), 0, {}, {fua, true, object_bytes});
      if (st.is_ok()) st = co_await map_set(index, inode_.id, fua);
    } else {
      // Part of an ancestor's object: copy it, then zero the part.
      st = co_await create_from_ancestor(index, owner);
      if (st.is_ok()) st = co_await store_.zero(data_id(index), offset, length, fua);
      if (st.is_ok()) st = co_await map_set(index, inode_.id, fua);
    }
    local.busy.erase(index);
    done.set();
    co_return st;
  }
}

// ---- byte ranges --------------------------------------------------------------

namespace {
// Calls fn(index, offset_in_object, piece_offset_in_request, length) per object piece.
template <typename Fn>
void for_each_piece(uint64_t offset, uint64_t length, uint32_t shift, Fn fn) {
  uint64_t done = 0;
  while (done < length) {
    uint64_t pos = offset + done;
    uint64_t index = pos >> shift;
    uint64_t in_object = pos & ((uint64_t{1} << shift) - 1);
    uint64_t n = std::min(length - done, (uint64_t{1} << shift) - in_object);
    fn(static_cast<uint32_t>(index), in_object, done, n);
    done += n;
  }
}
}  // namespace

Task<Status> Vdi::read(uint64_t offset, std::span<uint8_t> out) {
  KELPIE_ASSERT(offset + out.size() <= size());
  std::vector<Task<Status>> pieces;
  for_each_piece(offset, out.size(), object_shift(), [&](uint32_t index, uint64_t off, uint64_t at, uint64_t n) {
    pieces.push_back(run_on(reactors_.owner(data_id(index)), read_piece(index, off, out.subspan(at, n))));
  });
  if (pieces.size() == 1) co_return co_await std::move(pieces[0]);
  co_return co_await when_all(std::move(pieces));
}

Task<Status> Vdi::write(uint64_t offset, std::span<const uint8_t> data, bool fua) {
  KELPIE_ASSERT(!read_only_);
  co_await gate_.enter();
  GatePass pass(gate_);
  KELPIE_ASSERT(offset + data.size() <= size());
  std::vector<Task<Status>> pieces;
  for_each_piece(offset, data.size(), object_shift(), [&](uint32_t index, uint64_t off, uint64_t at, uint64_t n) {
    pieces.push_back(run_on(reactors_.owner(data_id(index)), write_piece(index, off, data.subspan(at, n), fua)));
  });
  if (pieces.size() == 1) co_return co_await std::move(pieces[0]);
  co_return co_await when_all(std::move(pieces));
}

Task<Status> Vdi::zero_range(uint64_t offset, uint64_t length, ZeroMode mode, bool fua) {
  KELPIE_ASSERT(!read_only_);
  co_await gate_.enter();
  GatePass pass(gate_);
  KELPIE_ASSERT(offset + length <= size());
  // Bounded fan-out: a trim of a whole 64 TiB disk must not make millions of tasks at once.
  constexpr size_t kBatch = 64;
  std::vector<Task<Status>> pieces;
  Status result;
  uint64_t done = 0;
  while (done < length && result.is_ok()) {
    uint64_t span = std::min(length - done, kBatch << object_shift());
    uint64_t start = offset + done;
    for_each_piece(start, span, object_shift(), [&](uint32_t index, uint64_t off, uint64_t, uint64_t n) {
      pieces.push_back(run_on(reactors_.owner(data_id(index)), zero_piece(index, off, n, mode, fua)));
    });
    result = co_await when_all(std::move(pieces));
    pieces.clear();
    done += span;
  }
  co_return result;
}

Task<Status> Vdi::trim(uint64_t offset, uint64_t length, bool fua) {
  return zero_range(offset, length, ZeroMode::kTrim, fua);
}

Task<Status> Vdi::write_zeroes(uint64_t offset, uint64_t length, bool no_hole, bool fua) {
  return zero_range(offset, length, no_hole ? ZeroMode::kZeroNoHole : ZeroMode::kZeroKeepHoles, fua);
}

Task<Status> Vdi::flush() { return store_.flush(); }

std::vector<Vdi::Extent> Vdi::block_status(uint64_t offset, uint64_t length, size_t max_extents) const {
  std::vector<Extent> extents;
  uint64_t end = std::min(size(), offset + length);
  uint64_t pos = offset;
  while (pos < end) {
    uint32_t index = static_cast<uint32_t>(pos >> object_shift());
    uint64_t object_end = std::min(end, (uint64_t{index} + 1) << object_shift());
    bool allocated = map_get(index) != kNoVdi;
    if (!extents.empty() && extents.back().allocated == allocated) {
      extents.back().length += object_end - pos;
    } else {
      if (extents.size() == max_extents) break;
      extents.push_back({object_end - pos, allocated});
    }
    pos = object_end;
  }
  return extents;
}

// ---- whole-VDI changes (on reactor 0) ------------------------------------------

Task<Status> Vdi::resize(uint64_t new_size) {
  AsyncMutex::Guard guard = co_await inode_mutex_.lock();
  uint64_t old_size = size();
  if (new_size < old_size) {
    // Free what lies beyond the new end, and zero the tail of the last object, so a
    // later grow reads zeros there.
    size_bytes_.store(new_size, std::memory_order_release);
    uint64_t tail_end = std::min(old_size, ((new_size + object_size() - 1) >> object_shift()) << object_shift());
    std::vector<Task<Status>> pieces;
    Status st;
    if (tail_end > new_size) {
      uint32_t index = static_cast<uint32_t>(new_size >> object_shift());
      uint64_t off = new_size & (object_size() - 1);
      st = co_await run_on(reactors_.owner(data_id(index)),
                           zero_piece(index, off, object_size() - off, ZeroMode::kZeroKeepHoles, false));
    }
    uint64_t first = (new_size + object_size() - 1) >> object_shift();
    uint64_t last = (old_size + object_size() - 1) >> object_shift();
    for (uint64_t i = first; i < last && st.is_ok(); ++i) {
      auto index = static_cast<uint32_t>(i);
      if (map_get(index) == kNoVdi) continue;
      st = co_await run_on(reactors_.owner(data_id(index)),
                           zero_piece(index, 0, object_size(), ZeroMode::kTrim, false));
    }
    if (!st.is_ok()) co_return st;
  } else {
    size_bytes_.store(new_size, std::memory_order_release);
  }
  Status st = co_await write_inode(false);
  if (st.is_ok()) st = co_await store_.flush();
  co_return st;
}

Task<Status> Vdi::freeze_and_continue(VdiId new_head, uint32_t snapshot_id, std::string tag,
                                      int64_t now_unix_s) {
  KELPIE_ASSERT(!read_only_);
  Inode frozen = inode();
  frozen.snapshot_id = snapshot_id;
  frozen.tag = std::move(tag);
  Inode head = inode();
  head.id = new_head;
  head.parent = frozen.id;
  head.snapshot_id = 0;
  head.tag.clear();
  head.created_unix_s = now_unix_s;
  // The new head first (its table names the frozen inode's map objects), then the
  // frozen inode, both durable (FUA) before the directory makes the switch official.
  // The data is not flushed: acknowledged writes are in the frozen objects already,
  // and a snapshot has the same write-cache durability as the VDI it came from
  // (the client's next FLUSH syncs them). That keeps a snapshot O(1) in the data.
  std::vector<uint8_t> head_image = encode_inode(head);
  Status st = co_await store_.write(ObjectId::inode(new_head, head.family), 0, head_image,
                                    {true, true, kInodeObjectSize});
  std::vector<uint8_t> frozen_image = encode_inode(frozen);
  if (st.is_ok()) {
    st = co_await store_.write(ObjectId::inode(frozen.id, frozen.family), 0, frozen_image, {true});
  }
  if (st.is_ok()) pending_head_ = std::move(head);
  co_return st;
}

void Vdi::switch_to_new_head() {
  KELPIE_ASSERT(pending_head_.has_value());
  inode_ = std::move(*pending_head_);
  pending_head_.reset();
  for (uint32_t k = 0; k < kMaxMapObjects; ++k) map_owned_[k].store(false, std::memory_order_release);
  parent_id_.store(inode_.parent, std::memory_order_release);
  head_id_.store(inode_.id, std::memory_order_release);
}

}  // namespace kelpie
