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
//    newer attach owns the VDI) makes the write fail with EIO.
//  - Reads go to the local replica when there is one, else the primary, then the
//    others; a replica answering EIO (bad checksum) is skipped for the next one.
//  - flush() syncs every storage node of the epoch (one request each, in parallel).
//  - ENOSPC from any replica is returned as ENOSPC.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <unordered_map>
#include <vector>

#include "cluster/epoch_state.h"
#include "cluster/peer_transport.h"
#include "cluster/replica_service.h"
#include "engine/object_store.h"
#include "engine/range_lock.h"
#include "engine/reactor_pool.h"

namespace kelpie {

struct ReplicationOptions {
  std::chrono::milliseconds retry_deadline{30000};
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

  Task<Status> read(ObjectId id, uint64_t offset, std::span<uint8_t> out) override;
  Task<Status> write(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                     WriteOptions options) override;
  Task<Status> zero(ObjectId id, uint64_t offset, uint64_t length, bool fua) override;
  Task<Status> create_from(ObjectId dst, ObjectId src) override;
  Task<Status> remove(ObjectId id) override;
  Task<Status> flush() override;
  Task<Result<std::vector<ObjectId>>> list_objects(VdiId owner) override;

 private:
  struct Shard;
  class Ordered;

  // This reactor's epoch view, waiting for the first one until `deadline` (null then).
  Task<std::shared_ptr<const EpochView>> current_view(std::chrono::steady_clock::time_point deadline);
  Task<Status> ordered_update(PeerRequest request, uint64_t first_block, uint64_t last_block);
  // Sends `request` to every replica of `id` (or every storage node when all_nodes)
  // until all have applied it in one epoch.
  Task<Status> replicate(PeerRequest request, bool all_nodes);
  Task<Result<PeerReply>> send(const EpochView& view, NodeIndex node, const PeerRequest& request,
                               std::span<uint8_t> read_into);

  EpochState& epochs_;
  PeerClient& peers_;
  ReplicaService& local_;
  const ReactorPool& reactors_;
  ReplicationOptions options_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> generation_{1};
  std::atomic<uint64_t> sequence_{0};
};

}  // namespace kelpie
