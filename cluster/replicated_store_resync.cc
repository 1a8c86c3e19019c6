// ReplicatedStore, rule 4 ("No silent divergence"): the per-object entries that order
// updates, settling an object after an update failed on some replica, the background
// retries, and the read order for objects not settled yet. Contract: replicated_store.h.
#include <algorithm>
#include <cerrno>
#include <thread>

#include "cluster/replicated_store.h"
#include "cluster/replicated_store_internal.h"
#include "common/log.h"

namespace kelpie {

using Clock = std::chrono::steady_clock;

namespace {

std::chrono::milliseconds backoff(unsigned attempts) {
  auto delay = std::chrono::milliseconds(1000) * (1u << std::min(attempts - 1, 5u));
  return std::min(delay, std::chrono::milliseconds(30000));
}

}  // namespace

ReplicatedStore::Entry* ReplicatedStore::enter(Shard& shard, const ObjectId& id) {
  auto& slot = shard.objects[id];
  if (!slot) slot = std::make_unique<Entry>();
  slot->users++;
  return slot.get();
}

void ReplicatedStore::leave(Shard& shard, const ObjectId& id, Entry* entry) {
  if (--entry->users == 0) shard.objects.erase(id);
}

Task<RangeLock::Guard> ReplicatedStore::lock_for_update(Entry& entry, uint64_t first_block,
                                                        uint64_t last_block) {
  for (;;) {
    while (entry.settling) co_await entry.changed.wait();
    RangeLock::Guard guard = co_await entry.lock.lock(first_block, last_block, true);
    if (!entry.settling) {
      entry.active++;
      co_return std::move(guard);
    }
    // A settle began while this update waited for its range: it goes first.
  }
}

void ReplicatedStore::unlock_update(Entry& entry) {
  KELPIE_ASSERT(entry.active > 0);
  entry.active--;
  pulse(entry.changed);
}

void ReplicatedStore::remember(Shard& shard) {
  if (shard.retrying || stopping_.load()) return;
  shard.retrying = true;
  background_.fetch_add(1);
  spawn(retry_loop(&shard));
}

Task<void> ReplicatedStore::settle(Shard& shard, Entry& entry, ObjectId id, uint64_t generation,
                                   bool undo_create, std::vector<Uuid> suspects,
                                   RangeLock::Guard guard) {
  auto [it, inserted] = shard.unsynced.try_emplace(id);
  if (inserted) unsynced_count_.fetch_add(1);
  Unsynced& record = it->second;
  record.generation = std::max(record.generation, generation);
  record.undo_create = record.undo_create || undo_create;
  for (const Uuid& node : suspects) {
    if (std::find(record.suspects.begin(), record.suspects.end(), node) == record.suspects.end()) {
      record.suspects.push_back(node);
    }
  }
  if (entry.settling) {
    // Another failed update settles the object once every update left it, this one
    // included: leave, then wait for that settle.
    guard.release();
    unlock_update(entry);
    while (entry.settling) co_await entry.changed.wait();
    co_return;
  }
  entry.settling = true;
  while (entry.active > 1) co_await entry.changed.wait();
  (void)co_await settle_once(shard, id);
  entry.settling = false;
  guard.release();
  unlock_update(entry);  // pulses `changed`: waiting updates go on
}

Task<bool> ReplicatedStore::settle_once(Shard& shard, ObjectId id) {
  auto found = shard.unsynced.find(id);
  if (found == shard.unsynced.end()) co_return true;
  Unsynced record = found->second;
  record.attempts++;
  bool done = false;
  std::string why;
  std::shared_ptr<const EpochView> view = epochs_.current();
  Status attach = Status::ok();
  if (view && epochs_.serving()) attach = co_await check_attach(id.vdi);
  if (!attach) {
    // The attach that started this ended: the VDI's new owner settles it (a takeover
    // resyncs the whole VDI); nothing of this gateway's may be written any more.
    KELPIE_LOG_WARN("object {}: settle dropped: {}", id.to_hex(), attach.message());
    done = true;
    record.undo_create = false;
  } else if (!view || !epochs_.serving()) {
    why = "no usable epoch";
  } else if (record.undo_create) {
    // Nothing references the object yet (rule 5): the create did not happen.
    PeerRequest remove;
    remove.op = PeerOp::kRemove;
    remove.id = id;
    // The failed create's own generation, never a later one: a copy a newer attach
    // wrote since refuses it (ESTALE) and keeps that attach's data.
    remove.version = ObjectVersion{record.generation != 0 ? record.generation : generation_.load(),
                                   sequence_.fetch_add(1) + 1};
    Status removed = co_await replicate(remove, false);
    // ESTALE: a newer attach made the object since (it owns the VDI now): none of
    // this gateway's create is left to undo.
    done = removed.is_ok() || removed.code() == ESTALE;
    if (!done) why = removed.to_string();
  } else {
    std::vector<NodeIndex> suspects;
    for (const Uuid& node : record.suspects) {
      if (auto index = view->ring.find(node)) suspects.push_back(*index);
    }
    ResyncOutcome outcome = co_await resync_.run(*view, id, true, std::move(suspects));
    if (outcome.chosen) record.chosen = view->member(*outcome.chosen).id;
    done = outcome.complete;
    size_t rewritten = 0;
    for (const ResyncIssue& issue : outcome.issues) {
      if (issue.repaired) {
        ++rewritten;
      } else {
        why += (why.empty() ? "" : "; ") + issue.problem +
               (issue.problem == "no readable copy" ? "" : " on node " + uuid_to_string(view->member(issue.node).id));
      }
    }
    if (done && rewritten > 0) {
      KELPIE_LOG_WARN("object {}: resynced after a failed update, {} copies rewritten from node {}",
                      id.to_hex(), rewritten, uuid_to_string(*record.chosen));
    }
  }
  found = shard.unsynced.find(id);  // the map may have changed meanwhile
  if (found == shard.unsynced.end()) co_return true;
  if (done) {
    if (record.undo_create) {
      KELPIE_LOG_WARN("object {}: a create that failed on some replica was undone everywhere",
                      id.to_hex());
    }
    shard.unsynced.erase(found);
    unsynced_count_.fetch_sub(1);
    co_return true;
  }
  if (record.attempts >= options_.resync_attempts) {
    KELPIE_LOG_ERROR("object {}: replicas may differ after a failed update; {} attempts to {} it "
                     "failed (last: {}); giving up: run `kelpie cluster check --repair`",
                     id.to_hex(), record.attempts, record.undo_create ? "undo" : "resync", why);
    shard.unsynced.erase(found);
    unsynced_count_.fetch_sub(1);
    co_return false;
  }
  auto delay = backoff(record.attempts);
  KELPIE_LOG_WARN("object {}: replicas may differ after a failed update; {} attempt {} of {} "
                  "failed ({}); retrying within {} ms or at the next epoch",
                  id.to_hex(), record.undo_create ? "undo" : "resync", record.attempts,
                  options_.resync_attempts, why, delay.count());
  record.next_try = Clock::now() + delay;
  record.suspects = std::move(found->second.suspects);  // with any added meanwhile
  found->second = std::move(record);
  remember(shard);
  co_return false;
}

Task<void> ReplicatedStore::retry_loop(Shard* shard) {
  std::shared_ptr<const EpochView> seen = epochs_.current();
  while (!stopping_.load() && !shard->unsynced.empty()) {
    auto now = Clock::now();
    auto earliest = now + std::chrono::milliseconds(200);
    for (const auto& [id, record] : shard->unsynced) earliest = std::min(earliest, record.next_try);
    if (earliest > now) {
      bool newer = co_await epochs_.wait_newer(seen ? seen->epoch() : 0, earliest);
      if (newer) {
        seen = epochs_.current();
        for (auto& [id, record] : shard->unsynced) record.next_try = Clock::now();
      }
    }
    std::vector<ObjectId> due;
    now = Clock::now();
    for (const auto& [id, record] : shard->unsynced) {
      if (record.next_try <= now) due.push_back(id);
    }
    for (const ObjectId& id : due) {
      if (stopping_.load()) break;
      Entry* entry = enter(*shard, id);
      while (entry->settling) co_await entry->changed.wait();
      entry->settling = true;
      while (entry->active > 0) co_await entry->changed.wait();
      (void)co_await settle_once(*shard, id);
      entry->settling = false;
      pulse(entry->changed);
      leave(*shard, id, entry);
    }
  }
  shard->retrying = false;
  background_.fetch_sub(1);
}

Task<std::vector<NodeIndex>> ReplicatedStore::read_order(const EpochView& view, const ObjectId& id) {
  ReplicaSet set = view.replicas(id);
  std::vector<NodeIndex> order;
  std::optional<Unsynced> record;
  if (unsynced_count_.load() > 0) {
    Reactor* home = Reactor::current();
    Reactor& owner = reactors_.owner(id);
    co_await switch_to(owner);
    Shard& shard = *shards_[owner.index()];
    if (auto it = shard.unsynced.find(id); it != shard.unsynced.end()) record = it->second;
    co_await switch_to(*home);
  }
  if (!record) {
    // Local first, then the others in replica-set order.
    if (view.self && set.contains(*view.self)) order.push_back(*view.self);
    for (NodeIndex node : set) {
      if (!view.self || node != *view.self) order.push_back(node);
    }
    co_return order;
  }
  // Not settled yet: one fixed order, so repeated reads see the same copy.
  auto suspect = [&](NodeIndex node) {
    const Uuid& member = view.member(node).id;
    return std::find(record->suspects.begin(), record->suspects.end(), member) != record->suspects.end();
  };
  if (record->chosen) {
    if (auto chosen = view.ring.find(*record->chosen); chosen && set.contains(*chosen)) {
      order.push_back(*chosen);
    }
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (NodeIndex node : set) {
      if (suspect(node) != (pass == 1)) continue;
      if (std::find(order.begin(), order.end(), node) == order.end()) order.push_back(node);
    }
  }
  co_return order;
}

bool ReplicatedStore::has_unsettled(VdiId owner) const {
  if (unsynced_count_.load() == 0) return false;
  for (size_t i = 0; i < shards_.size(); ++i) {
    const Shard* shard = shards_[i].get();
    bool found = reactors_.at(i).block_on([](const Shard* s, VdiId vdi) -> Task<bool> {
      for (const auto& [id, record] : s->unsynced) {
        if (id.vdi == vdi) co_return true;
      }
      co_return false;
    }(shard, owner));
    if (found) return true;
  }
  return false;
}

void ReplicatedStore::stop() {
  stopping_.store(true);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (background_.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace kelpie
