// Old copies go per object (DESIGN.md rule 7): a copy this storage node holds but
// does not own in the current epoch is deleted once every current replica of that
// object holds it durably at or above this copy's version — not when "the whole
// cluster" finishes recovery, which never happens under churn or while any node is
// "incomplete" (rule 2).
//
// Contract:
//  - pass(view) (on a reactor) goes once over the copies this node holds whose
//    object it does not own in `view` (view.holds(id) false; REQUIRES view.self). For
//    each it asks every member of the object's replica set in that epoch, with
//    OBJECT_VERSION and kPeerFlagDurable, whether it holds the object durably (the
//    replica fdatasyncs it first; cluster/peer_protocol.h), at most kMaxInFlight
//    objects at a time, and stops asking at the first answer that keeps the copy.
//  - The decision is old_copy_removable() below, a pure function: remove only if the
//    replica set is writable in that epoch (at least max(1, min_copies) members), not
//    empty, and every member answered "durable at a version >= mine" or "completed
//    this epoch's recovery and holds no copy" (removed on purpose: a delete). Anything
//    else — unreachable, lagging, ENOENT while still recovering, not ready, an epoch
//    mismatch, a node that does not know the flag — keeps the copy for a later pass.
//    Versions compare as recovery compares them (engine/object_version.h).
//  - The removal itself (LocalStore::remove_old_copy) rechecks, under the object's
//    exclusive lock and right before the unlink, that the copy is still at or below
//    the version the replicas vouched for, that this node is still in that epoch
//    (EpochState::latest_epoch(), published before a new epoch's recovery lists
//    anything), that it still does not own the object, and that `go_on()` holds. A
//    new epoch's listing therefore never counts a copy that is about to go.
//  - Returns how many copies it removed and how many unowned copies it kept. `go_on`
//    is called from any thread (also on the owner reactor of each object).
//
// Why the recovery authority (cluster/recovery_authority.h) stays sound: a node h
// that drops X in epoch j left copies >= its own on every member of R_j(X), which
// was writable. Take the last such drop before a later listing, in epoch j': the
// members of R_j'(X) still hold copies >= it, so a walk that hears any of them hears
// a copy at least that new, and a walk that hears none of them stops at j' (a
// writable epoch with no member heard: unavailable) before it could lean on h's
// silence about an older epoch. In the current epoch every member answers the
// listing, and a lister that must hold X vouched (durably, before the drop) for a
// copy it lists itself.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "cluster/epoch_state.h"
#include "cluster/peer_transport.h"
#include "engine/local_store.h"
#include "engine/object_version.h"

namespace kelpie {

// What one current replica said about its copy.
struct ReplicaDurability {
  enum class Kind {
    kUnknown,  // no usable answer: unreachable, lagging, not durable, an old node, ...
    kDurable,  // holds the object durably at `version`
    kGone,     // completed this epoch's recovery and holds no copy (removed on purpose)
  };
  Kind kind = Kind::kUnknown;
  ObjectVersion version;
};

// True if this node may delete its copy at version `mine`: `writable` (the replica set
// has at least max(1, min_copies) members), `replicas` (one answer per member of the
// object's replica set in the epoch) is not empty, and each is kGone or kDurable at a
// version >= `mine`.
bool old_copy_removable(const ObjectVersion& mine, bool writable,
                        std::span<const ReplicaDurability> replicas);

// Reads an OBJECT_VERSION reply to a request with kPeerFlagDurable.
ReplicaDurability durability_of(const PeerReply& reply);

class OldCopies {
 public:
  static constexpr size_t kMaxInFlight = 4;

  OldCopies(LocalStore& store, EpochState& epochs, PeerClient& peers);

  struct PassResult {
    uint64_t removed = 0;
    uint64_t kept = 0;     // unowned copies left for a later pass
    bool failed = false;   // this node's own copies could not be listed: try again
  };
  // See the contract above. `go_on` (any thread) false ends the pass early; the
  // objects not reached count as kept.
  Task<PassResult> pass(std::shared_ptr<const EpochView> view, std::function<bool()> go_on);

 private:
  struct State;
  Task<void> worker(std::shared_ptr<State> state);
  // Asks the replicas and removes the copy if they allow it; true if removed.
  Task<bool> settle(const State& state, const StoredObject& object);
  Task<ReplicaDurability> ask(const EpochView& view, NodeIndex replica, const ObjectId& id);

  LocalStore& store_;
  EpochState& epochs_;
  PeerClient& peers_;
};

}  // namespace kelpie
