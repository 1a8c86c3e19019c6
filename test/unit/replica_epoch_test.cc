// Issue 13 case 6, DESIGN.md rule 3 at the replica (replica_service.h, "Updates are
// admitted in one epoch..."): an update that passed the epoch fence and then waited
// (for room below the full ratio, here) is refused with kEpochMismatch, nothing
// changed, when the epoch moved meanwhile; one already being applied by the store when
// the epoch moves makes the recovery reads of the new epoch (LIST_OBJECTS here) wait
// for it. Every wait is an explicit event: a full-ratio measurement
// that blocks until the test opens it, and an fdatasync held by the CrashIoBackend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "cluster/full_ratio.h"
#include "cluster/replica_service.h"
#include "engine/object_file.h"
#include "test/unit/store_fixture.h"

namespace kelpie {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kObjectSize = 1u << 20;
constexpr uint32_t kBlock = 4096;
// What a create of one object reserves (replica_service.cc).
constexpr double kCreateBytes = double(kObjectSize) + double(kDataOffset);

// The full ratio's view of the data filesystem: fixed numbers, every measurement
// counted, and the next ones blocked (on the reactor that reserves) while gated.
class FakeDisk {
 public:
  Result<FullRatio::Usage> measure() {
    std::unique_lock lock(mutex_);
    ++calls_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return !gated_; });
    return FullRatio::Usage{1000 * kCreateBytes, 500 * kCreateBytes};  // half used
  }
  void gate() {
    std::lock_guard lock(mutex_);
    gated_ = true;
  }
  void open() {
    std::lock_guard lock(mutex_);
    gated_ = false;
    changed_.notify_all();
  }
  // Blocks the test thread until `calls` measurements have begun (false at 10 s).
  bool wait_calls(unsigned calls) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, 10s, [&] { return calls_ >= calls; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  unsigned calls_ = 0;
  bool gated_ = false;
};

class ReplicaEpochTest : public StoreFixture {
 protected:
  ReplicaEpochTest() { power_loss_io_ = true; }  // for hold_datasync

  void on_started() override {
    epochs_ = std::make_unique<EpochState>(*pool_);
    publish_epoch(1);
    wait_served(1);
    Uuid cluster = cluster_;
    service_ = std::make_unique<ReplicaService>(store_.get(), nullptr, *epochs_, self_,
                                                [cluster] { return cluster; }, full_ratio_.get());
  }
  void on_stopping() override {
    service_.reset();
    epochs_.reset();
  }

  // Makes `epoch` (one storage node: this one) the newest.
  void publish_epoch(uint64_t epoch) {
    EpochRecord record;
    record.epoch = epoch;
    record.cluster = cluster_;
    record.copies = 1;
    record.min_copies = 1;
    MemberInfo self;
    self.id = self_;
    self.vnodes = 128;
    self.peer_address = "unix:" + (dir_ / "a.sock").string();
    record.nodes.push_back(self);
    auto view = make_epoch_view(record, self_);
    ASSERT_TRUE(view) << view.status().to_string();
    epochs_->publish(*view);
  }
  // Waits until every reactor serves `epoch`.
  void wait_served(uint64_t epoch) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    for (auto& r : reactors_) ASSERT_TRUE(r->block_on(epochs_->wait_newer(epoch - 1, deadline)));
  }

  static PeerRequest write_of(uint64_t epoch, ObjectId id, std::span<const uint8_t> data,
                              ObjectVersion version, bool create) {
    PeerRequest r;
    r.op = PeerOp::kWrite;
    r.epoch = epoch;
    r.id = id;
    r.length = data.size();
    r.object_size = kObjectSize;
    r.flags = kPeerFlagFua | (create ? kPeerFlagCreate : 0);
    r.version = version;
    r.data = data;
    return r;
  }
  static PeerRequest of(PeerOp op, uint64_t epoch, ObjectId id) {
    PeerRequest r;
    r.op = op;
    r.epoch = epoch;
    r.id = id;
    return r;
  }

  PeerReply serve(const PeerRequest& request) {
    return r0().block_on(service_->apply(request, {}));
  }
  // Serves `request` on a thread of its own (the reply is valid after join()).
  std::thread serve_in_background(const PeerRequest& request, PeerReply& reply) {
    return std::thread([this, request, &reply] { reply = serve(request); });
  }

  ObjectVersion version_of(ObjectId id) {
    auto info = r0().block_on(store_->stat_object(id));
    EXPECT_TRUE(info) << info.status().to_string();
    return info ? info->version : ObjectVersion{};
  }
  std::vector<uint8_t> first_block(ObjectId id) {
    std::vector<uint8_t> out(kBlock);
    Status st = r0().block_on(store_->read(id, 0, out));
    EXPECT_TRUE(st) << st.to_string();
    return out;
  }
  bool absent(ObjectId id) {
    auto info = r0().block_on(store_->stat_object(id));
    return !info && info.status().code() == ENOENT;
  }
  static std::string path_of(ObjectId id) { return "objects/" + id.to_hex(); }

  Uuid self_ = Uuid{{0xa}};
  Uuid cluster_ = Uuid{{6, 6}};
  FakeDisk disk_;
  // Room for one create above what is used: a second one in flight must wait.
  std::unique_ptr<FullRatio> full_ratio_ = std::make_unique<FullRatio>(
      "", "a", (500 + 1.5) / 1000, [this] { return disk_.measure(); });
  std::unique_ptr<EpochState> epochs_;
  std::unique_ptr<ReplicaService> service_;
};

// A create admitted in epoch 1 sits in its full-ratio check while epoch 2 is made; it
// must not land afterwards (a joiner of epoch 2 may have listed this node already).
TEST_F(ReplicaEpochTest, ACreateThatWaitedForRoomIsRefusedOnceTheEpochMoved) {
  ObjectId id = ObjectId::data(60, 60, 1);
  std::vector<uint8_t> data(kBlock, 0x61);
  disk_.gate();
  PeerReply reply;
  std::thread create = serve_in_background(write_of(1, id, data, {1, 1}, true), reply);
  if (!disk_.wait_calls(1)) {
    disk_.open();
    create.join();
    FAIL() << "the create never reached its full-ratio check";
  }
  publish_epoch(2);  // its reactor is blocked in the check: it learns epoch 2 after
  disk_.open();
  create.join();
  wait_served(2);
  EXPECT_EQ(reply.status, kEpochMismatch)
      << "a create admitted in epoch 1 landed after epoch 2 was made: status " << reply.status
      << " " << reply.message;
  EXPECT_EQ(reply.epoch, 2u) << "the refusal names the newer epoch, so the gateway waits for it";
  EXPECT_TRUE(absent(id)) << "the refused create left an object behind";
  PeerReply listed = serve(of(PeerOp::kListObjects, 2, id));
  ASSERT_EQ(listed.status, 0) << listed.message;
  EXPECT_TRUE(listed.objects.empty());

  // The gateway's retry in the new epoch, same version, goes in.
  PeerReply retried = serve(write_of(2, id, data, {1, 1}, true));
  EXPECT_EQ(retried.status, 0) << retried.message;
  EXPECT_EQ(version_of(id), (ObjectVersion{1, 1}));
  EXPECT_EQ(first_block(id), data);
}

// The same for copy-on-write onto an existing copy (create_from replaces it whole).
TEST_F(ReplicaEpochTest, ACopyOnWriteThatWaitedForRoomIsRefusedOnceTheEpochMoved) {
  ObjectId source = ObjectId::data(61, 61, 1);
  ObjectId target = ObjectId::data(62, 61, 1);
  std::vector<uint8_t> source_data(kBlock, 0x51);
  std::vector<uint8_t> target_data(kBlock, 0x52);
  ASSERT_EQ(serve(write_of(1, source, source_data, {1, 1}, true)).status, 0);
  ASSERT_EQ(serve(write_of(1, target, target_data, {1, 3}, true)).status, 0);

  disk_.gate();
  PeerRequest cow = of(PeerOp::kCreateFrom, 1, target);
  cow.src = source;
  cow.version = {1, 4};
  PeerReply reply;
  std::thread copy = serve_in_background(cow, reply);
  if (!disk_.wait_calls(3)) {
    disk_.open();
    copy.join();
    FAIL() << "the copy-on-write never reached its full-ratio check";
  }
  publish_epoch(2);
  disk_.open();
  copy.join();
  wait_served(2);
  EXPECT_EQ(reply.status, kEpochMismatch)
      << "a copy-on-write admitted in epoch 1 landed after epoch 2 was made: status "
      << reply.status << " " << reply.message;
  EXPECT_EQ(version_of(target), (ObjectVersion{1, 3})) << "the refused copy changed the version";
  EXPECT_EQ(first_block(target), target_data) << "the refused copy changed the bytes";
}

// A create that waits for creates in flight to free the room gives up as soon as the
// epoch moves, without waiting for the room (or its 5 s bound).
TEST_F(ReplicaEpochTest, ACreateWaitingForCreatesInFlightGivesUpWhenTheEpochMoves) {
  ObjectId id = ObjectId::data(63, 63, 1);
  std::vector<uint8_t> before(kBlock, 0x71);
  ASSERT_EQ(serve(write_of(1, id, before, {1, 2}, true)).status, 0);  // 1 measurement
  auto in_flight = full_ratio_->reserve(uint64_t(kCreateBytes));  // 2: another create's room
  ASSERT_TRUE(in_flight) << in_flight.status().to_string();

  std::vector<uint8_t> after(kBlock, 0x72);
  PeerReply reply;
  std::thread create = serve_in_background(write_of(1, id, after, {1, 3}, true), reply);
  // Measurement 3 refused it (EAGAIN), 4 is its wait's next try.
  if (!disk_.wait_calls(4)) {
    create.join();
    FAIL() << "the create is not waiting for room: status " << reply.status;
  }
  const auto moved = std::chrono::steady_clock::now();
  publish_epoch(2);
  wait_served(2);
  create.join();  // the room stays taken
  EXPECT_EQ(reply.status, kEpochMismatch) << "status " << reply.status << " " << reply.message;
  EXPECT_LT(std::chrono::steady_clock::now() - moved, 4s) << "it waited for room past the epoch";
  EXPECT_EQ(version_of(id), (ObjectVersion{1, 2}));
  EXPECT_EQ(first_block(id), before);
}

// An update admitted in epoch 1 and still being applied (its FUA fdatasync held) when
// epoch 2 is made: a recovery read of epoch 2 must not see the copy without it.
TEST_F(ReplicaEpochTest, RecoveryReadsOfANewEpochWaitForUpdatesAdmittedBefore) {
  ObjectId id = ObjectId::data(64, 64, 1);
  ObjectId other = ObjectId::data(65, 65, 1);
  std::vector<uint8_t> data(kBlock, 0x81);
  ASSERT_EQ(serve(write_of(1, id, data, {1, 1}, true)).status, 0);
  ASSERT_EQ(serve(write_of(1, other, data, {1, 1}, true)).status, 0);

  crash_io_->hold_datasync(path_of(id), path_of(other), 0);
  PeerRequest zero = of(PeerOp::kZero, 1, id);
  zero.length = kBlock;
  zero.flags = kPeerFlagFua;
  zero.version = {1, 2};
  PeerReply zeroed;
  std::thread zeroing = serve_in_background(zero, zeroed);
  crash_io_->wait_held(path_of(id));  // admitted in epoch 1, inside the store now
  publish_epoch(2);
  wait_served(2);

  PeerReply early_list = serve(of(PeerOp::kListObjects, 2, id));
  std::string listed_early;
  for (const ListedObject& o : early_list.objects) {
    if (o.id == id) listed_early = " (listed at 1." + std::to_string(o.version.sequence) + ")";
  }
  EXPECT_EQ(early_list.status, kNotReady)
      << "LIST_OBJECTS of epoch 2 answered while a zero admitted in epoch 1 was being applied"
      << listed_early;
  // (A FETCH_OBJECT now would wait too, and past the drain's bound for the object's
  // lock, which the held zero keeps: it is asked after the zero, below.)

  auto synced = r0().block_on(store_->sync_object(other));  // releases the held fdatasync
  ASSERT_TRUE(synced) << synced.status().to_string();
  zeroing.join();
  EXPECT_EQ(zeroed.status, 0) << zeroed.message;  // admitted before the epoch moved

  PeerReply listed = serve(of(PeerOp::kListObjects, 2, id));
  ASSERT_EQ(listed.status, 0) << listed.message;
  auto found = std::find_if(listed.objects.begin(), listed.objects.end(),
                            [&](const ListedObject& o) { return o.id == id; });
  ASSERT_NE(found, listed.objects.end());
  EXPECT_EQ(found->version, (ObjectVersion{1, 2}));
  PeerRequest fetch = of(PeerOp::kFetchObject, 2, id);
  fetch.flags = kPeerFlagRecovery;
  PeerReply fetched = serve(fetch);
  ASSERT_EQ(fetched.status, 0) << fetched.message;
  EXPECT_EQ(fetched.version, (ObjectVersion{1, 2}));
  ASSERT_EQ(fetched.data.size(), kObjectSize);
  EXPECT_TRUE(std::all_of(fetched.data.data(), fetched.data.data() + kBlock,
                          [](uint8_t b) { return b == 0; }));
}

}  // namespace
}  // namespace kelpie
