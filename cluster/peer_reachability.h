// Peer reachability: a storage node that heartbeats but that peers can not reach is
// evicted, with corroboration (issue 13 case 4; DESIGN.md, Replication: "a member it
// can't reach is ejected through the driver, so a broken link does not hang writes
// forever").
//
// Contract:
//  - PeerReachability records, per peer node, since when every call to it has failed
//    at the transport level (connect, hello, send, receive, call timeout: a Result
//    error of PeerClient::call). A reply of any status (ENOENT, kEpochMismatch, ...)
//    proves the peer reachable and clears its record. Thread-safe; a success while
//    nothing is failing costs one atomic load (PeerClient calls it on the data path).
//  - A peer failing for at least `threshold` is "unreachable". report() gives what
//    this node publishes in its member status (key kStatusKey): the epoch it judged
//    in, the peers failing at all ("failing": others probe them too, so that a second
//    opinion starts at once) and the unreachable ones ("nodes").
//  - set_epoch() says which storage nodes are in the epoch: only they are reported
//    unreachable. A peer the epoch newly lists is forgotten (a node that rejoins is
//    judged afresh); one it no longer lists is kept and still reported "failing"
//    while the caller probes it (retain() drops those no longer worth it), so that:
//  - rejoin_held(): a live storage node out of the epoch (evicted) does not rejoin
//    while any other live member still reports it failing — else it would rejoin at
//    once, stall the writes to its objects again and be evicted again, forever.
//  - decide_eviction() is the cluster's rule, the same on every node:
//      * a report counts only if it is for the current epoch and comes from a live
//        member that is a storage node of that epoch or a gateway (a storage node
//        already out of the epoch has no say), never from the suspect itself;
//      * a storage node of the epoch is evicted only when at least kMinReporters
//        (2) such members report it unreachable: one confused gateway (a broken NIC,
//        a full fd table) can never evict a healthy node. With fewer than 2 possible
//        reporters (2 storage nodes, no gateway) nothing is ever evicted this way:
//        writes then fail after the replicated store's retry deadline, as before;
//      * the one that evicts is the lowest-id reporter that is a storage node of the
//        epoch and serves (lease valid); it evicts one node per epoch, the lowest id
//        first, and decides again from the reports of the next epoch. Two nodes that
//        both think they decide are harmless: the driver's compare-and-append makes
//        one epoch, the other evict() finds the node gone (ENOENT, ignored).
//    It never names the deciding node itself.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cluster/membership.h"
#include "common/status.h"
#include "common/uuid.h"

namespace kelpie {

struct ReachabilityReport {
  uint64_t epoch = 0;
  std::vector<Uuid> failing;      // every call failed since the last success (sorted)
  std::vector<Uuid> unreachable;  // ... for at least the threshold (sorted)
};

// Member status key of the report: {"epoch": E, "failing": [uuid...], "nodes": [uuid...]}.
inline constexpr const char* kReachabilityStatusKey = "unreachable";
std::string reachability_report_json(const ReachabilityReport& report);
// The report inside a member's status JSON text; nullopt when it has none or is malformed.
std::optional<ReachabilityReport> parse_reachability_report(const std::string& status_json);

class PeerReachability {
 public:
  using Clock = std::chrono::steady_clock;
  explicit PeerReachability(Clock::duration threshold) : threshold_(threshold) {}

  void note_failure(const Uuid& node, const std::string& why, Clock::time_point now = Clock::now());
  void note_success(const Uuid& node);
  void set_epoch(uint64_t epoch, const std::vector<Uuid>& members);
  // Forgets every peer not in `keep` (the epoch's nodes and the live storage members).
  void retain(const std::vector<Uuid>& keep);

  ReachabilityReport report(Clock::time_point now = Clock::now()) const;
  // Peers that crossed the threshold since the last call, each once per failing spell,
  // with the last error and since when (for one log line per report).
  struct Crossed {
    Uuid node{};
    Clock::duration failing_for{};
    std::string last_error;
  };
  std::vector<Crossed> newly_unreachable(Clock::time_point now = Clock::now());
  Clock::duration threshold() const { return threshold_; }

 private:
  struct Entry {
    Clock::time_point since;
    std::string last_error;
    bool reported = false;
  };
  const Clock::duration threshold_;
  mutable std::mutex mutex_;
  std::atomic<size_t> failing_count_{0};
  uint64_t epoch_ = 0;
  std::vector<Uuid> members_;  // sorted
  std::map<Uuid, Entry> failing_;
};

inline constexpr size_t kMinReporters = 2;

struct EvictionInput {
  Uuid self{};
  bool self_serving = false;
  EpochRecord epoch;
  std::vector<MemberInfo> live;                    // MembershipDriver::live_members()
  std::map<std::string, std::string> statuses;     // MembershipDriver::member_statuses()
};

struct EvictionDecision {
  struct Suspect {
    Uuid node{};
    std::vector<Uuid> reporters;  // sorted
    std::optional<Uuid> decider;  // the lowest-id storage reporter
  };
  std::vector<Suspect> suspects;   // storage nodes of the epoch reported unreachable (by id)
  std::vector<Uuid> probe;         // nodes of the epoch some member reports failing (not self)
  std::optional<Uuid> evict;       // what this node evicts now
};

EvictionDecision decide_eviction(const EvictionInput& input);

// True when a live member other than `self` reports `self` failing (in any epoch: a
// report is at most a status tick old); those members go to `reporters` if given.
bool rejoin_held(const Uuid& self, const std::vector<MemberInfo>& live,
                 const std::map<std::string, std::string>& statuses, std::vector<Uuid>* reporters);

}  // namespace kelpie
