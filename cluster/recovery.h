// Recovery: after every epoch change, this storage node pulls the objects it must
// hold and does not hold at the newest version (DESIGN.md, Recovery; rules 2, 3, 7).
//
// Contract:
//  - start(view) (any thread) begins recovery to that epoch, abandoning an older one.
//    Phase "listing": ask every storage node of the epoch (itself included, from
//    the local object list cache) for its object list with versions; an object this
//    node must hold (ring of the epoch) whose newest version is elsewhere, or that
//    it lacks, is pending. Phase "recovering": workers pull pending objects from a
//    holder of the newest version (kFetchObject; crc-verified at the source) and
//    install them (durable before they count). Phase "done": published through the
//    membership driver (and recorded first, see recovered_through below).
//  - Old copies (DESIGN.md rule 7; cluster/old_copies.h): from the start of the run,
//    not gated by anyone's "done", passes delete each copy this node holds but does
//    not own in the epoch once every member of that object's replica set holds it
//    durably at or above this copy's version. Passes repeat while unowned copies
//    remain, after 1 s, doubling to 30 s between them, and stop at once when the epoch
//    changes or on stop(). One log line per pass that removed something.
//  - Until listing is over, every object is unknown: ensure() waits. A pending
//    object asked for by a client jumps the queue: ensure() pulls it at once.
//  - Listing is over only with an epoch history that reaches this epoch (the
//    driver's epoch_history()). Without one, listing is retried every 50 ms, and
//    after 100 attempts every 1 s, doubling to 30 s, with the run in state
//    "incomplete" (logged once) while objects stay unknown: authority is never
//    judged from this epoch alone (that would make every copy authoritative, the
//    unsafe direction of rule 2), so such a run never says "done".
//  - Throttle: at most `workers` pulls in flight and at most `max_bytes_per_s` over
//    all of them (each worker pauses after a pull); pulls started by reads
//    (ready_now) add at most one more in flight.
//  - A copy a client wrote after listing is newer than any source: an install never
//    replaces a copy whose version is at or above the fetched one.
//  - Authority (DESIGN.md rule 2; the argument is in cluster/recovery_authority.h):
//    listing also collects which epochs each node completed the recovery of
//    (RecoveredEpochs: the last one and a window of 64 before it, kept durably in
//    RECOVERED_THROUGH in its data directory, reported in its LIST_OBJECTS reply). For every object this node must hold,
//    decide_authority() over the epoch history says whether the newest copy heard of
//    is authoritative. If not, the object is unavailable in this epoch: it is not
//    pulled, ensure() and ready_now() fail at once with EIO (logged once per object,
//    naming the nodes whose return would make it available), progress counts it, and
//    the run stays in state "incomplete" — never "done": recovered_through does not
//    advance. Old copies of other objects still go (rule 7, above); the unavailable
//    object's own replica set can not vouch for it, so its old copies stay.
//    A later epoch decides again (a holder that came back makes it recover normally);
//    forget() (a remove or a replacing copy-on-write) also clears it.
//  - recovered_through advances to an epoch only after every object this node holds
//    in it was judged authoritative and is installed durably, and the record itself
//    is fsync'd before anyone is told.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "cluster/epoch_state.h"
#include "cluster/membership.h"
#include "cluster/old_copies.h"
#include "cluster/peer_transport.h"
#include "cluster/recovery_authority.h"
#include "engine/local_store.h"

namespace kelpie {

struct RecoveryOptions {
  unsigned workers = 2;
  // Per node. On this 2-core host every node of a 4-node cluster pulls at once,
  // and 64 MiB/s each kept client reads above half their speed (bench/
  // recovery_bench.sh); 200 MiB/s each left reads at a third.
  uint64_t max_bytes_per_s = 64ull << 20;
};

class Recovery {
 public:
  Recovery(LocalStore& store, EpochState& epochs, PeerClient& peers, MembershipDriver& driver,
           const ReactorPool& reactors, Uuid self, RecoveryOptions options = {});
  ~Recovery();

  void start(std::shared_ptr<const EpochView> view);
  // Stops workers (bounded wait). From a non-reactor thread.
  void stop();

  // On a reactor: ok once `id` may be served in `epoch` here; kEpochMismatch status
  // if this node has moved past `epoch`; EIO if the newest copy can not be fetched.
  Task<Status> ensure(const ObjectId& id, uint64_t epoch);
  // On a reactor, without waiting (for reads, which another replica can serve): ok
  // once `id` may be served in `epoch` here; kNotReady while listing, or while `id`
  // is pending — its pull then starts at once in the background, ahead of the
  // queue; kEpochMismatch if this node has moved past `epoch`.
  Status ready_now(const ObjectId& id, uint64_t epoch);
  // Forget any pending pull of `id` (the object is being replaced or removed).
  void forget(const ObjectId& id, uint64_t epoch);
  // True if `id` was judged unavailable in `epoch` here (rule 2; see Authority). Any thread.
  bool unavailable(const ObjectId& id, uint64_t epoch) const;

  struct Progress {
    uint64_t epoch = 0;
    std::string state = "listing";
    uint64_t to_recover = 0;
    uint64_t done = 0;
    uint64_t unavailable = 0;
    double rate_mib_s = 0;
  };
  Progress progress() const;
  // Publishes progress and the store's object count and bytes (the bytes as last
  // measured with set_used_bytes) through the membership driver. Any thread.
  void publish_now();
  void set_used_bytes(uint64_t bytes) { used_bytes_.store(bytes); }
  // The epochs whose recovery this node completed. Any thread.
  RecoveredEpochs recovered() const;
  // True once every object this node must hold in `epoch` is here at its newest
  // version (that run pulled everything and found nothing unavailable), so an object
  // it lacks was removed on purpose. Any thread.
  bool current_in(uint64_t epoch) const {
    return done_epoch_.load(std::memory_order_acquire) == epoch;
  }

 private:
  struct Pending {
    ListedObject best;
    std::vector<NodeIndex> sources;
    bool in_flight = false;
  };
  struct Run;

  Task<void> run(std::shared_ptr<Run> run);
  Task<Status> list_all(std::shared_ptr<Run> run);
  // Decides authority for the objects this node holds (`seen`: id -> listing) and
  // fills the run's pending queue and unavailable set.
  struct Seen;
  Status decide(Run& run, const std::vector<EpochRecord>& history, const HeardNodes& heard,
                std::unordered_map<ObjectId, Seen, ObjectIdHash>& seen);
  // Waits while objects are unavailable; false if the run ended first.
  Task<bool> wait_available(std::shared_ptr<Run> run);
  // Adds `epoch` to the epochs this node completed, durably first; false if that
  // failed (then the run must not say "done").
  Task<bool> record_recovered(uint64_t epoch);
  // EIO for an object judged unavailable in `run` (logged once per object); ok otherwise.
  // REQUIRES: mutex_ held.
  Status unavailable_locked(Run& run, const ObjectId& id);
  Task<void> worker(std::shared_ptr<Run> run);
  Task<Status> pull(const Run& run, const ObjectId& id, const Pending& pending);
  // Pulls a pending object taken (in_flight) by ensure() or ready_now() and settles
  // the run's books; on failure the object goes back to the queue.
  Task<Status> pull_taken(std::shared_ptr<Run> run, ObjectId id, Pending pending);
  Task<void> pull_in_background(std::shared_ptr<Run> run, ObjectId id, Pending pending);
  // Old-copy passes (rule 7) for the run's epoch, with backoff, until none is left.
  Task<void> cleanup(std::shared_ptr<Run> run);
  // Sleeps `duration` in short slices; false if the run ended meanwhile.
  Task<bool> nap(const Run& run, std::chrono::milliseconds duration);
  void publish(const Run& run);

  LocalStore& store_;
  EpochState& epochs_;
  PeerClient& peers_;
  MembershipDriver& driver_;
  const ReactorPool& reactors_;
  Uuid self_;
  RecoveryOptions options_;
  OldCopies old_copies_;

  mutable std::mutex mutex_;
  std::shared_ptr<Run> run_;
  std::atomic<uint64_t> done_epoch_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> running_{0};
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<int> read_pulls_{0};  // pulls started by ready_now() in flight
  mutable std::mutex recovered_mutex_;
  RecoveredEpochs recovered_;  // guarded by recovered_mutex_
};

}  // namespace kelpie
