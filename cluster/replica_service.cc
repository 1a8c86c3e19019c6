#include "cluster/replica_service.h"

#include <algorithm>
#include <cerrno>

#include "common/uuid.h"

namespace kelpie {

ReplicaService::ReplicaService(LocalStore* store, Recovery* recovery, EpochState& epochs,
                               Uuid self, std::function<Uuid()> cluster_id,
                               const FullRatio* full_ratio)
    : store_(store),
      recovery_(recovery),
      epochs_(epochs),
      self_(self),
      cluster_id_(std::move(cluster_id)),
      full_ratio_(full_ratio) {}

Status ReplicaService::accept_hello(const PeerHello& hello) {
  if (hello.protocol_version != kPeerProtocolVersion) {
    return Status::error(EPROTO, "peer protocol version " + std::to_string(hello.protocol_version) +
                                     " is not supported (this node speaks " +
                                     std::to_string(kPeerProtocolVersion) + ")");
  }
  Uuid cluster = cluster_id_();
  if (cluster == Uuid{}) return Status::error(EINVAL, "this node's cluster is not formatted yet");
  if (hello.cluster != cluster) {
    return Status::error(EINVAL, "peer belongs to cluster " + uuid_to_string(hello.cluster) +
                                     ", this node to cluster " + uuid_to_string(cluster));
  }
  if (hello.expected_receiver != self_) {
    return Status::error(EINVAL, "peer expected node " + uuid_to_string(hello.expected_receiver) +
                                     ", this is node " + uuid_to_string(self_));
  }
  return Status::ok();
}

Task<PeerReply> ReplicaService::handle(const PeerRequest& request) {
  return serve(request, {});
}

Task<PeerReply> ReplicaService::apply(const PeerRequest& request, std::span<uint8_t> read_into) {
  return serve(request, read_into);
}

namespace {
void fail(PeerReply& reply, const Status& status) {
  reply.status = status.code();
  reply.message = status.message();
}
}  // namespace

Task<Result<FullRatio::Reservation>> ReplicaService::reserve_space(uint64_t bytes, uint64_t epoch) {
  // Creates in flight may hold the room this one needs: wait for them (bounded), but
  // not past the epoch (header): the gateway retries on the new replica set.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    if (epochs_.latest_epoch() != epoch) {
      co_return Status::error(kEpochMismatch, "the epoch moved while a create waited for room");
    }
    auto reserved = full_ratio_->reserve(bytes);
    if (reserved || reserved.status().code() != EAGAIN) co_return reserved;
    if (std::chrono::steady_clock::now() >= deadline) {
      co_return Status::error(ENOSPC, "node " + uuid_to_string(self_) +
                                          " is full: " + reserved.status().message());
    }
    co_await sleep_for(std::chrono::milliseconds(5));
  }
}

ReplicaService::Admission::~Admission() {
  if (service_ == nullptr) return;
  std::lock_guard lock(service_->holds_mutex_);
  auto updating = service_->updating_.find(epoch_);
  KELPIE_ASSERT(updating != service_->updating_.end() && updating->second > 0);
  if (--updating->second == 0) service_->updating_.erase(updating);
  auto it = service_->holds_.find(id_);
  if (it == service_->holds_.end()) return;
  HoldState& state = it->second;
  state.writing--;
  if (state.writing == 0 && !state.live(std::chrono::steady_clock::now())) service_->holds_.erase(it);
}

Result<ReplicaService::Admission> ReplicaService::admit(const ObjectId& id,
                                                       const PeerRequest& request, uint64_t epoch) {
  if (fences_ != nullptr && (request.flags & kPeerFlagResync) == 0) {
    // One writer per VDI: an update below the VDI's attach generation comes from a
    // gateway whose attach was taken over (vdi_fences.h).
    switch (fences_->admit(id.vdi, request.version.generation, kNotReady)) {
      case 0:
        break;
      case ESTALE:
        return Status::error(ESTALE, "object " + id.to_hex() + ": generation " +
                                         std::to_string(request.version.generation) +
                                         " is below VDI " + std::to_string(id.vdi) +
                                         "'s attach generation " +
                                         std::to_string(fences_->fence(id.vdi)) + " (fenced)");
      default:
        return Status::error(kNotReady, "this node has not loaded the VDI directory yet");
    }
  }
  const auto now = std::chrono::steady_clock::now();
  const bool held_install = request.op == PeerOp::kWrite &&
                            (request.flags & kPeerFlagResync) != 0 &&
                            (request.flags & kPeerFlagHeld) != 0;
  std::lock_guard lock(holds_mutex_);
  // Checked and counted in one critical section with wait_older_updates() (header).
  const uint64_t latest = epochs_.latest_epoch();
  if (latest != epoch) {
    return Status::error(kEpochMismatch, "object " + id.to_hex() + ": the epoch moved from " +
                                             std::to_string(epoch) + " to " +
                                             std::to_string(latest) + " before it was applied");
  }
  HoldState& state = holds_[id];
  const bool live = state.live(now);
  if (held_install && !(live && state.token == request.hold_token)) {
    if (state.writing == 0 && !live) holds_.erase(id);
    return Status::error(EAGAIN, "the resync's write hold on object " + id.to_hex() +
                                     " is gone (expired, released or replaced)");
  }
  if (!held_install && live) {
    return Status::error(kNotReady, "object " + id.to_hex() + " is held by a resync");
  }
  state.writing++;
  updating_[epoch]++;
  return Admission(this, id, epoch);
}

Task<Status> ReplicaService::wait_older_updates(uint64_t epoch) {
  const auto deadline = std::chrono::steady_clock::now() + kOlderUpdatesWait;
  for (;;) {
    uint64_t oldest = 0;
    {
      std::lock_guard lock(holds_mutex_);
      if (updating_.empty() || updating_.begin()->first >= epoch) co_return Status::ok();
      oldest = updating_.begin()->first;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      co_return Status::error(kNotReady, "updates admitted in epoch " + std::to_string(oldest) +
                                             " are still being applied on this node");
    }
    co_await sleep_for(std::chrono::milliseconds(1));
  }
}

Task<Status> ReplicaService::place_hold(const PeerRequest& request) {
  if (request.hold_token == 0 || request.lease_ms == 0) {
    co_return Status::error(EINVAL, "a hold needs a token and a lease");
  }
  const auto lease = std::chrono::milliseconds(std::min(request.lease_ms, kMaxHoldLeaseMs));
  {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(holds_mutex_);
    for (auto it = holds_.begin(); it != holds_.end();) {  // forget expired, idle holds
      it = it->second.writing == 0 && !it->second.live(now) ? holds_.erase(it) : std::next(it);
    }
    HoldState& state = holds_[request.id];
    if (state.live(now) && state.token != request.hold_token) {
      co_return Status::error(EBUSY, "object " + request.id.to_hex() + " is held by another resync");
    }
    state.token = request.hold_token;
    state.until = now + lease;
  }
  // From here no new write is admitted; wait for those admitted before.
  for (;;) {
    {
      std::lock_guard lock(holds_mutex_);
      auto it = holds_.find(request.id);
      if (it == holds_.end() || it->second.token != request.hold_token ||
          !it->second.live(std::chrono::steady_clock::now())) {
        co_return Status::error(EAGAIN, "the hold on object " + request.id.to_hex() +
                                            " expired before the writes in progress finished");
      }
      if (it->second.writing == 0) co_return Status::ok();
    }
    co_await sleep_for(std::chrono::milliseconds(1));
  }
}

void ReplicaService::release_hold(const PeerRequest& request) {
  std::lock_guard lock(holds_mutex_);
  auto it = holds_.find(request.id);
  if (it == holds_.end() || it->second.token != request.hold_token || request.hold_token == 0) return;
  it->second.token = 0;
  if (it->second.writing == 0) holds_.erase(it);
}

Task<PeerReply> ReplicaService::serve(const PeerRequest& request, std::span<uint8_t> read_into) {
  PeerReply reply;
  const std::shared_ptr<const EpochView>& view = epochs_.current();
  reply.epoch = view ? view->epoch() : 0;
  if (request.op == PeerOp::kAdmin) {
    fail(reply, Status::error(ENOTSUP, "admin requests travel over the admin protocol"));
    co_return reply;
  }
  if (request.op == PeerOp::kHello) {
    fail(reply, Status::error(EPROTO, "hello after the handshake"));
    co_return reply;
  }
  if (!view || request.epoch != view->epoch()) {
    reply.status = kEpochMismatch;
    co_return reply;
  }
  if (!epochs_.serving()) {
    // Its lease lapsed: this node may be out of the cluster without knowing it yet.
    fail(reply, Status::error(kNotReady, "this node's membership lease lapsed"));
    co_return reply;
  }
  if (store_ == nullptr) {
    fail(reply, Status::error(EINVAL, "this node is a gateway and stores no objects"));
    co_return reply;
  }
  const uint64_t epoch = view->epoch();
  auto ensure = [&](const ObjectId& id) -> Task<Status> {
    if (recovery_ == nullptr) co_return Status::ok();
    co_return co_await recovery_->ensure(id, epoch);
  };
  auto finish = [&](const Status& status) {
    if (status.code() == kEpochMismatch) {
      // Say the newer epoch, so the sender waits for it instead of retrying here.
      reply.status = kEpochMismatch;
      reply.epoch = std::max(reply.epoch, epochs_.latest_epoch());
    } else if (!status) {
      fail(reply, status);
    }
  };

  switch (request.op) {
    case PeerOp::kRead: {
      // A read does not wait for this copy's recovery: another replica serves it
      // meanwhile (kNotReady sends the reader there).
      Status ready = recovery_ == nullptr ? Status::ok() : recovery_->ready_now(request.id, epoch);
      if (!ready) {
        finish(ready);
        break;
      }
      std::span<uint8_t> out = read_into;
      if (out.empty()) {
        reply.data = Buffer::get(request.length);
        out = std::span<uint8_t>(reply.data.data(), request.length);
      }
      Status status = co_await store_->read(request.id, request.offset, out);
      if (!status) reply.data = Buffer();
      finish(status);
      break;
    }
    case PeerOp::kWrite: {
      Status ready = co_await ensure(request.id);
      if (!ready) {
        finish(ready);
        break;
      }
      if ((request.flags & kPeerFlagResync) != 0) {
        auto admitted = admit(request.id, request, epoch);
        if (!admitted) {
          finish(admitted.status());
          break;
        }
        finish(co_await store_->install_unless_newer(request.id, request.version,
                                                     request.object_size, request.data));
        break;
      }
      FullRatio::Reservation space;
      if ((request.flags & kPeerFlagCreate) != 0 && full_ratio_ != nullptr) {
        auto reserved = co_await reserve_space(uint64_t{request.object_size} + kDataOffset, epoch);
        if (!reserved) {
          finish(reserved.status());
          break;
        }
        space = std::move(*reserved);
      }
      auto admitted = admit(request.id, request, epoch);
      if (!admitted) {
        finish(admitted.status());
        break;
      }
      WriteOptions options;
      options.fua = (request.flags & kPeerFlagFua) != 0;
      options.create = (request.flags & kPeerFlagCreate) != 0;
      options.object_size = request.object_size;
      options.version = request.version;
      finish(co_await store_->write(request.id, request.offset, request.data, options));
      break;
    }
    case PeerOp::kZero: {
      Status ready = co_await ensure(request.id);
      if (!ready) {
        finish(ready);
        break;
      }
      auto admitted = admit(request.id, request, epoch);
      if (!admitted) {
        finish(admitted.status());
        break;
      }
      finish(co_await store_->zero_versioned(request.id, request.offset, request.length,
                                             (request.flags & kPeerFlagFua) != 0,
                                             request.version));
      break;
    }
    case PeerOp::kCreateFrom: {
      Status ready = co_await ensure(request.src);
      if (!ready) {
        finish(ready);
        break;
      }
      FullRatio::Reservation space;
      if (full_ratio_ != nullptr) {
        auto source = co_await store_->stat_object(request.src);
        auto reserved = co_await reserve_space(
            (source ? source->object_size : kMaxObjectSize) + kDataOffset, epoch);
        if (!reserved) {
          finish(reserved.status());
          break;
        }
        space = std::move(*reserved);
      }
      auto admitted = admit(request.id, request, epoch);
      if (!admitted) {
        finish(admitted.status());
        break;
      }
      if (recovery_ != nullptr) recovery_->forget(request.id, epoch);
      finish(co_await store_->create_from_versioned(request.id, request.src, request.version));
      break;
    }
    case PeerOp::kRemove: {
      // Fenced like a write (header): the copy judged against must be the newest
      // one, so a pending object is pulled first. An unavailable object (rule 2) has
      // no newest copy to judge by; its remove goes on as before and clears the mark.
      Status ready = co_await ensure(request.id);
      if (!ready && !(recovery_ != nullptr && ready.code() == EIO &&
                      recovery_->unavailable(request.id, epoch))) {
        finish(ready);
        break;
      }
      auto admitted = admit(request.id, request, epoch);
      if (!admitted) {
        finish(admitted.status());
        break;
      }
      Status removed = co_await store_->remove_versioned(request.id, request.version);
      if (removed && recovery_ != nullptr) recovery_->forget(request.id, epoch);
      finish(removed);
      break;
    }
    case PeerOp::kSync:
      finish(co_await store_->flush());
      break;
    case PeerOp::kHold:
      if ((request.flags & kPeerFlagRelease) != 0) {
        release_hold(request);
      } else {
        finish(co_await place_hold(request));
      }
      break;
    case PeerOp::kListObjects: {
      // After the updates admitted in earlier epochs (header; rule 3).
      Status settled = co_await wait_older_updates(epoch);
      if (!settled) {
        finish(settled);
        break;
      }
      // Read before listing: the copies listed are then at least as new as it vouches
      // (cluster/recovery_authority.h, F3).
      std::optional<RecoveredEpochs> recovered;
      if ((request.flags & kPeerFlagRecoveredThrough) != 0) {
        recovered = recovery_ == nullptr ? RecoveredEpochs() : recovery_->recovered();
      }
      auto listed = co_await store_->list_all();
      if (!listed) {
        finish(listed.status());
        break;
      }
      reply.objects.reserve(listed->size());
      for (const StoredObject& object : *listed) {
        reply.objects.push_back(ListedObject{object.id, object.version, object.object_size});
      }
      if (recovered) {
        reply.recovered_through = recovered->through;
        reply.recovered_earlier = recovered->earlier;
      }
      break;
    }
    case PeerOp::kFetchObject: {
      // A recovery source: served without waiting for this node's own recovery (the
      // puller chose this copy by its version), after the writes it accepted: those
      // admitted in earlier epochs (header), then those holding the object's lock.
      Status settled = co_await wait_older_updates(epoch);
      if (!settled) {
        finish(settled);
        break;
      }
      auto fetched = co_await store_->fetch(request.id);
      if (!fetched) {
        finish(fetched.status());
        break;
      }
      reply.version = fetched->version;
      reply.object_size = fetched->object_size;
      reply.data = std::move(fetched->data);
      break;
    }
    case PeerOp::kObjectVersion: {
      if ((request.flags & kPeerFlagDurable) != 0) {
        // Rule 7: the asker deletes its old copy on this answer, so the version said
        // must be durable here, and include updates admitted in earlier epochs;
        // absence counts only once this node holds all it must.
        Status settled = co_await wait_older_updates(epoch);
        if (!settled) {
          finish(settled);
          break;
        }
        const bool current = recovery_ != nullptr && recovery_->current_in(epoch);
        auto synced = co_await store_->sync_object(request.id);
        if (!synced) {
          reply.durable = synced.status().code() == ENOENT && current;
          finish(synced.status());
          break;
        }
        reply.version = synced->version;
        reply.object_size = synced->object_size;
        reply.durable = true;
        break;
      }
      auto info = co_await store_->stat_object(request.id);
      if (!info) {
        finish(info.status());
        break;
      }
      reply.version = info->version;
      reply.object_size = info->object_size;
      break;
    }
    default:
      fail(reply, Status::error(EINVAL, "unknown peer request"));
      break;
  }
  co_return reply;
}

}  // namespace kelpie
