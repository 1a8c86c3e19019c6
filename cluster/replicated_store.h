// ReplicatedStore: the gateway's ObjectStore over the replicas of the current epoch
// (DESIGN.md, "Replication and consistency"; rules 1, 2, 6).
//
// Contract: implements ObjectStore (engine/object_store.h), so the VDI layer and the
// NBD server run on it unchanged.
//  - Every operation on an object runs on the object's owner reactor of this node;
//    writes, zeroes and copy-on-writes to overlapping blocks of one object go out one
//    after another, each only after the earlier one completed on every replica
//    (rule 1). Reads are not ordered against writes (a block device's contract).
//  - A write goes to every replica of the current epoch in parallel (the local
//    replica in-process) with version (generation, sequence) and completes when all
//    have applied it. Fewer replicas than min-copies: EIO at once, with a log line
//    saying why. A stale-epoch answer or an unreachable replica: wait for the next
//    epoch and retry on its replica set with the same version (idempotent), for up
//    to `retry_deadline`, then EIO. A replica that refuses the version (ESTALE: a
//    newer attach owns the VDI) makes the write or remove fail with EIO; an undo of
//    a failed create refused so is over (the object is the newer attach's now).
//  - Reads go to the local replica when there is one, else the primary, then the
//    others; a replica answering EIO (bad checksum) is skipped for the next one.
//  - flush() syncs every storage node of the epoch (one request each, in parallel).
//  - ENOSPC from any replica is returned as ENOSPC, with a log line naming the node
//    (a replica above its full ratio refuses creates before allocating anything).
//    For 2 s after a node refused a create for space, this gateway refuses creates
//    whose replica set holds that node with ENOSPC before sending anything (each
//    owner reactor remembers the refusals it saw), unless an object was removed
//    through this gateway since (a VDI delete frees space at once).
//  - Rule 4, no silent divergence: a write, zero or copy-on-write that failed after
//    some replica was asked (any failure but a refusal before sending, such as below
//    min-copies or no epoch) is settled before its error is returned, still holding
//    the object's lock; new updates of that object wait meanwhile:
//      * a failed create (kWrite with create, kCreateFrom) is undone: the object is
//        removed from every replica (nothing references it yet: rule 5, the map entry
//        is written only after its target is on every replica);
//      * a failed write or zero is resynced from one chosen copy (replica_resync.h;
//        the nodes whose write failed are the suspects: on a tie they lose).
//    A copy-on-write that succeeded from a source this gateway has not settled yet is
//    resynced the same way before it returns ok (each replica copied its own copy of
//    the source, so the new copies may differ as the source's do).
//    If that can not finish (a replica unreachable or failing), the object is
//    remembered on its owner reactor and settled again in the background: at every
//    new epoch and after a backoff (1 s doubling to 30 s), at most
//    `resync_attempts` times, each attempt logged; then it is given up with an error
//    line asking for `kelpie cluster check --repair`. A later create of the object
//    that every replica applied forgets it. Meanwhile a read of it goes to one fixed
//    copy, so repeated reads agree: the copy the last resync chose, else the replicas
//    whose write did not fail in replica-set order, the suspects last. (Only this
//    gateway knows: another node reading the object before it is settled may see
//    any copy; a takeover attach resyncs the whole VDI.)
//  - One writer per VDI (write_grants.h): an update of an object whose owner VDI has a
//    write grant here carries that grant's generation (other objects: the node-wide
//    generation of set_generation()); a revoked grant's updates and reads fail with
//    EIO before anything is sent. Whenever the membership lease has lapsed since the
//    grant was last confirmed (this node may have been failed out and its VDIs taken
//    over meanwhile), an update waits, before each attempt, until the attach validator
//    (run off the reactor) confirms from the VDI directory that the attach is still
//    this gateway's; if it is not, the grant is revoked and the update fails with EIO,
//    and a retry already in flight is not sent again. Background settles of an object
//    carry the generation of the update that failed and end when its grant is revoked.
//  - stop() (non-reactor thread, bounded) ends the background work; call before the
//    reactors stop.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "cluster/epoch_state.h"
#include "cluster/peer_transport.h"
#include "cluster/replica_resync.h"
#include "cluster/replica_service.h"
#include "cluster/write_grants.h"
#include "engine/object_store.h"
#include "engine/range_lock.h"
#include "engine/reactor_pool.h"

namespace kelpie {

struct ReplicationOptions {
  std::chrono::milliseconds retry_deadline{30000};
  unsigned resync_attempts = 12;  // background attempts per remembered object
};

class ReplicatedStore final : public ObjectStore {
 public:
  ReplicatedStore(EpochState& epochs, PeerClient& peers, ReplicaService& local,
                  const ReactorPool& reactors, ReplicationOptions options = {});
  ~ReplicatedStore() override;

  // The writer generation for versions from now on (raised by every write attach and
  // directory operation of this node; cluster-wide increasing).
  void set_generation(uint64_t generation) { generation_.store(generation); }
  uint64_t generation() const { return generation_.load(); }

  WriteGrants& grants() { return grants_; }
  // (head, generation) -> true while the directory names this gateway's attach of that
  // head with that generation, false once it does not, an error when it can not tell.
  // Blocking (a directory refresh); called off the reactors. Set before serving.
  using AttachValidator = std::function<Result<bool>(VdiId head, uint64_t generation)>;
  void set_attach_validator(AttachValidator validator) { validator_ = std::move(validator); }

  Task<Status> read(ObjectId id, uint64_t offset, std::span<uint8_t> out) override;
  Task<Status> write(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                     WriteOptions options) override;
  Task<Status> zero(ObjectId id, uint64_t offset, uint64_t length, bool fua) override;
  Task<Status> create_from(ObjectId dst, ObjectId src) override;
  Task<Status> remove(ObjectId id) override;
  Task<Status> flush() override;
  Task<Result<std::vector<ObjectId>>> list_objects(VdiId owner) override;

  // Whether objects owned by VDI `owner` wait for a settle (replicas may differ).
  // Non-reactor thread (visits every reactor).
  bool has_unsettled(VdiId owner) const;

  void stop();
  // Objects whose replicas may differ and which wait for a background resync.
  uint64_t unsynced_objects() const { return unsynced_count_.load(); }

 private:
  struct Shard;
  struct Entry;
  struct Unsynced;
  // What replicate() did: whether any replica was asked, and which failed.
  struct Outcome {
    Status status;
    bool sent = false;
    std::vector<Uuid> failed;
  };

  // This reactor's epoch view, waiting for the first one until `deadline` (null then).
  Task<std::shared_ptr<const EpochView>> current_view(std::chrono::steady_clock::time_point deadline);
  // The generation an update of `id` carries; EIO if its VDI's grant was revoked.
  Result<uint64_t> update_generation(const ObjectId& id) const;
  // OK unless the grant of `head` is revoked, or the lease lapsed since it was
  // confirmed and the validator does not confirm it now (then it is revoked).
  Task<Status> check_attach(VdiId head);
  Task<Status> ordered_update(PeerRequest request, uint64_t first_block, uint64_t last_block);
  // Sends `request` to every replica of `id` (or every storage node when all_nodes)
  // until all have applied it in one epoch.
  Task<Status> replicate(PeerRequest request, bool all_nodes);
  Task<Outcome> replicate_detailed(PeerRequest request, bool all_nodes);

  // Rule 4 (replicated_store_resync.cc), all on the object's owner reactor.
  Entry* enter(Shard& shard, const ObjectId& id);
  void leave(Shard& shard, const ObjectId& id, Entry* entry);
  Task<RangeLock::Guard> lock_for_update(Entry& entry, uint64_t first_block, uint64_t last_block);
  void unlock_update(Entry& entry);
  // After a failed update (or a copy-on-write from an unsettled source) that holds
  // `guard` (counted in entry.active): settles the object once every other update
  // holding a range of it finished (new ones wait), then releases the guard. If a
  // settle is already waiting, joins that one instead.
  Task<void> settle(Shard& shard, Entry& entry, ObjectId id, uint64_t generation, bool undo_create,
                    std::vector<Uuid> suspects, RangeLock::Guard guard);
  // One attempt (the caller has entry.settling and no update runs): true when done.
  Task<bool> settle_once(Shard& shard, ObjectId id);
  // Starts the shard's retry loop unless it runs.
  void remember(Shard& shard);
  Task<void> retry_loop(Shard* shard);
  Task<std::vector<NodeIndex>> read_order(const EpochView& view, const ObjectId& id);
  Task<Result<PeerReply>> send(const EpochView& view, NodeIndex node, const PeerRequest& request,
                               std::span<uint8_t> read_into);

  EpochState& epochs_;
  PeerClient& peers_;
  ReplicaService& local_;
  const ReactorPool& reactors_;
  ReplicationOptions options_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> generation_{1};
  WriteGrants grants_;
  AttachValidator validator_;
  std::atomic<uint64_t> sequence_{0};
  std::atomic<uint64_t> removals_{0};  // objects removed through this gateway
  ReplicaResync resync_;
  std::atomic<uint64_t> unsynced_count_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> background_{0};
};

}  // namespace kelpie
