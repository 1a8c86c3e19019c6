// Recovery authority (DESIGN.md rule 2) as a pure function: epoch history + rings +
// who answered the listing with which recovered_through and which copies. Also the
// LIST_OBJECTS reply's recovered_through trailer on the wire, both ways compatible.
#include "cluster/recovery_authority.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "cluster/peer_wire.h"

namespace kelpie {
namespace {

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

EpochRecord epoch_record(uint64_t epoch, std::vector<Uuid> nodes, uint32_t copies,
                         uint32_t min_copies, std::string reason) {
  EpochRecord record;
  record.epoch = epoch;
  record.copies = copies;
  record.min_copies = min_copies;
  record.reason = std::move(reason);
  std::sort(nodes.begin(), nodes.end());
  for (const Uuid& id : nodes) {
    MemberInfo m;
    m.id = id;
    m.vnodes = kDefaultVnodes;
    record.nodes.push_back(m);
  }
  return record;
}

bool in(const std::vector<Uuid>& set, const Uuid& id) {
  return std::find(set.begin(), set.end(), id) != set.end();
}

// The first data object whose placement satisfies `want`; fails the test if none of
// the first 10,000 does.
ObjectId find_object(const EpochHistory& history, const std::function<bool(const ObjectId&)>& want) {
  for (uint32_t i = 0; i < 10'000; ++i) {
    ObjectId id = ObjectId::data(7, 7, i);
    if (want(id)) return id;
  }
  ADD_FAILURE() << "no object with the wanted placement";
  (void)history;
  return ObjectId::data(7, 7, 0);
}

// The brief's scenario: 4 nodes, copies 2, min-copies 1. Epoch 1 format {A,B,C,D};
// 2: B failed {A,C,D}; 3: A and C failed {D}; 4: B back {B,D}. D completed epoch 2
// (not 3: it could not decide everything); B last completed epoch 1.
std::vector<EpochRecord> scenario() {
  return {epoch_record(1, {kA, kB, kC, kD}, 2, 1, "format"),
          epoch_record(2, {kA, kC, kD}, 2, 1, "failed B"),
          epoch_record(3, {kD}, 2, 1, "failed A; failed C"),
          epoch_record(4, {kB, kD}, 2, 1, "join B")};
}

TEST(RecoveryAuthority, NewestOnlyOnAbsentNodesIsUnavailable) {
  auto history = EpochHistory::build(scenario(), 4);
  ASSERT_TRUE(history) << history.status().to_string();
  // X: B held it in epoch 1 (an old copy), epoch 2 moved it to {A, C}, which are gone.
  ObjectId x = find_object(*history, [&](const ObjectId& id) {
    auto r1 = history->replicas(1, id);
    auto r2 = history->replicas(2, id);
    return in(r1, kB) && in(r2, kA) && in(r2, kC);
  });
  HeardNodes heard{{kB, 1}, {kD, 2}};
  std::vector<Uuid> listed{kB};  // only B's stale copy is heard of
  AuthorityDecision d = decide_authority(*history, x, heard, listed);
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kUnavailable);
  EXPECT_EQ(d.epoch, 2u);
  std::vector<Uuid> absent = d.absent;
  std::sort(absent.begin(), absent.end());
  EXPECT_EQ(absent, (std::vector<Uuid>{kA, kC}));
  EXPECT_NE(describe_unavailable(d).find(uuid_to_string(kA)), std::string::npos);
}

TEST(RecoveryAuthority, ACompletedRecoveryVouchesOnlyForCopiesItHas) {
  // D alone in epoch 3 completed it (nobody listed X then: only A and C had it), so
  // recovered_through(D) = 3 with D in R_3(X) — but D has no copy of X. B returns
  // with its epoch-1 copy: still unavailable, A or C must come back.
  auto history = EpochHistory::build(scenario(), 4);
  ASSERT_TRUE(history);
  ObjectId x = find_object(*history, [&](const ObjectId& id) {
    auto r2 = history->replicas(2, id);
    return in(history->replicas(1, id), kB) && in(r2, kA) && in(r2, kC);
  });
  EXPECT_EQ(history->replicas(3, x), std::vector<Uuid>{kD});
  HeardNodes heard{{kB, 1}, {kD, 3}};
  AuthorityDecision d = decide_authority(*history, x, heard, std::vector<Uuid>{kB});
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kUnavailable);
  EXPECT_EQ(d.epoch, 2u);
}

TEST(RecoveryAuthority, AHolderThatCompletedItsEpochIsAuthoritative) {
  auto history = EpochHistory::build(scenario(), 4);
  ASSERT_TRUE(history);
  // Y: D was in Y's set in epoch 2 and completed epoch 2.
  ObjectId y = find_object(*history, [&](const ObjectId& id) {
    return in(history->replicas(1, id), kB) && in(history->replicas(2, id), kD);
  });
  HeardNodes heard{{kB, 1}, {kD, 2}};
  std::vector<Uuid> listed{kB, kD};
  AuthorityDecision d = decide_authority(*history, y, heard, listed);
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kAuthoritative);
  EXPECT_EQ(d.epoch, 2u);
}

TEST(RecoveryAuthority, AReturningHolderMakesItAvailable) {
  std::vector<EpochRecord> records = scenario();
  records.push_back(epoch_record(5, {kA, kB, kD}, 2, 1, "join A"));
  auto history = EpochHistory::build(records, 5);
  ASSERT_TRUE(history);
  ObjectId x = find_object(*history, [&](const ObjectId& id) {
    auto r2 = history->replicas(2, id);
    return in(history->replicas(1, id), kB) && in(r2, kA) && in(r2, kC);
  });
  // A completed epoch 2 while in X's set: its copy has every write up to epoch 2;
  // epochs 3 and 4 are covered by D, which can not have dropped a copy since.
  HeardNodes heard{{kA, 2}, {kB, 1}, {kD, 2}};
  AuthorityDecision d = decide_authority(*history, x, heard, std::vector<Uuid>{kA, kB});
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kAuthoritative);
  EXPECT_EQ(d.epoch, 2u);
}

TEST(RecoveryAuthority, SettledClusterStopsAtThePreviousEpoch) {
  std::vector<EpochRecord> records = {epoch_record(1, {kA, kB, kC}, 2, 2, "format"),
                                      epoch_record(2, {kA, kB, kC, kD}, 2, 2, "join D")};
  auto history = EpochHistory::build(records, 2);
  ASSERT_TRUE(history);
  ObjectId id = ObjectId::data(3, 3, 11);
  HeardNodes heard{{kA, 1}, {kB, 1}, {kC, 1}, {kD, 0}};
  AuthorityDecision d = decide_authority(*history, id, heard, history->replicas(1, id));
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kAuthoritative);
  EXPECT_EQ(d.epoch, 1u);
}

TEST(RecoveryAuthority, FormatEpochEndsTheWalk) {
  // Nobody completed anything (e.g. a quick series of epochs), but every epoch's set
  // answered: nothing before the format epoch can be newer.
  std::vector<EpochRecord> records = {epoch_record(1, {kA, kB}, 2, 1, "format"),
                                      epoch_record(2, {kA, kB, kC}, 2, 1, "join C")};
  auto history = EpochHistory::build(records, 2);
  ASSERT_TRUE(history);
  ObjectId id = ObjectId::data(3, 3, 5);
  HeardNodes heard{{kA, 0}, {kB, 0}, {kC, 0}};
  AuthorityDecision d = decide_authority(*history, id, heard, std::vector<Uuid>{kA, kB});
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kAuthoritative);
  EXPECT_EQ(d.epoch, 1u);
}

TEST(RecoveryAuthority, CompactedHistoryIsFlagged) {
  std::vector<EpochRecord> records = {epoch_record(8, {kA, kB}, 2, 1, "join B"),
                                      epoch_record(9, {kA, kB, kC}, 2, 1, "join C")};
  auto history = EpochHistory::build(records, 9);
  ASSERT_TRUE(history);
  EXPECT_FALSE(history->starts_at_format());
  ObjectId id = ObjectId::data(3, 3, 5);
  HeardNodes heard{{kA, 0}, {kB, 0}, {kC, 0}};
  AuthorityDecision d = decide_authority(*history, id, heard, std::vector<Uuid>{kA});
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kHistoryStart);
  EXPECT_TRUE(d.available());
}

TEST(RecoveryAuthority, EpochBelowMinCopiesHeldNoWrites) {
  // copies 2, min-copies 2: epoch 2 had only A (below min-copies), so nothing was
  // written there; its absence from the listing does not matter.
  std::vector<EpochRecord> records = {epoch_record(1, {kA, kB}, 2, 2, "format"),
                                      epoch_record(2, {kA}, 2, 2, "failed B"),
                                      epoch_record(3, {kB}, 2, 2, "failed A; join B")};
  auto history = EpochHistory::build(records, 3);
  ASSERT_TRUE(history);
  ObjectId id = ObjectId::data(3, 3, 1);
  EXPECT_FALSE(history->writable(2, id));
  HeardNodes heard{{kB, 1}};
  AuthorityDecision d = decide_authority(*history, id, heard, std::vector<Uuid>{kB});
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kAuthoritative);
  EXPECT_EQ(d.epoch, 1u);
  // With min-copies 1 the same history is unavailable: A may have taken writes.
  for (EpochRecord& r : records) r.min_copies = 1;
  auto writable = EpochHistory::build(records, 3);
  ASSERT_TRUE(writable);
  AuthorityDecision w = decide_authority(*writable, id, heard, std::vector<Uuid>{kB});
  EXPECT_EQ(w.kind, AuthorityDecision::Kind::kUnavailable);
  EXPECT_EQ(w.epoch, 2u);
  EXPECT_EQ(w.absent, (std::vector<Uuid>{kA}));
}

TEST(RecoveryAuthority, ANodeThatMayHaveDroppedItsCopyCoversNothing) {
  // copies 2, min-copies 2. Epoch 1 {A,B}: X on both. Epoch 2 {A,C}, one zone: X's
  // set is {C} alone (not writable). A completed epoch 2 outside X's set, so its
  // cleanup may have deleted its copy. Epoch 3 {A,D}: B and C are gone.
  std::vector<EpochRecord> records = {epoch_record(1, {kA, kB}, 2, 2, "format"),
                                      epoch_record(2, {kA, kC}, 2, 2, "failed B; join C"),
                                      epoch_record(3, {kA, kD}, 2, 2, "failed C; join D")};
  for (MemberInfo& m : records[1].nodes) m.zone = "z";
  auto history = EpochHistory::build(records, 3);
  ASSERT_TRUE(history);
  ObjectId x = find_object(*history, [&](const ObjectId& id) {
    return history->replicas(2, id) == std::vector<Uuid>{kC};
  });
  EXPECT_FALSE(history->writable(2, x));
  HeardNodes heard{{kA, 2}, {kD, 0}};
  // A lists no copy: it may have dropped one, so it can not vouch for epoch 1,
  // where B (absent) took writes too.
  AuthorityDecision d = decide_authority(*history, x, heard, {});
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kUnavailable);
  EXPECT_EQ(d.epoch, 1u);
  EXPECT_EQ(d.absent, (std::vector<Uuid>{kB}));
  // A still lists its copy: that copy has every write of epoch 1 (F1), epoch 2 had
  // none, and nothing came before the format.
  std::vector<Uuid> listed{kA};
  AuthorityDecision kept = decide_authority(*history, x, heard, listed);
  EXPECT_EQ(kept.kind, AuthorityDecision::Kind::kAuthoritative);
}

TEST(RecoveryAuthority, RecoveredEpochsKeepAWindow) {
  RecoveredEpochs r;
  EXPECT_EQ(r.completed(1), RecoveredEpochs::Answer::kNo);
  r = r.advanced_to(1).advanced_to(3).advanced_to(4);
  EXPECT_EQ(r.through, 4u);
  EXPECT_EQ(r.completed(4), RecoveredEpochs::Answer::kYes);
  EXPECT_EQ(r.completed(3), RecoveredEpochs::Answer::kYes);
  EXPECT_EQ(r.completed(2), RecoveredEpochs::Answer::kNo);
  EXPECT_EQ(r.completed(1), RecoveredEpochs::Answer::kYes);
  EXPECT_EQ(r.completed(5), RecoveredEpochs::Answer::kNo);
  r = r.advanced_to(4 + RecoveredEpochs::kWindow);
  EXPECT_EQ(r.completed(4), RecoveredEpochs::Answer::kYes);
  EXPECT_EQ(r.completed(3), RecoveredEpochs::Answer::kUnknown);
  r = r.advanced_to(200);
  EXPECT_EQ(r.completed(4 + RecoveredEpochs::kWindow), RecoveredEpochs::Answer::kUnknown);
  EXPECT_EQ(RecoveredEpochs::unreported().completed(1), RecoveredEpochs::Answer::kUnknown);
}

// The history of a cluster_unavailable run: nodes 1..4 = B, O1, S, O2. P2 was
// written in epoch 2; X's set there was {O1, O2}. All four are back in epoch 7.
std::vector<EpochRecord> rejoin_history() {
  const Uuid b = kA, o1 = kB, s = kC, o2 = kD;
  return {epoch_record(1, {b, o1, s, o2}, 2, 1, "format"),
          epoch_record(2, {o1, s, o2}, 2, 1, "failed B"),
          epoch_record(3, {s, o2}, 2, 1, "failed O1"),
          epoch_record(4, {s}, 2, 1, "failed O2"),
          epoch_record(5, {b, s}, 2, 1, "join B"),
          epoch_record(6, {b, o1, s}, 2, 1, "join O1"),
          epoch_record(7, {b, o1, s, o2}, 2, 1, "join O2")};
}

TEST(RecoveryAuthority, EarlierCompletedEpochsStillVouch) {
  auto history = EpochHistory::build(rejoin_history(), 7);
  ASSERT_TRUE(history);
  const Uuid b = kA, o1 = kB, s = kC, o2 = kD;
  // X: {O1, O2} in epoch 2, {B, O1} in 6 (S outside), B in 7's set but not O1.
  ObjectId x = find_object(*history, [&](const ObjectId& id) {
    auto r2 = history->replicas(2, id);
    auto r6 = history->replicas(6, id);
    return in(r2, o1) && in(r2, o2) && in(r6, b) && in(r6, o1) && !in(history->replicas(7, id), o1);
  });
  std::vector<Uuid> listed{b, o1, o2};  // S never had X: it was invisible in epoch 4
  // O1 completed 6 and then 7; S completed 5, 6 and 7; B none since 1; O2 epoch 2.
  HeardNodes heard{{b, 1},
                   {o1, RecoveredEpochs(2).advanced_to(6).advanced_to(7)},
                   {s, RecoveredEpochs(2).advanced_to(4).advanced_to(5).advanced_to(6).advanced_to(7)},
                   {o2, 2}};
  AuthorityDecision d = decide_authority(*history, x, heard, listed);
  EXPECT_EQ(d.kind, AuthorityDecision::Kind::kAuthoritative) << describe_unavailable(d);
  EXPECT_EQ(d.epoch, 6u);
  // O1 did not complete 6: then nobody cleaned up epoch 6 (B did not complete it
  // either), so S, alone in epoch 4, can not have dropped a copy: epoch 4 had no
  // write of X, and O2 (epoch 2's set, completed 2) vouches.
  heard[o1] = RecoveredEpochs(2).advanced_to(7);
  AuthorityDecision older = decide_authority(*history, x, heard, listed);
  EXPECT_EQ(older.kind, AuthorityDecision::Kind::kAuthoritative) << describe_unavailable(older);
  EXPECT_EQ(older.epoch, 2u);
  // Had every member completed epoch 6 (and only O2 listed X), S might have dropped
  // a copy it held in epoch 4.
  heard[b] = RecoveredEpochs(1).advanced_to(6).advanced_to(7);
  heard[o1] = RecoveredEpochs(2).advanced_to(6).advanced_to(7);
  AuthorityDecision unsure = decide_authority(*history, x, heard, std::vector<Uuid>{o2});
  EXPECT_EQ(unsure.kind, AuthorityDecision::Kind::kUnavailable);
  EXPECT_EQ(unsure.epoch, 4u);
  EXPECT_EQ(unsure.absent, std::vector<Uuid>{s});
}

TEST(RecoveryAuthority, HistoryMustReachTheCurrentEpoch) {
  EXPECT_FALSE(EpochHistory::build(scenario(), 5));
  std::vector<EpochRecord> gap = scenario();
  gap.erase(gap.begin() + 1);
  EXPECT_FALSE(EpochHistory::build(gap, 4));
  // Newer records than the current epoch are ignored.
  auto older = EpochHistory::build(scenario(), 3);
  ASSERT_TRUE(older);
  EXPECT_EQ(older->current(), 3u);
}

TEST(RecoveryAuthority, ListRepliesCarryRecoveredThroughOnlyWhenAsked) {
  PeerReply reply;
  reply.objects.push_back(ListedObject{ObjectId::data(1, 1, 2), {3, 4}, 1u << 22});
  reply.recovered_through = 41;
  reply.recovered_earlier = 0b101;
  PeerFrame frame = encode_reply(PeerOp::kListObjects, 9, reply);
  std::vector<uint8_t> bytes = flatten(frame);
  auto decoded = decode_reply_frame(bytes);
  ASSERT_TRUE(decoded) << decoded.status().to_string();
  ASSERT_EQ(decoded->objects.size(), 1u);
  EXPECT_EQ(decoded->objects[0].version, (ObjectVersion{3, 4}));
  EXPECT_EQ(decoded->recovered_through, std::optional<uint64_t>(41));
  EXPECT_EQ(decoded->recovered_earlier, 0b101u);

  // Empty list, still reported.
  PeerReply empty;
  empty.recovered_through = 0;
  PeerFrame empty_frame = encode_reply(PeerOp::kListObjects, 9, empty);
  std::vector<uint8_t> empty_bytes = flatten(empty_frame);
  auto empty_decoded = decode_reply_frame(empty_bytes);
  ASSERT_TRUE(empty_decoded);
  EXPECT_TRUE(empty_decoded->objects.empty());
  EXPECT_EQ(empty_decoded->recovered_through, std::optional<uint64_t>(0));

  // Not asked (or an older node): the plain list, byte for byte as before.
  reply.recovered_through.reset();
  PeerFrame plain = encode_reply(PeerOp::kListObjects, 9, reply);
  std::vector<uint8_t> plain_bytes = flatten(plain);
  EXPECT_EQ(plain_bytes.size(), bytes.size() - 16);
  EXPECT_EQ(plain_bytes[8] | plain_bytes[9] | plain_bytes[10] | plain_bytes[11], 0);
  auto plain_decoded = decode_reply_frame(plain_bytes);
  ASSERT_TRUE(plain_decoded);
  EXPECT_FALSE(plain_decoded->recovered_through.has_value());

  // The request flag travels in the header.
  PeerRequest request;
  request.op = PeerOp::kListObjects;
  request.epoch = 3;
  request.flags = kPeerFlagRecoveredThrough;
  PeerFrame request_frame = encode_request(request, 9);
  std::vector<uint8_t> request_bytes = flatten(request_frame);
  auto decoded_request = decode_request_frame(request_bytes);
  ASSERT_TRUE(decoded_request);
  EXPECT_EQ(decoded_request->request.flags, kPeerFlagRecoveredThrough);
}

}  // namespace
}  // namespace kelpie
