// ReplicaResync: makes every replica of one object equal to one chosen copy
// (DESIGN.md rule 4, "No silent divergence"). Used by `cluster check` (with and
// without repair), by the gateway after a write that failed on some replica
// (ReplicatedStore), after a takeover attach, and by a node restarted after an
// unclean stop for the objects of its dirty logs (ClusterMember).
//
// Contract:
//  - choose_copy() is a pure function. Among the copies that were read (status ok):
//    the newest version wins (rule 2); among the copies of that version, the content
//    held by the most copies; on a tie, a content held by a copy on a node that is not
//    a suspect (a node whose write failed, or that stopped uncleanly, is a suspect);
//    then the content of the copy first in replica-set order (the primary first).
//    Every other copy that is missing (ENOENT), has a bad checksum (EIO), is older, or
//    differs from the chosen content has a problem; so has one that could not be read
//    for another reason ("unreachable": not rewritten, the resync is incomplete).
//  - run() fetches every replica of `id` in `view` (kFetchObject, kPeerFlagRecovery,
//    in replica-set order), chooses, and with `repair` rewrites each missing, stale,
//    bad or differing copy from the chosen one: a kWrite of the whole object with
//    kPeerFlagCreate | kPeerFlagFua | kPeerFlagResync at the chosen version, which a
//    replica installs durably unless it already holds a newer version (then it answers
//    EAGAIN: a later write landed; the resync is incomplete and may be run again).
//    Resync writes are exempt from the full ratio (they repair, they do not grow).
//  - Outcome.complete: every replica answered and, with repair, every problem was
//    fixed. It never throws and never asserts on remote input.
//  - Runs on any reactor (peer calls on the current one; the local copy through the
//    in-process ReplicaService). The caller keeps `view`, peers and service alive.
//  - Ordering against client writes. Writes to different blocks of one object are in
//    flight at once, so a copy fetched may miss a write that lands later, and
//    installing it elsewhere would erase that write from a replica that had it (an
//    acknowledged write lost without trace). Two ways to rule that out:
//      * ResyncHold::kNone: the caller orders itself. The gateway's own resync runs
//        under its object lock (ReplicatedStore), so none of its writes to the object
//        is in flight; it takes no hold, and so can never wait on a hold against its
//        own retried writes.
//      * ResyncHold::kHoldWrites, for every caller outside the gateway that has the
//        VDI attached (ClusterMember: the resync after an unclean stop, `cluster check
//        --repair`): before fetching, run() places a write hold with a random token and
//        a lease (`hold_lease`, a few seconds, well below the gateway's write retry
//        deadline) on every replica (kHold, peer_protocol.h; replica_service.h). A
//        held replica refuses client writes with kNotReady, which the gateway retries
//        on every replica with the same version (within its retry deadline, keeping
//        its range lock) until the hold is gone; a replica grants the hold only after
//        the writes it was applying are done: from then on only the resync changes the
//        copies. Only held replicas are fetched and rewritten (the
//        installs carry kPeerFlagHeld and the token; a replica whose hold expired
//        answers EAGAIN and stays as it was). A replica that cannot be reached is
//        reported unreachable, as before. If any replica answers the hold with an
//        error (EBUSY: another resync holds it; EAGAIN; an error of any kind), no copy
//        is rewritten: the resync is incomplete and may be run again. On EBUSY it
//        first releases its holds and tries again (5 ms doubling to 200 ms, for up to
//        two leases): resyncs of one object by several nodes take turns. A node that does
//        not know kHold closes the connection (unknown op): not held, unreachable.
//        At the end the hold is released on every replica that granted it (success or
//        not); a lost release ends with the lease.
#pragma once

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cluster/epoch_state.h"
#include "cluster/peer_protocol.h"
#include "cluster/peer_transport.h"
#include "cluster/replica_service.h"
#include "common/status.h"
#include "engine/buffer.h"
#include "engine/object_version.h"

namespace kelpie {

// One replica's copy as fetched. status: ok, ENOENT (missing), EIO (bad checksum),
// anything else (unreachable or not ready).
struct ReplicaCopy {
  NodeIndex node = 0;
  Status status;
  ObjectVersion version;
  uint32_t object_size = 0;
  uint32_t crc = 0;  // crc32c of data
  Buffer data;
};

enum class CopyProblem { kNone, kMissing, kBadChecksum, kUnreachable, kStale, kDiffers };

struct CopyChoice {
  std::optional<size_t> chosen;         // index into the copies; none: no readable copy
  std::vector<CopyProblem> problems;    // one per copy (kNone for the chosen and equal ones)
};

// Pure: see the contract. `suspects` are node indices of the view.
CopyChoice choose_copy(std::span<const ReplicaCopy> copies, std::span<const NodeIndex> suspects);

// "missing copy", "bad checksum", "unreachable (<message>)", "stale version", "differs".
std::string describe_problem(CopyProblem problem, const ReplicaCopy& copy);

struct ResyncIssue {
  NodeIndex node = 0;
  std::string problem;
  bool repaired = false;
};

struct ResyncOutcome {
  bool complete = false;
  bool readable = false;               // some copy could be read
  std::optional<NodeIndex> chosen;     // the node whose copy was chosen
  size_t copies = 0;                   // replicas asked
  std::vector<ResyncIssue> issues;
};

enum class ResyncHold { kNone, kHoldWrites };

// The lease of an outside resync's write hold (ReplicationOptions::retry_deadline,
// 30 s by default, is what a gateway's write may wait through).
constexpr std::chrono::milliseconds kResyncHoldLease{5000};

class ReplicaResync {
 public:
  ReplicaResync(PeerClient& peers, ReplicaService& local,
                std::chrono::milliseconds hold_lease = kResyncHoldLease)
      : peers_(peers), local_(local), hold_lease_(hold_lease) {}

  Task<ResyncOutcome> run(const EpochView& view, ObjectId id, bool repair,
                          std::vector<NodeIndex> suspects, ResyncHold hold = ResyncHold::kNone);

 private:
  Task<Result<PeerReply>> send(const EpochView& view, NodeIndex node, const PeerRequest& request);
  Task<ReplicaCopy> fetch(const EpochView& view, NodeIndex node, ObjectId id);
  PeerRequest hold_request(const EpochView& view, ObjectId id, uint64_t token, bool release) const;
  // The write holds of one run, one entry per replica in replica-set order.
  struct Holds {
    uint64_t token = 0;
    std::vector<bool> held;
    std::vector<std::string> why_not;  // for a replica not held
    bool refused = false;              // some replica answered the hold with an error
    bool busy = false;                 // some replica is held by another resync (EBUSY)
  };
  // Rewrites `node`'s copy from `best` (hold_token 0: no hold).
  Task<bool> rewrite(const EpochView& view, ObjectId id, NodeIndex node, const ReplicaCopy& best,
                     uint64_t hold_token);
  Task<Holds> place_holds(const EpochView& view, ObjectId id, const std::vector<NodeIndex>& nodes);
  Task<void> release_holds(const EpochView& view, ObjectId id, const std::vector<NodeIndex>& nodes,
                           const Holds& holds);

  PeerClient& peers_;
  ReplicaService& local_;
  std::chrono::milliseconds hold_lease_;
};

}  // namespace kelpie
