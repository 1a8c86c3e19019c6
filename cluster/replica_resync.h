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
//    It does not order itself against client writes: the gateway calls it under the
//    object's lock; others rely on the conditional install described above.
#pragma once

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

class ReplicaResync {
 public:
  ReplicaResync(PeerClient& peers, ReplicaService& local) : peers_(peers), local_(local) {}

  Task<ResyncOutcome> run(const EpochView& view, ObjectId id, bool repair,
                          std::vector<NodeIndex> suspects);

 private:
  Task<Result<PeerReply>> send(const EpochView& view, NodeIndex node, const PeerRequest& request);
  Task<ReplicaCopy> fetch(const EpochView& view, NodeIndex node, ObjectId id);

  PeerClient& peers_;
  ReplicaService& local_;
};

}  // namespace kelpie
