// Peer reachability (cluster/peer_reachability.h): the per-peer failure record with
// an injected clock, the report in a member status, and the eviction rule as a pure
// function: corroboration by two members, one decider, no say for nodes out of the
// epoch or for stale reports, never the decider itself.
#include "cluster/peer_reachability.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/uuid.h"

namespace kelpie {
namespace {

using Clock = PeerReachability::Clock;
using std::chrono::seconds;

Uuid node_uuid(uint8_t n) {
  Uuid id{};
  id[0] = static_cast<uint8_t>(0x10 * n + 1);
  id[6] = 0x40;
  id[8] = 0x80;
  id[15] = n;
  return id;
}

const Uuid kA = node_uuid(1);
const Uuid kB = node_uuid(2);
const Uuid kC = node_uuid(3);
const Uuid kD = node_uuid(4);
const Uuid kGateway = node_uuid(9);

// ---- PeerReachability ----

TEST(PeerReachability, FailingSinceTheFirstFailureUntilAnySuccess) {
  PeerReachability r(seconds(10));
  r.set_epoch(5, {kA, kB, kC});
  const auto t0 = Clock::now();
  r.note_failure(kC, "connect: refused", t0);
  r.note_failure(kC, "connect: refused", t0 + seconds(6));  // keeps the first time
  ReachabilityReport early = r.report(t0 + seconds(9));
  EXPECT_EQ(early.epoch, 5u);
  EXPECT_EQ(early.failing, std::vector<Uuid>{kC});
  EXPECT_TRUE(early.unreachable.empty());
  EXPECT_EQ(r.report(t0 + seconds(10)).unreachable, std::vector<Uuid>{kC});
  r.note_success(kC);  // one reply, of any status, clears it
  EXPECT_TRUE(r.report(t0 + seconds(60)).failing.empty());
  r.note_failure(kC, "reset", t0 + seconds(61));  // a new spell starts afresh
  EXPECT_TRUE(r.report(t0 + seconds(70)).unreachable.empty());
  EXPECT_EQ(r.report(t0 + seconds(71)).unreachable, std::vector<Uuid>{kC});
}

TEST(PeerReachability, NewlyUnreachableOncePerSpell) {
  PeerReachability r(seconds(3));
  r.set_epoch(2, {kA, kB});
  const auto t0 = Clock::now();
  r.note_failure(kB, "timed out", t0);
  EXPECT_TRUE(r.newly_unreachable(t0 + seconds(2)).empty());
  auto crossed = r.newly_unreachable(t0 + seconds(4));
  ASSERT_EQ(crossed.size(), 1u);
  EXPECT_EQ(crossed[0].node, kB);
  EXPECT_EQ(crossed[0].last_error, "timed out");
  EXPECT_TRUE(r.newly_unreachable(t0 + seconds(5)).empty());
  r.note_success(kB);
  r.note_failure(kB, "again", t0 + seconds(6));
  EXPECT_EQ(r.newly_unreachable(t0 + seconds(9)).size(), 1u);
}

TEST(PeerReachability, EpochsKeepEvictedNodesFailingAndForgetRejoinedOnes) {
  PeerReachability r(seconds(1));
  r.set_epoch(1, {kA, kB, kC});
  const auto t0 = Clock::now();
  r.note_failure(kB, "x", t0);
  r.note_failure(kC, "x", t0);
  r.note_failure(kD, "x", t0);  // not in the epoch: failing, never unreachable
  ReachabilityReport first = r.report(t0 + seconds(2));
  EXPECT_EQ(first.unreachable, (std::vector<Uuid>{kB, kC}));
  EXPECT_EQ(first.failing, (std::vector<Uuid>{kB, kC, kD}));
  r.set_epoch(2, {kA, kB});  // C evicted: still failing (it must not rejoin yet)
  ReachabilityReport evicted = r.report(t0 + seconds(2));
  EXPECT_EQ(evicted.unreachable, std::vector<Uuid>{kB});
  EXPECT_EQ(evicted.failing, (std::vector<Uuid>{kB, kC, kD}));
  r.retain({kA, kB, kC});  // D is neither in the epoch nor alive
  EXPECT_EQ(r.report(t0 + seconds(2)).failing, (std::vector<Uuid>{kB, kC}));
  r.set_epoch(3, {kA, kB, kC});  // C rejoined: judged afresh, B kept
  ReachabilityReport rejoined = r.report(t0 + seconds(2));
  EXPECT_EQ(rejoined.epoch, 3u);
  EXPECT_EQ(rejoined.unreachable, std::vector<Uuid>{kB});
  EXPECT_EQ(rejoined.failing, std::vector<Uuid>{kB});
}

TEST(PeerReachability, ReportRoundTripsThroughAMemberStatus) {
  ReachabilityReport report{7, {kB, kC}, {kC}};
  MemberStatusText status;
  status.set_base(R"({"epoch":7,"state":"done","objects":3})");
  status.set_field(kReachabilityStatusKey, reachability_report_json(report));
  auto parsed = parse_reachability_report(status.text());
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->epoch, 7u);
  EXPECT_EQ(parsed->failing, report.failing);
  EXPECT_EQ(parsed->unreachable, report.unreachable);
  // publish_status() replaces the rest but keeps the field.
  status.set_base(R"({"epoch":8,"state":"listing"})");
  EXPECT_TRUE(parse_reachability_report(status.text()));
  EXPECT_NE(status.text().find("listing"), std::string::npos);
  EXPECT_FALSE(parse_reachability_report(R"({"epoch":7})"));
  EXPECT_FALSE(parse_reachability_report("not json"));
  EXPECT_FALSE(parse_reachability_report(R"({"unreachable":{"epoch":7,"nodes":["nope"]}})"));
}

// ---- decide_eviction ----

MemberInfo storage(const Uuid& id) {
  MemberInfo m;
  m.id = id;
  m.vnodes = 64;
  return m;
}

MemberInfo gateway(const Uuid& id) {
  MemberInfo m;
  m.id = id;
  m.gateway = true;
  return m;
}

struct Cluster {
  EvictionInput input;
  Cluster(const Uuid& self, uint64_t epoch, const std::vector<Uuid>& nodes) {
    input.self = self;
    input.self_serving = true;
    input.epoch.epoch = epoch;
    for (const Uuid& id : nodes) {
      input.epoch.nodes.push_back(storage(id));
      input.live.push_back(storage(id));
    }
  }
  void report(const Uuid& reporter, uint64_t epoch, std::vector<Uuid> unreachable,
              std::vector<Uuid> failing = {}) {
    if (failing.empty()) failing = unreachable;
    MemberStatusText status;
    status.set_base(R"({"state":"done"})");
    status.set_field(kReachabilityStatusKey, reachability_report_json({epoch, failing, unreachable}));
    input.statuses[uuid_to_string(reporter)] = status.text();
  }
  EvictionDecision decide() const { return decide_eviction(input); }
};

TEST(DecideEviction, TwoReportersEvictAndTheLowestReporterDecides) {
  Cluster c(kA, 4, {kA, kB, kC});
  c.report(kA, 4, {kC});
  c.report(kB, 4, {kC});
  EvictionDecision d = c.decide();
  ASSERT_EQ(d.suspects.size(), 1u);
  EXPECT_EQ(d.suspects[0].reporters, (std::vector<Uuid>{kA, kB}));
  EXPECT_EQ(d.suspects[0].decider, kA);
  EXPECT_EQ(d.evict, kC);
  c.input.self = kB;  // B agrees but does not decide
  EXPECT_FALSE(c.decide().evict);
  c.input.self = kA;
  c.input.self_serving = false;  // a decider whose lease lapsed waits
  EXPECT_FALSE(c.decide().evict);
}

TEST(DecideEviction, OneReporterNeverEvicts) {
  Cluster c(kA, 4, {kA, kB, kC});
  c.report(kA, 4, {kC});
  c.report(kB, 4, {});
  EvictionDecision d = c.decide();
  ASSERT_EQ(d.suspects.size(), 1u);
  EXPECT_EQ(d.suspects[0].reporters.size(), 1u);
  EXPECT_EQ(d.suspects[0].decider, kA);
  EXPECT_FALSE(d.evict);
  EXPECT_EQ(d.probe, std::vector<Uuid>{kC});
}

TEST(DecideEviction, NodesOutOfTheEpochHaveNoSay) {
  // D is live but out of the epoch (evicted, say): its report does not count.
  Cluster c(kA, 6, {kA, kB, kC});
  c.input.live.push_back(storage(kD));
  c.report(kD, 6, {kC});
  c.report(kA, 6, {kC});
  EvictionDecision d = c.decide();
  ASSERT_EQ(d.suspects.size(), 1u);
  EXPECT_EQ(d.suspects[0].reporters, std::vector<Uuid>{kA});
  EXPECT_FALSE(d.evict);
  c.report(kB, 6, {kC});
  EXPECT_EQ(c.decide().evict, kC);
  // Nor is a node out of the epoch ever a suspect.
  c.report(kA, 6, {kD});
  c.report(kB, 6, {kD});
  EXPECT_TRUE(c.decide().suspects.empty());
}

TEST(DecideEviction, NeverEvictsItself) {
  // B and C both report A; A itself never acts on reports about itself, and the
  // decider is B, never the suspect.
  Cluster c(kA, 6, {kA, kB, kC});
  c.report(kB, 6, {kA});
  c.report(kC, 6, {kA});
  c.report(kA, 6, {kA});  // a nonsense self-report is ignored
  EvictionDecision d = c.decide();
  ASSERT_EQ(d.suspects.size(), 1u);
  EXPECT_EQ(d.suspects[0].reporters, (std::vector<Uuid>{kB, kC}));
  EXPECT_EQ(d.suspects[0].decider, kB);
  EXPECT_FALSE(d.evict);
  EXPECT_TRUE(d.probe.empty());  // a node never probes itself
  c.input.self = kB;
  EXPECT_EQ(c.decide().evict, kA);
}

TEST(DecideEviction, StaleEpochAndDeadReportersDoNotCount) {
  Cluster c(kA, 9, {kA, kB, kC});
  c.report(kA, 9, {kC});
  c.report(kB, 8, {kC});  // judged in the epoch before: C may have rejoined since
  EXPECT_FALSE(c.decide().evict);
  c.report(kB, 9, {kC});
  c.input.live.erase(c.input.live.begin() + 1);  // B's heartbeat stopped
  EXPECT_FALSE(c.decide().evict);
}

TEST(DecideEviction, AGatewayCorroboratesButNeverDecides) {
  Cluster c(kB, 3, {kA, kB, kC});
  c.input.live.push_back(gateway(kGateway));
  c.report(kGateway, 3, {kA});
  c.report(kB, 3, {kA});
  EvictionDecision d = c.decide();
  ASSERT_EQ(d.suspects.size(), 1u);
  EXPECT_EQ(d.suspects[0].decider, kB);
  EXPECT_EQ(d.evict, kA);
  // Only the gateway and the suspect's own side: the gateway alone decides nothing.
  Cluster g(kA, 3, {kA, kB});
  g.input.live.push_back(gateway(kGateway));
  g.report(kGateway, 3, {kB});
  EvictionDecision alone = g.decide();
  ASSERT_EQ(alone.suspects.size(), 1u);
  EXPECT_FALSE(alone.suspects[0].decider);
  EXPECT_FALSE(alone.evict);
}

TEST(DecideEviction, TwoStorageNodesAloneNeverEvictEachOther) {
  Cluster c(kA, 2, {kA, kB});
  c.report(kA, 2, {kB});
  c.report(kB, 2, {kA});
  EXPECT_FALSE(c.decide().evict);
  c.input.self = kB;
  EXPECT_FALSE(c.decide().evict);
}

TEST(DecideEviction, OneNodePerDecisionLowestFirst) {
  Cluster c(kA, 5, {kA, kB, kC, kD});
  c.input.live.push_back(gateway(kGateway));
  c.report(kA, 5, {kC, kD});
  c.report(kB, 5, {kC, kD});
  EvictionDecision d = c.decide();
  EXPECT_EQ(d.suspects.size(), 2u);
  EXPECT_EQ(d.evict, kC);
}

TEST(RejoinHeld, WhileAnyOtherLiveMemberReportsThisNodeFailing) {
  Cluster c(kC, 7, {kA, kB});  // C was evicted in epoch 7
  c.input.live.push_back(storage(kC));
  c.report(kA, 6, {kC});  // a report of any epoch holds it: at most a tick old
  c.report(kC, 7, {}, {kC});  // its own view of itself does not count
  std::vector<Uuid> reporters;
  EXPECT_TRUE(rejoin_held(kC, c.input.live, c.input.statuses, &reporters));
  EXPECT_EQ(reporters, std::vector<Uuid>{kA});
  c.report(kA, 7, {}, {kB});  // A reaches C again
  EXPECT_FALSE(rejoin_held(kC, c.input.live, c.input.statuses, nullptr));
  c.report(kB, 7, {}, {kC});  // B does not
  EXPECT_TRUE(rejoin_held(kC, c.input.live, c.input.statuses, nullptr));
  c.input.live.erase(c.input.live.begin() + 1);  // B died: its word no longer holds C
  EXPECT_FALSE(rejoin_held(kC, c.input.live, c.input.statuses, nullptr));
}

}  // namespace
}  // namespace kelpie
