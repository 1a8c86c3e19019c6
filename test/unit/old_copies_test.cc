// DESIGN.md rule 7, old copies go per object (cluster/old_copies.h): the decision as a
// pure function, the DURABLE flag of OBJECT_VERSION on the wire (both ways
// compatible), and the two LocalStore calls it rests on (sync_object,
// remove_old_copy) against real files.
#include "cluster/old_copies.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <vector>

#include "cluster/peer_wire.h"
#include "cluster/replica_service.h"
#include "test/unit/store_fixture.h"

namespace kelpie {
namespace {

using Kind = ReplicaDurability::Kind;

ReplicaDurability durable(uint64_t generation, uint64_t sequence) {
  return {Kind::kDurable, {generation, sequence}};
}
ReplicaDurability gone() { return {Kind::kGone, {}}; }
ReplicaDurability unknown() { return {}; }

bool removable(ObjectVersion mine, bool writable, std::vector<ReplicaDurability> replicas) {
  return old_copy_removable(mine, writable, replicas);
}

TEST(OldCopyDecision, EveryReplicaDurableAtOrAboveMine) {
  EXPECT_TRUE(removable({3, 7}, true, {durable(3, 7), durable(3, 7)}));
  EXPECT_TRUE(removable({3, 7}, true, {durable(3, 8), durable(4, 0)}));
  EXPECT_TRUE(removable({0, 0}, true, {durable(0, 0)}));  // no versions at all: equal
}

TEST(OldCopyDecision, OneLaggingReplicaKeepsTheCopy) {
  EXPECT_FALSE(removable({3, 7}, true, {durable(3, 7), durable(3, 6)}));
  // Generation first, then sequence (as recovery compares them).
  EXPECT_FALSE(removable({4, 1}, true, {durable(3, 99)}));
}

TEST(OldCopyDecision, UnknownAnswersKeepTheCopy) {
  // Unreachable, not ready, epoch mismatch, ENOENT while recovering, an old node.
  EXPECT_FALSE(removable({1, 1}, true, {durable(2, 0), unknown()}));
  EXPECT_FALSE(removable({1, 1}, true, {unknown()}));
}

TEST(OldCopyDecision, NoReplicasOrNotWritableKeepsTheCopy) {
  EXPECT_FALSE(removable({1, 1}, true, {}));
  EXPECT_FALSE(removable({1, 1}, false, {durable(2, 0), durable(2, 0)}));
}

TEST(OldCopyDecision, RemovedOnPurposeEverywhereOrElsewhere) {
  EXPECT_TRUE(removable({1, 1}, true, {gone(), gone()}));
  EXPECT_TRUE(removable({1, 1}, true, {gone(), durable(1, 1)}));
  EXPECT_FALSE(removable({1, 1}, true, {gone(), durable(1, 0)}));
}

TEST(OldCopyDecision, RepliesReadAsDurabilityOnlyWhenHonoured) {
  PeerReply reply;
  reply.version = {5, 6};
  EXPECT_EQ(durability_of(reply).kind, Kind::kUnknown) << "an old node answers without the flag";
  reply.durable = true;
  ReplicaDurability answer = durability_of(reply);
  EXPECT_EQ(answer.kind, Kind::kDurable);
  EXPECT_EQ(answer.version, (ObjectVersion{5, 6}));
  reply.status = ENOENT;
  EXPECT_EQ(durability_of(reply).kind, Kind::kGone);
  reply.durable = false;
  EXPECT_EQ(durability_of(reply).kind, Kind::kUnknown) << "absent while still recovering";
  reply.status = kNotReady;
  reply.durable = true;
  EXPECT_EQ(durability_of(reply).kind, Kind::kUnknown);
}

PeerReply round_trip(PeerOp op, const PeerReply& reply) {
  PeerFrame frame = encode_reply(op, 9, reply);
  auto bytes = flatten(frame);
  auto decoded = decode_reply_frame(bytes);
  EXPECT_TRUE(decoded) << decoded.status().to_string();
  return decoded ? std::move(*decoded) : PeerReply{};
}

TEST(OldCopyWire, DurableFlagTravelsInTheReplyHeader) {
  PeerReply reply;
  reply.version = {8, 9};
  reply.object_size = 4096;
  reply.durable = true;
  PeerFrame frame = encode_reply(PeerOp::kObjectVersion, 9, reply);
  auto bytes = flatten(frame);
  auto header = decode_header(std::span<const uint8_t, kPeerHeaderSize>(bytes.data(), kPeerHeaderSize));
  ASSERT_TRUE(header);
  EXPECT_EQ(header->flags, kPeerFlagDurable);
  EXPECT_EQ(bytes.size(), kPeerHeaderSize + 24) << "the reply's layout is unchanged";
  PeerReply back = round_trip(PeerOp::kObjectVersion, reply);
  EXPECT_TRUE(back.durable);
  EXPECT_EQ(back.version, (ObjectVersion{8, 9}));

  PeerReply absent;
  absent.status = ENOENT;
  absent.message = "not here";
  absent.durable = true;
  EXPECT_TRUE(round_trip(PeerOp::kObjectVersion, absent).durable);
  // Without the flag (what a node that does not know it sends): not durable.
  reply.durable = false;
  EXPECT_FALSE(round_trip(PeerOp::kObjectVersion, reply).durable);
  absent.durable = false;
  EXPECT_FALSE(round_trip(PeerOp::kObjectVersion, absent).durable);
  // Only OBJECT_VERSION and only status 0 or ENOENT carry it.
  PeerReply other;
  other.status = EIO;
  other.durable = true;
  EXPECT_FALSE(round_trip(PeerOp::kObjectVersion, other).durable);
  other.status = 0;
  EXPECT_FALSE(round_trip(PeerOp::kFetchObject, other).durable);
}

TEST(OldCopyWire, RequestFlagIsCarriedAndOtherwiseTheSameRequest) {
  PeerRequest request;
  request.op = PeerOp::kObjectVersion;
  request.epoch = 4;
  request.id = ObjectId::data(7, 7, 3);
  request.flags = kPeerFlagDurable;
  PeerFrame frame = encode_request(request, 11);
  auto bytes = flatten(frame);
  auto decoded = decode_request_frame(bytes);
  ASSERT_TRUE(decoded) << decoded.status().to_string();
  EXPECT_EQ(decoded->request.flags, kPeerFlagDurable);
  EXPECT_EQ(decoded->request.id, request.id);
  request.flags = 0;
  PeerFrame plain = encode_request(request, 11);
  EXPECT_EQ(flatten(plain).size(), bytes.size()) << "an old node reads the same fields";
}

// ---- the store calls it rests on -------------------------------------------------

constexpr uint32_t kObjectSize = 1u << 20;

class OldCopyStoreTest : public StoreFixture {
 protected:
  Status write_v(ObjectId id, uint8_t fill, ObjectVersion v, bool create) {
    std::vector<uint8_t> data(8192, fill);
    return r0().block_on(store_->write(id, 0, data, {false, create, kObjectSize, v}));
  }
  Status remove_old(ObjectId id, ObjectVersion at_most, bool allowed) {
    return r0().block_on(store_->remove_old_copy(id, at_most, [allowed] { return allowed; }));
  }
  bool listed(ObjectId id) {
    auto all = r0().block_on(store_->list_all());
    EXPECT_TRUE(all);
    for (const StoredObject& o : *all) {
      if (o.id == id) return true;
    }
    return false;
  }
  bool file_exists(ObjectId id) { return std::filesystem::exists(dir_ / "objects" / id.to_hex()); }
};

TEST_F(OldCopyStoreTest, SyncObjectAnswersTheVersionHeld) {
  ObjectId id = ObjectId::data(30, 30, 1);
  ASSERT_TRUE(write_v(id, 1, {2, 1}, true).is_ok());
  ASSERT_TRUE(write_v(id, 2, {2, 5}, false).is_ok());
  auto synced = r0().block_on(store_->sync_object(id));
  ASSERT_TRUE(synced) << synced.status().to_string();
  EXPECT_EQ(synced->version, (ObjectVersion{2, 5}));
  EXPECT_EQ(synced->object_size, kObjectSize);
  EXPECT_EQ(r0().block_on(store_->sync_object(ObjectId::data(30, 30, 2))).status().code(), ENOENT);
  EXPECT_FALSE(store_->failed());
  // Writes go on after it, and a flush still covers them.
  ASSERT_TRUE(write_v(id, 3, {2, 6}, false).is_ok());
  EXPECT_TRUE(r0().block_on(store_->flush()).is_ok());
}

TEST_F(OldCopyStoreTest, RemoveOldCopyOnlyAtOrBelowTheVouchedVersion) {
  ObjectId id = ObjectId::data(31, 31, 1);
  ASSERT_TRUE(write_v(id, 1, {3, 4}, true).is_ok());
  const uint64_t before = store_->object_count();
  EXPECT_EQ(remove_old(id, {3, 3}, true).code(), EAGAIN) << "the copy is newer than vouched for";
  EXPECT_TRUE(listed(id));
  EXPECT_EQ(remove_old(id, {3, 4}, false).code(), ECANCELED) << "the recheck said no";
  EXPECT_TRUE(listed(id));
  EXPECT_TRUE(file_exists(id));
  EXPECT_TRUE(remove_old(id, {3, 4}, true).is_ok());
  EXPECT_FALSE(listed(id));
  EXPECT_FALSE(file_exists(id));
  EXPECT_EQ(store_->object_count(), before - 1);
  EXPECT_EQ(remove_old(id, {3, 4}, true).code(), ENOENT);
  // The id can be written afresh after it.
  ASSERT_TRUE(write_v(id, 5, {4, 1}, true).is_ok());
  EXPECT_TRUE(listed(id));
}

TEST_F(OldCopyStoreTest, RemovedCopyStaysGoneAcrossARestart) {
  ObjectId keep = ObjectId::data(32, 32, 1);
  ObjectId drop = ObjectId::data(32, 32, 2);
  ASSERT_TRUE(write_v(keep, 1, {1, 1}, true).is_ok());
  ASSERT_TRUE(write_v(drop, 2, {1, 2}, true).is_ok());
  ASSERT_TRUE(r0().block_on(store_->flush()).is_ok());
  ASSERT_TRUE(remove_old(drop, {1, 2}, true).is_ok());
  stop(true);
  start();
  EXPECT_TRUE(listed(keep));
  EXPECT_FALSE(listed(drop));
}

// The replica's side: OBJECT_VERSION with DURABLE through ReplicaService (one node,
// no recovery: it can never vouch that an absent object was removed on purpose).
class ReplicaDurableTest : public OldCopyStoreTest {
 protected:
  void on_started() override {
    epochs_ = std::make_unique<EpochState>(*pool_);
    EpochRecord record;
    record.epoch = 1;
    record.cluster = cluster_;
    record.copies = 1;
    record.min_copies = 1;
    MemberInfo me;
    me.id = self_;
    me.vnodes = 128;
    record.nodes.push_back(me);
    auto view = make_epoch_view(record, self_);
    ASSERT_TRUE(view);
    epochs_->publish(*view);
    ASSERT_TRUE(r0().block_on(epochs_->wait_any(std::chrono::steady_clock::now() + std::chrono::seconds(5))));
    Uuid cluster = cluster_;
    service_ = std::make_unique<ReplicaService>(store_.get(), nullptr, *epochs_, self_,
                                                [cluster] { return cluster; });
  }
  void on_stopping() override {
    service_.reset();
    epochs_.reset();
  }
  PeerReply ask(ObjectId id, uint32_t flags, uint64_t epoch = 1) {
    PeerRequest request;
    request.op = PeerOp::kObjectVersion;
    request.epoch = epoch;
    request.id = id;
    request.flags = flags;
    return r0().block_on(service_->apply(request, {}));
  }

  Uuid self_ = Uuid{{1, 2, 3, 4}};
  Uuid cluster_ = Uuid{{9, 9, 9, 9}};
  std::unique_ptr<EpochState> epochs_;
  std::unique_ptr<ReplicaService> service_;
};

TEST_F(ReplicaDurableTest, AnswersDurableOnlyWhenAskedAndHeld) {
  ObjectId id = ObjectId::data(40, 40, 1);
  ASSERT_TRUE(write_v(id, 1, {2, 5}, true).is_ok());
  PeerReply durable = ask(id, kPeerFlagDurable);
  EXPECT_EQ(durable.status, 0) << durable.message;
  EXPECT_TRUE(durable.durable);
  EXPECT_EQ(durable.version, (ObjectVersion{2, 5}));
  EXPECT_EQ(durable.object_size, kObjectSize);

  PeerReply plain = ask(id, 0);
  EXPECT_EQ(plain.status, 0);
  EXPECT_FALSE(plain.durable) << "not asked: no sync, no claim";
  EXPECT_EQ(plain.version, (ObjectVersion{2, 5}));

  PeerReply absent = ask(ObjectId::data(40, 40, 2), kPeerFlagDurable);
  EXPECT_EQ(absent.status, ENOENT);
  EXPECT_FALSE(absent.durable) << "no recovery here to say the absence is settled";

  PeerReply other_epoch = ask(id, kPeerFlagDurable, 2);
  EXPECT_EQ(other_epoch.status, kEpochMismatch);
  EXPECT_FALSE(other_epoch.durable);
  EXPECT_FALSE(store_->failed());
}

// kRemove through ReplicaService is fenced by the remover's generation
// (cluster/replica_service.h): an old gateway's retried undo gets ESTALE and the newer
// attach's object stays; the same or a newer generation removes it.
TEST_F(ReplicaDurableTest, RemoveFromAnOlderGenerationIsRefused) {
  ObjectId id = ObjectId::data(41, 41, 1);
  ASSERT_TRUE(write_v(id, 7, {6, 2}, true).is_ok());  // the newer attach's create
  PeerRequest remove;
  remove.op = PeerOp::kRemove;
  remove.epoch = 1;
  remove.id = id;
  remove.version = {5, 40};  // the old gateway's undo, sent late
  PeerReply stale = r0().block_on(service_->apply(remove, {}));
  EXPECT_EQ(stale.status, ESTALE) << stale.message;
  EXPECT_TRUE(listed(id));
  EXPECT_TRUE(file_exists(id));
  std::vector<uint8_t> out(8192);
  ASSERT_TRUE(r0().block_on(store_->read(id, 0, out)).is_ok());
  EXPECT_EQ(out, std::vector<uint8_t>(8192, 7));

  remove.version = {6, 1};  // the same generation: its own undo
  PeerReply same = r0().block_on(service_->apply(remove, {}));
  EXPECT_EQ(same.status, 0) << same.message;
  EXPECT_FALSE(listed(id));
  EXPECT_FALSE(file_exists(id));

  ASSERT_TRUE(write_v(id, 8, {6, 3}, true).is_ok());
  remove.version = {8, 1};  // a VDI delete: the generation was raised first
  PeerReply newer = r0().block_on(service_->apply(remove, {}));
  EXPECT_EQ(newer.status, 0) << newer.message;
  EXPECT_FALSE(listed(id));
  PeerReply absent = r0().block_on(service_->apply(remove, {}));
  EXPECT_EQ(absent.status, 0) << absent.message;
}

}  // namespace
}  // namespace kelpie
