#include "cluster/replicated_store.h"

#include "cluster/replicated_store_internal.h"

#include <cerrno>
#include <optional>
#include <unordered_set>

#include "common/log.h"
#include "engine/object_file.h"
#include "engine/offload.h"
#include "engine/sync.h"

namespace kelpie {

using Clock = std::chrono::steady_clock;

constexpr const char* kNoView =
    "this node has no usable epoch: it has not joined a formatted cluster, or it lost "
    "touch with the cluster (membership lease lapsed)";

ReplicatedStore::ReplicatedStore(EpochState& epochs, PeerClient& peers, ReplicaService& local,
                                 const ReactorPool& reactors, ReplicationOptions options)
    : epochs_(epochs),
      peers_(peers),
      local_(local),
      reactors_(reactors),
      options_(options),
      resync_(peers, local) {
  for (size_t i = 0; i < reactors.size(); ++i) shards_.push_back(std::make_unique<Shard>());
}

ReplicatedStore::~ReplicatedStore() { stop(); }

Task<std::shared_ptr<const EpochView>> ReplicatedStore::current_view(
    std::chrono::steady_clock::time_point deadline) {
  if (!epochs_.current()) {
    bool joined = co_await epochs_.wait_any(deadline);
    if (!joined) co_return nullptr;
  }
  if (!epochs_.serving()) {
    // The lease lapsed (this node stalled or lost touch): hold until it is back.
    bool back = co_await epochs_.wait_serving(deadline);
    if (!back) co_return nullptr;
  }
  co_return epochs_.current();
}

Task<Result<PeerReply>> ReplicatedStore::send(const EpochView& view, NodeIndex node,
                                              const PeerRequest& request,
                                              std::span<uint8_t> read_into) {
  if (view.self && node == *view.self) {
    co_return Result<PeerReply>(co_await local_.apply(request, read_into));
  }
  const MemberInfo& member = view.member(node);
  co_return co_await peers_.call(member.id, member.peer_address, request, read_into);
}

namespace {

const char* op_name(PeerOp op) {
  switch (op) {
    case PeerOp::kWrite: return "write";
    case PeerOp::kZero: return "zero";
    case PeerOp::kCreateFrom: return "copy-on-write";
    case PeerOp::kRemove: return "remove";
    case PeerOp::kSync: return "sync";
    default: return "request";
  }
}

bool makes_object(const PeerRequest& request) {
  return request.op == PeerOp::kCreateFrom ||
         (request.op == PeerOp::kWrite && (request.flags & kPeerFlagCreate) != 0);
}

// How long the gateway refuses creates on a node that refused one for space.
constexpr std::chrono::milliseconds kFullMemory{2000};

}  // namespace

Task<Status> ReplicatedStore::replicate(PeerRequest request, bool all_nodes) {
  Outcome outcome = co_await replicate_detailed(std::move(request), all_nodes);
  co_return outcome.status;
}

Task<ReplicatedStore::Outcome> ReplicatedStore::replicate_detailed(PeerRequest request,
                                                                    bool all_nodes) {
  const auto deadline = Clock::now() + options_.retry_deadline;
  Status last = Status::error(EIO, "no replica answered");
  Outcome result;
  auto fail = [&result](Status status) {
    result.status = std::move(status);
    return std::move(result);
  };
  for (;;) {
    std::shared_ptr<const EpochView> view = co_await current_view(deadline);
    if (!view) co_return fail(Status::error(EIO, kNoView));
    if (!all_nodes) {
      // Before every attempt, the first and each retry: a lapse of the lease while
      // this waited may mean another gateway owns the VDI now.
      if (Status attach = co_await check_attach(request.id.vdi); !attach) {
        result.sent = false;  // not ours to settle: the VDI's new owner settles it
        co_return fail(attach);
      }
    }
    std::vector<NodeIndex> targets;
    if (all_nodes) {
      for (NodeIndex i = 0; i < view->members.size(); ++i) targets.push_back(i);
    } else {
      ReplicaSet set = view->replicas(request.id);
      targets.assign(set.begin(), set.end());
      uint32_t min_copies = std::max<uint32_t>(1, view->record.min_copies);
      if (targets.size() < min_copies && request.op != PeerOp::kRemove) {
        KELPIE_LOG_ERROR("{} of object {} refused: epoch {} has {} of {} copies, below min-copies {}",
                         op_name(request.op), request.id.to_hex(), view->epoch(), targets.size(),
                         view->record.copies, min_copies);
        co_return fail(Status::error(EIO, "too few replicas (below min-copies)"));
      }
    }
    if (!all_nodes && makes_object(request)) {
      // A node that refused a create for space a moment ago: refuse before sending.
      Shard& shard = *shards_[Reactor::current()->index()];
      auto now = Clock::now();
      for (NodeIndex node : targets) {
        auto full = shard.full_until.find(view->member(node).id);
        if (full == shard.full_until.end()) continue;
        if (full->second.until <= now || full->second.removals != removals_.load()) {
          shard.full_until.erase(full);
          continue;
        }
        co_return fail(Status::error(ENOSPC, "node " + uuid_to_string(view->member(node).id) +
                                                 " is full (it refused a create for space)"));
      }
    }
    request.epoch = view->epoch();
    result.sent = true;
    result.failed.clear();
    std::vector<std::optional<Result<PeerReply>>> replies(targets.size());
    // The remote copies go first and this node's own copy last, after the frames
    // this queues have left (SendQueue flushes after the turn's ready work), so
    // the replicas work while this node writes.
    std::vector<Task<Status>> tasks;
    tasks.reserve(targets.size());
    auto send_one = [](ReplicatedStore* self, const EpochView& view, NodeIndex node,
                       const PeerRequest& request, std::optional<Result<PeerReply>>& out,
                       bool after_peers) -> Task<Status> {
      if (after_peers) co_await after_ready();
      out.emplace(co_await self->send(view, node, request, {}));
      co_return Status::ok();
    };
    std::optional<size_t> own;
    for (size_t i = 0; i < targets.size(); ++i) {
      if (view->self && targets[i] == *view->self) {
        own = i;
      } else {
        tasks.push_back(send_one(this, *view, targets[i], request, replies[i], false));
      }
    }
    if (own) {
      const bool after_peers = !tasks.empty();
      tasks.push_back(send_one(this, *view, targets[*own], request, replies[*own], after_peers));
    }
    (void)co_await when_all(std::move(tasks));

    bool wait_epoch = false;
    bool retry_soon = false;
    bool all_ok = true;
    Status refusal;
    for (size_t i = 0; i < replies.size(); ++i) {
      const MemberInfo& member = view->member(targets[i]);
      const Result<PeerReply>& outcome = *replies[i];
      if (!outcome) {
        all_ok = false;
        wait_epoch = true;
        result.failed.push_back(member.id);
        last = Status::error(EIO, "node " + uuid_to_string(member.id) + ": " +
                                      outcome.status().to_string());
        continue;
      }
      const PeerReply& reply = outcome.value();
      if (reply.status == 0) continue;
      all_ok = false;
      if (reply.status == kEpochMismatch) {
        if (reply.epoch > view->epoch()) {
          wait_epoch = true;
        } else {
          retry_soon = true;
        }
        continue;
      }
      if (request.op == PeerOp::kRemove && reply.status == ENOENT) continue;
      if (reply.status == ESTALE) {
        KELPIE_LOG_ERROR("{} of object {} fenced by node {}: a newer attach owns this VDI ({})",
                         op_name(request.op), request.id.to_hex(), uuid_to_string(member.id),
                         reply.message);
        // Not ours to settle: the object belongs to the newer attach now. A remove
        // says ESTALE so that an undo knows there is nothing of its own left to undo.
        result.sent = false;
        if (request.op == PeerOp::kRemove) {
          co_return fail(Status::error(ESTALE, "remove fenced by a newer attach"));
        }
        co_return fail(Status::error(EIO, "write fenced by a newer attach"));
      }
      if (reply.status == kNotReady) {
        retry_soon = true;
        continue;
      }
      // A replica refused or failed: no point retrying. ENOSPC wins, so that the
      // client is told the cluster is full.
      result.failed.push_back(member.id);
      if (reply.status == ENOSPC) {
        KELPIE_LOG_ERROR("{} of object {} refused by node {}: {}", op_name(request.op),
                         request.id.to_hex(), uuid_to_string(member.id), reply.message);
        if (makes_object(request)) {
          shards_[Reactor::current()->index()]->full_until[member.id] = {Clock::now() + kFullMemory,
                                                                   removals_.load()};
        }
      } else {
        KELPIE_LOG_ERROR("{} of object {} failed on node {}: {} ({})", op_name(request.op),
                         request.id.to_hex(), uuid_to_string(member.id), reply.message,
                         reply.status);
      }
      if (refusal.is_ok() || reply.status == ENOSPC) refusal = Status::error(reply.status, reply.message);
    }
    if (!refusal.is_ok()) co_return fail(refusal);
    if (all_ok || (!wait_epoch && !retry_soon)) co_return fail(Status::ok());
    if (Clock::now() >= deadline) {
      KELPIE_LOG_ERROR("{} of object {} gave up after {} ms: {}", op_name(request.op),
                       request.id.to_hex(), options_.retry_deadline.count(), last.to_string());
      co_return fail(Status::error(EIO, last.message()));
    }
    if (wait_epoch) {
      // The replica set changes with the next epoch; a node that merely paused may
      // also come back, so look again after a short while in any case.
      (void)co_await epochs_.wait_newer(view->epoch(),
                                        std::min(deadline, Clock::now() + std::chrono::milliseconds(500)));
    } else {
      co_await sleep_for(std::chrono::milliseconds(10));
    }
  }
}

namespace {
Status replaced(VdiId head) {
  return Status::error(EIO, "VDI " + std::to_string(head) +
                                ": this gateway's write attach was taken over by another gateway");
}
}  // namespace

Result<uint64_t> ReplicatedStore::update_generation(const ObjectId& id) const {
  std::optional<WriteGrants::Grant> grant = grants_.find(id.vdi);
  if (!grant) return generation_.load();
  if (grant->revoked) return replaced(id.vdi);
  return grant->generation;
}

Task<Status> ReplicatedStore::check_attach(VdiId head) {
  std::optional<WriteGrants::Grant> grant = grants_.find(head);
  if (!grant) co_return Status::ok();
  if (grant->revoked) co_return replaced(head);
  const uint64_t breaks = epochs_.lease_breaks();
  if (grant->lease_breaks == breaks || !validator_) co_return Status::ok();
  AttachValidator validator = validator_;
  const uint64_t generation = grant->generation;
  std::function<Result<bool>()> work = [validator, head, generation] { return validator(head, generation); };
  Result<bool> still = co_await offload<Result<bool>>(std::move(work));
  if (!still) {
    co_return Status::error(EIO, "VDI " + std::to_string(head) +
                                     ": the membership lease lapsed and the attach could not be "
                                     "confirmed: " + still.status().message());
  }
  if (!*still) {
    grants_.revoke(head);
    KELPIE_LOG_ERROR("VDI {}: this node lost touch with the cluster and its write attach (generation "
                     "{}) is another gateway's now; its I/O fails from now on", head, generation);
    co_return replaced(head);
  }
  grants_.confirm(head, generation, breaks);
  co_return Status::ok();
}

Task<Status> ReplicatedStore::ordered_update(PeerRequest request, uint64_t first_block,
                                             uint64_t last_block) {
  Reactor* home = Reactor::current();
  Reactor& owner = reactors_.owner(request.id);
  co_await switch_to(owner);
  Shard& shard = *shards_[owner.index()];
  Entry* entry = enter(shard, request.id);
  const bool create = makes_object(request);
  const bool settles = request.op != PeerOp::kRemove;
  Status status;
  {
    RangeLock::Guard guard = co_await lock_for_update(*entry, first_block, last_block);
    Result<uint64_t> generation = update_generation(request.id);
    Outcome outcome;
    if (generation) {
      request.version = ObjectVersion{*generation, sequence_.fetch_add(1) + 1};
      outcome = co_await replicate_detailed(request, false);
    } else {
      outcome.status = generation.status();
    }
    status = outcome.status;
    if (status && create && shard.unsynced.erase(request.id) > 0) {
      unsynced_count_.fetch_sub(1);  // every replica now holds the new object
    }
    // Each replica copied its own copy of the source: if those may differ (the source
    // waits for a resync: same family, so same shard), so may the new copies.
    std::optional<std::vector<Uuid>> unsettled_source;
    if (status && request.op == PeerOp::kCreateFrom) {
      if (auto source = shard.unsynced.find(request.src); source != shard.unsynced.end()) {
        unsettled_source = source->second.suspects;
      }
    }
    if (!status && outcome.sent && settles) {
      // Rule 4: settle the object before the error goes back, under its lock.
      co_await settle(shard, *entry, request.id, request.version.generation, create,
                      std::move(outcome.failed), std::move(guard));
    } else if (unsettled_source) {
      // Settled now, under its lock, like a failed update (but not undone: it is made).
      co_await settle(shard, *entry, request.id, request.version.generation, false,
                      std::move(*unsettled_source), std::move(guard));
    } else {
      guard.release();
      unlock_update(*entry);
    }
  }
  leave(shard, request.id, entry);
  co_await switch_to(*home);
  co_return status;
}

Task<Status> ReplicatedStore::write(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                                    WriteOptions options) {
  if (data.empty() && !options.create) co_return Status::ok();
  PeerRequest request;
  request.op = PeerOp::kWrite;
  request.id = id;
  request.offset = offset;
  request.length = data.size();
  request.data = data;
  request.object_size = options.object_size;
  request.flags = (options.fua ? kPeerFlagFua : 0) | (options.create ? kPeerFlagCreate : 0);
  uint64_t first = offset / kBlockSize;
  uint64_t last = (offset + std::max<size_t>(data.size(), 1) - 1) / kBlockSize;
  if (options.create) {
    first = 0;
    last = UINT64_MAX / 2;
  }
  co_return co_await ordered_update(request, first, last);
}

Task<Status> ReplicatedStore::zero(ObjectId id, uint64_t offset, uint64_t length, bool fua) {
  if (length == 0) co_return Status::ok();
  PeerRequest request;
  request.op = PeerOp::kZero;
  request.id = id;
  request.offset = offset;
  request.length = length;
  request.flags = fua ? kPeerFlagFua : 0;
  co_return co_await ordered_update(request, offset / kBlockSize,
                                    (offset + length - 1) / kBlockSize);
}

Task<Status> ReplicatedStore::create_from(ObjectId dst, ObjectId src) {
  PeerRequest request;
  request.op = PeerOp::kCreateFrom;
  request.id = dst;
  request.src = src;
  co_return co_await ordered_update(request, 0, UINT64_MAX / 2);
}

Task<Status> ReplicatedStore::remove(ObjectId id) {
  PeerRequest request;
  request.op = PeerOp::kRemove;
  request.id = id;
  Status status = co_await ordered_update(request, 0, UINT64_MAX / 2);
  if (status.is_ok()) removals_.fetch_add(1);  // forgets the full marks (see Shard)
  // Fenced by a newer attach: this gateway's I/O fails with EIO, as its writes do.
  if (status.code() == ESTALE) co_return Status::error(EIO, status.message());
  co_return status;
}

Task<Status> ReplicatedStore::flush() {
  PeerRequest request;
  request.op = PeerOp::kSync;
  co_return co_await replicate(request, true);
}

Task<Status> ReplicatedStore::read(ObjectId id, uint64_t offset, std::span<uint8_t> out) {
  if (out.empty()) co_return Status::ok();
  if (grants_.any_revoked()) {
    if (std::optional<WriteGrants::Grant> grant = grants_.find(id.vdi); grant && grant->revoked) {
      co_return replaced(id.vdi);
    }
  }
  const auto deadline = Clock::now() + options_.retry_deadline;
  Status last = Status::error(EIO, "no replica of object " + id.to_hex() + " answered");
  for (;;) {
    std::shared_ptr<const EpochView> view = co_await current_view(deadline);
    if (!view) co_return Status::error(EIO, kNoView);
    std::vector<NodeIndex> order = co_await read_order(*view, id);
    PeerRequest request;
    request.op = PeerOp::kRead;
    request.epoch = view->epoch();
    request.id = id;
    request.offset = offset;
    request.length = out.size();
    bool wait_epoch = false;
    bool retry_soon = false;
    size_t missing = 0;
    for (NodeIndex node : order) {
      auto reply = co_await send(*view, node, request, out);
      if (!reply) {
        wait_epoch = true;
        last = reply.status();
        continue;
      }
      if (reply->status == 0) co_return Status::ok();
      if (reply->status == ENOENT) {
        // Missing on this copy; ENOENT only if every replica says so.
        ++missing;
        last = Status::error(ENOENT, reply->message);
        continue;
      }
      if (reply->status == kEpochMismatch) {
        (reply->epoch > view->epoch() ? wait_epoch : retry_soon) = true;
        continue;
      }
      if (reply->status == kNotReady) {
        retry_soon = true;
        continue;
      }
      // EIO (a bad block on that copy) or another local failure: try the next copy.
      last = Status::error(reply->status, reply->message);
      KELPIE_LOG_WARN("read of object {} from node {} failed: {}; trying another copy",
                      id.to_hex(), uuid_to_string(view->member(node).id), reply->message);
    }
    if (missing == order.size()) co_return last;  // ENOENT everywhere
    if (!wait_epoch && !retry_soon) co_return missing > 0 ? Status::error(EIO, last.message()) : last;
    if (Clock::now() >= deadline) co_return Status::error(EIO, last.message());
    if (wait_epoch) {
      (void)co_await epochs_.wait_newer(view->epoch(),
                                        std::min(deadline, Clock::now() + std::chrono::milliseconds(500)));
    } else {
      co_await sleep_for(std::chrono::milliseconds(10));
    }
  }
}

Task<Result<std::vector<ObjectId>>> ReplicatedStore::list_objects(VdiId owner) {
  const auto deadline = Clock::now() + options_.retry_deadline;
  for (;;) {
    std::shared_ptr<const EpochView> view = co_await current_view(deadline);
    if (!view) co_return Status::error(EIO, kNoView);
    PeerRequest request;
    request.op = PeerOp::kListObjects;
    request.epoch = view->epoch();
    std::unordered_set<ObjectId, ObjectIdHash> found;
    bool complete = true;
    for (NodeIndex node = 0; node < view->members.size(); ++node) {
      auto reply = co_await send(*view, node, request, {});
      if (!reply || reply->status != 0) {
        complete = false;
        break;
      }
      for (const ListedObject& object : reply->objects) {
        if (object.id.vdi == owner) found.insert(object.id);
      }
    }
    if (complete) co_return std::vector<ObjectId>(found.begin(), found.end());
    if (Clock::now() >= deadline) co_return Status::error(EIO, "could not list every node");
    (void)co_await epochs_.wait_newer(view->epoch(),
                                      std::min(deadline, Clock::now() + std::chrono::milliseconds(500)));
  }
}

}  // namespace kelpie
