// FaultStore: an ObjectStore over another one that fails chosen writes the way a
// gateway's replicated store reports them (cluster/replicated_store.h, rule 4), for
// the engine's unit tests:
//  - fail_write_after_applying(id): the next write of `id` without create is applied
//    and then fails with EIO (it failed on one replica; the settle resynced the
//    newest copy, this write's, onto every replica).
//  - fail_create_and_undo(id): the next create of `id` fails with EIO and the object
//    is removed (a failed create is undone everywhere, whatever copy existed before).
// Each fault fires once. creates(id) counts the creates of `id` that reached it.
// Thread-safe: the VDI layer calls from every reactor.
#pragma once

#include <cerrno>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "engine/object_store.h"

namespace kelpie {

class FaultStore final : public ObjectStore {
 public:
  explicit FaultStore(ObjectStore& inner) : inner_(inner) {}

  void fail_write_after_applying(ObjectId id) {
    std::lock_guard lock(mutex_);
    fail_write_ = id;
  }
  void fail_create_and_undo(ObjectId id) {
    std::lock_guard lock(mutex_);
    fail_create_ = id;
  }
  unsigned creates(ObjectId id) {
    std::lock_guard lock(mutex_);
    auto found = creates_.find(id);
    return found == creates_.end() ? 0 : found->second;
  }

  Task<Status> read(ObjectId id, uint64_t offset, std::span<uint8_t> out) override {
    return inner_.read(id, offset, out);
  }
  Task<Status> write(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                     WriteOptions options) override {
    bool fail_applied = false;
    bool fail_undo = false;
    {
      std::lock_guard lock(mutex_);
      if (options.create) {
        creates_[id]++;
        fail_undo = take(fail_create_, id);
      } else {
        fail_applied = take(fail_write_, id);
      }
    }
    if (fail_undo) {
      Status removed = co_await inner_.remove(id);
      if (!removed.is_ok()) co_return removed;
      co_return Status::error(EIO, "injected: create failed on a replica and was undone");
    }
    Status st = co_await inner_.write(id, offset, data, options);
    if (st.is_ok() && fail_applied) {
      co_return Status::error(EIO, "injected: write failed on a replica, settled to this copy");
    }
    co_return st;
  }
  Task<Status> zero(ObjectId id, uint64_t offset, uint64_t length, bool fua) override {
    return inner_.zero(id, offset, length, fua);
  }
  Task<Status> create_from(ObjectId dst, ObjectId src) override { return inner_.create_from(dst, src); }
  Task<Status> remove(ObjectId id) override { return inner_.remove(id); }
  Task<Status> flush() override { return inner_.flush(); }
  Task<Result<std::vector<ObjectId>>> list_objects(VdiId owner) override {
    return inner_.list_objects(owner);
  }

 private:
  static bool take(std::optional<ObjectId>& armed, const ObjectId& id) {
    if (!armed || *armed != id) return false;
    armed.reset();
    return true;
  }

  ObjectStore& inner_;
  std::mutex mutex_;
  std::optional<ObjectId> fail_write_;
  std::optional<ObjectId> fail_create_;
  std::unordered_map<ObjectId, unsigned, ObjectIdHash> creates_;
};

}  // namespace kelpie
