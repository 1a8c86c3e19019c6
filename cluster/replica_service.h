// ReplicaService: how a storage node serves its copies to gateways and peers.
//
// Contract:
//  - handle() serves one peer request (PeerHandler); apply() is the same for the
//    gateway's own in-process replica. Both run on the calling reactor.
//  - The epoch fence: a request from another epoch is answered kEpochMismatch with
//    this node's epoch, and nothing is done.
//  - Updates are admitted in one epoch and land before the next one's recovery looks
//    (rule 3; issue 13 case 6). An update (kWrite, resync installs included, kZero,
//    kCreateFrom, kRemove) can wait after the fence: for its object's recovery, for
//    room below the full ratio (up to 5 s), for the source's size. So the epoch is
//    checked again at admission, after every such wait and right before the store
//    applies it: an update whose epoch is no longer this node's latest is answered
//    kEpochMismatch (with the newer epoch, so the gateway retries on the new replica
//    set with the same version) and nothing changed; a create waiting for room gives
//    up as soon as the epoch moves. An admitted update is counted, per epoch, until
//    the store has applied it. The recovery reads a node of epoch e+1 makes here —
//    kListObjects, kFetchObject and kObjectVersion with kPeerFlagDurable, served in
//    e+1 — first wait until no update admitted in an earlier epoch is still being
//    applied (kNotReady after kOlderUpdatesWait: the asker retries). The count and the
//    re-check share one mutex, and a reactor serves e+1 only after latest_epoch() says
//    e+1, so either that wait sees the update or the update sees e+1 and is refused:
//    a listing or fetch of e+1 never misses an update admitted in e that lands later.
//    The store's own queue (the object's range lock) is not re-checked: an update
//    admitted before the epoch moved may still land after it, but never after a
//    recovery read of the newer epoch. This node's own listing (Recovery, from the
//    store directly) does not wait: an update landing after it only makes this copy
//    newer than listed, which recovery's installs (only if newer) and old-copy
//    removal (version re-checked under the object's lock) allow for; at worst an old
//    copy goes just before such an update reaches it, and that update fails (the
//    gateway settles the object) instead of landing.
//  - Objects are served only once recovery says they are current here (ensure()).
//  - Writes carry the writer's version; the local store refuses lower generations
//    (ESTALE). A gateway-only node has no store and refuses data requests (EINVAL).
//  - kRemove is fenced the same way (LocalStore::remove_versioned): a remover whose
//    generation is below the highest generation the copy has stored or admitted gets
//    ESTALE and the copy stays (an old gateway's late undo of a failed create, or its
//    whole-object trim, must not remove what a newer attach wrote). The same or a newer
//    generation removes it whatever its sequence: a VDI delete or reclaim raises the
//    generation first (a directory operation), so it removes copies of any older
//    writer. Like a write it first waits for recovery (ensure(): the copy judged is the
//    newest); an object judged unavailable (rule 2) is removed without that wait, as
//    before. An empty version is not fenced; an absent object is ok.
//  - Per-VDI fence (set_fences(), cluster/vdi_fences.h): a write, zero, copy-on-write
//    or remove whose generation is below the highest attach generation the VDI
//    directory granted for the object's VDI is refused with ESTALE, nothing changed,
//    even for an object the newer attach has not written here (the per-copy fence
//    above can not see those); until this node has loaded the directory once, such
//    updates are answered kNotReady (the sender retries). Resync installs are exempt.
//  - kAdmin is refused (ENOTSUP): admin requests between nodes use the admin
//    protocol for now (docs/protocol.md).
//  - Full ratio (rule 4): a request that makes an object (kWrite with kPeerFlagCreate,
//    kCreateFrom) is refused with ENOSPC before anything is allocated when this node's
//    data filesystem would pass its full ratio (cluster/full_ratio.h; while creates in
//    flight hold the room, it waits for them, up to 5 s). A kWrite with
//    kPeerFlagResync is a resync: installed whole and durable at its version unless the
//    copy held is newer (EAGAIN), never refused for space.
//  - kObjectVersion with kPeerFlagDurable (rule 7, cluster/old_copies.h): the copy is
//    made durable first (LocalStore::sync_object; a failed fdatasync fails the store,
//    never retried) and the reply says so (PeerReply::durable). An ENOENT reply says
//    so only if this node's recovery of the epoch had completed before it looked
//    (Recovery::current_in): then the object was removed on purpose.
//  - Write holds (rule 4, kHold in peer_protocol.h, used by an outside resync,
//    cluster/replica_resync.h): while a hold on an object is live (placed, not released,
//    its lease not over) every kWrite, kZero, kRemove and kCreateFrom of that object (as
//    the destination) is answered kNotReady (the gateway retries it), except a resync
//    install carrying the hold's token (kPeerFlagHeld). Such an install is refused with
//    EAGAIN, nothing changed, when that hold is not live. Reads, fetches and versions
//    are served as usual. A write is checked against the holds just before the store
//    applies it and counted until it is done; placing a hold answers only once no
//    counted write of that object is still being applied (EAGAIN if the lease ran out
//    meanwhile), so after it nothing but the holder's installs changes the copy. A
//    live hold of another token: EBUSY. The lease is at most kMaxHoldLeaseMs; a
//    release of an unknown or expired token does nothing. Holds live in memory only:
//    a restart drops them (the resyncer's installs then get EAGAIN).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

#include "cluster/epoch_state.h"
#include "cluster/full_ratio.h"
#include "cluster/peer_transport.h"
#include "cluster/recovery.h"
#include "cluster/vdi_fences.h"
#include "engine/local_store.h"

namespace kelpie {

class ReplicaService final : public PeerHandler {
 public:
  // store and recovery are null on a gateway-only node.
  // full_ratio: null for no check.
  ReplicaService(LocalStore* store, Recovery* recovery, EpochState& epochs, Uuid self,
                 std::function<Uuid()> cluster_id, const FullRatio* full_ratio = nullptr);

  Status accept_hello(const PeerHello& hello) override;
  Task<PeerReply> handle(const PeerRequest& request) override;
  // In-process: kRead bytes go straight into read_into.
  Task<PeerReply> apply(const PeerRequest& request, std::span<uint8_t> read_into);
  // The per-VDI fences to apply (none: no per-VDI fence). Set before serving.
  void set_fences(const VdiFences* fences) { fences_ = fences; }

 private:
  // How long a recovery read waits for updates admitted in an earlier epoch.
  static constexpr std::chrono::milliseconds kOlderUpdatesWait{1000};

  Task<PeerReply> serve(const PeerRequest& request, std::span<uint8_t> read_into);
  // Room for a create admitted in `epoch`: kEpochMismatch once the epoch moves.
  Task<Result<FullRatio::Reservation>> reserve_space(uint64_t bytes, uint64_t epoch);

  // Admission (header): an update of `id` let past the epoch re-check and the write
  // holds, counted (per object for holds, per epoch for recovery reads) until it is
  // destroyed (when the store has applied it).
  class Admission {
   public:
    Admission(ReplicaService* service, ObjectId id, uint64_t epoch)
        : service_(service), id_(id), epoch_(epoch) {}
    Admission(Admission&& other) noexcept
        : service_(other.service_), id_(other.id_), epoch_(other.epoch_) {
      other.service_ = nullptr;
    }
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;
    ~Admission();

   private:
    ReplicaService* service_;
    ObjectId id_;
    uint64_t epoch_;
  };
  struct HoldState {
    uint64_t token = 0;  // 0: no hold
    std::chrono::steady_clock::time_point until{};
    uint32_t writing = 0;  // admitted writes not yet done
    bool live(std::chrono::steady_clock::time_point now) const { return token != 0 && now < until; }
  };
  // Lets `request` (a write, zero, remove or create of `id`, served in `epoch`) past
  // the epoch re-check and the holds, or says why not (kEpochMismatch: the epoch
  // moved; kNotReady: held; EAGAIN: a held install whose hold is not live).
  // REQUIRES: no suspension between this call and the store call it admits.
  Result<Admission> admit(const ObjectId& id, const PeerRequest& request, uint64_t epoch);
  // Before a recovery read served in `epoch`: ok once no update admitted in an earlier
  // epoch is being applied; kNotReady after kOlderUpdatesWait.
  Task<Status> wait_older_updates(uint64_t epoch);
  Task<Status> place_hold(const PeerRequest& request);
  void release_hold(const PeerRequest& request);

  LocalStore* store_;
  Recovery* recovery_;
  EpochState& epochs_;
  Uuid self_;
  std::function<Uuid()> cluster_id_;
  const FullRatio* full_ratio_;
  const VdiFences* fences_ = nullptr;
  // Serve runs on any reactor: the holds and write counts are shared under a mutex
  // (never held across a suspension). An entry exists while held or written.
  std::mutex holds_mutex_;
  std::unordered_map<ObjectId, HoldState, ObjectIdHash> holds_;
  // Admitted updates not yet applied, by the epoch they were admitted in (an entry
  // exists while its count is above 0). Guarded by holds_mutex_ (header: why one mutex).
  std::map<uint64_t, uint32_t> updating_;
};

}  // namespace kelpie
