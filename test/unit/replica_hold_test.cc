// Rule 4, the write hold of an outside resync (cluster/replica_resync.h, kHold in
// cluster/peer_protocol.h, replica_service.h): HOLD and HELD on the wire; a held
// object refuses client writes with kNotReady but takes the holder's installs; the
// hold waits for writes in progress, ends with a release or its lease; and the race
// it closes, played deterministically with two replicas: a write applied to one
// replica only, the resync's hold placed, the write reaching the other replica while
// the resync works is refused until the release, and its retry lands on both.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "cluster/peer_transport.h"
#include "cluster/peer_wire.h"
#include "cluster/replica_resync.h"
#include "cluster/replica_service.h"
#include "test/unit/store_fixture.h"

namespace kelpie {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kObjectSize = 1u << 20;
constexpr uint32_t kBlock = 4096;

TEST(ReplicaHoldWire, HoldAndHeldWriteRoundTrip) {
  PeerRequest hold;
  hold.op = PeerOp::kHold;
  hold.epoch = 3;
  hold.id = ObjectId::data(5, 5, 2);
  hold.hold_token = 0x0102030405060708ull;
  hold.lease_ms = 4500;
  PeerFrame frame = encode_request(hold, 7);
  auto bytes = flatten(frame);
  EXPECT_EQ(bytes.size(), kPeerHeaderSize + 32);
  auto decoded = decode_request_frame(bytes);
  ASSERT_TRUE(decoded) << decoded.status().to_string();
  EXPECT_EQ(decoded->request.op, PeerOp::kHold);
  EXPECT_EQ(decoded->request.id, hold.id);
  EXPECT_EQ(decoded->request.hold_token, hold.hold_token);
  EXPECT_EQ(decoded->request.lease_ms, 4500u);
  EXPECT_EQ(decoded->request.flags, 0u);

  std::vector<uint8_t> data(kBlock, 0x5a);
  PeerRequest write;
  write.op = PeerOp::kWrite;
  write.epoch = 3;
  write.id = hold.id;
  write.object_size = kObjectSize;
  write.version = {2, 9};
  write.flags = kPeerFlagCreate | kPeerFlagFua | kPeerFlagResync;
  write.data = data;
  PeerFrame plain = encode_request(write, 8);
  const size_t plain_size = flatten(plain).size();
  EXPECT_EQ(plain_size, kPeerHeaderSize + 48 + kBlock) << "a WRITE without HELD is unchanged";
  write.flags |= kPeerFlagHeld;
  write.hold_token = 0xfeedull;
  PeerFrame held = encode_request(write, 8);
  auto held_bytes = flatten(held);
  EXPECT_EQ(held_bytes.size(), plain_size + 8);
  auto back = decode_request_frame(held_bytes);
  ASSERT_TRUE(back) << back.status().to_string();
  EXPECT_EQ(back->request.hold_token, 0xfeedull);
  EXPECT_EQ(back->request.version, (ObjectVersion{2, 9}));
  EXPECT_EQ(back->request.data.size(), kBlock);
  EXPECT_EQ(back->request.data[0], 0x5a);
}

// Two storage nodes in one process: A (the fixture's store, reached in-process) and B
// (a second store, its ReplicaService served over a Unix socket), both replicas of
// every object (copies 2).
class ReplicaHoldTest : public StoreFixture {
 protected:
  void on_started() override {
    b_dir_ = dir_ / "b";
    std::filesystem::create_directories(b_dir_);
    b_dir_fd_ = ::open(b_dir_.c_str(), O_RDONLY | O_DIRECTORY);
    b_io_ = std::make_unique<UringIoBackend>(b_dir_fd_);
    std::vector<Reactor*> raw;
    for (auto& r : reactors_) raw.push_back(r.get());
    b_store_ = std::make_unique<LocalStore>(raw, *b_io_, b_dir_.string());
    ASSERT_TRUE(b_store_->open().is_ok());

    EpochRecord record;
    record.epoch = 1;
    record.cluster = cluster_;
    record.copies = 2;
    record.min_copies = 1;
    MemberInfo a;
    a.id = a_id_;
    a.vnodes = 128;
    a.peer_address = "unix:" + (dir_ / "a.sock").string();
    MemberInfo b;
    b.id = b_id_;
    b.vnodes = 128;
    b.peer_address = "unix:" + (dir_ / "b.sock").string();
    record.nodes.push_back(a);
    record.nodes.push_back(b);
    auto a_view = make_epoch_view(record, a_id_);
    auto b_view = make_epoch_view(record, b_id_);
    ASSERT_TRUE(a_view && b_view);
    a_epochs_ = std::make_unique<EpochState>(*pool_);
    b_epochs_ = std::make_unique<EpochState>(*pool_);
    a_epochs_->publish(*a_view);
    b_epochs_->publish(*b_view);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    for (auto& r : reactors_) {  // B's server may serve on either reactor
      ASSERT_TRUE(r->block_on(a_epochs_->wait_any(deadline)));
      ASSERT_TRUE(r->block_on(b_epochs_->wait_any(deadline)));
    }
    Uuid cluster = cluster_;
    a_ = std::make_unique<ReplicaService>(store_.get(), nullptr, *a_epochs_, a_id_,
                                          [cluster] { return cluster; });
    b_ = std::make_unique<ReplicaService>(b_store_.get(), nullptr, *b_epochs_, b_id_,
                                          [cluster] { return cluster; });
  }
  void on_stopping() override {
    if (b_server_) b_server_->stop();
    if (client_) client_->close_all();
    b_server_.reset();
    client_.reset();
    a_.reset();
    b_.reset();
    a_epochs_.reset();
    b_epochs_.reset();
    if (b_store_) {
      EXPECT_TRUE(b_store_->close().is_ok());
    }
    b_store_.reset();
    b_io_.reset();
    if (b_dir_fd_ >= 0) ::close(b_dir_fd_);
    b_dir_fd_ = -1;
  }

  // B reachable over the peer protocol, through `handler` (B's service by default).
  void serve_b(PeerHandler& handler) {
    b_server_ = std::make_unique<PeerServer>("unix:" + (dir_ / "b.sock").string(), handler, *pool_);
    Status st = b_server_->start();
    ASSERT_TRUE(st) << st.to_string();
    client_ = std::make_unique<PeerClient>(*pool_, cluster_, a_id_);
  }

  static PeerRequest write_of(ObjectId id, uint64_t offset, std::span<const uint8_t> data,
                              ObjectVersion version, bool create = false) {
    PeerRequest r;
    r.op = PeerOp::kWrite;
    r.epoch = 1;
    r.id = id;
    r.offset = offset;
    r.length = data.size();
    r.object_size = kObjectSize;
    r.flags = kPeerFlagFua | (create ? kPeerFlagCreate : 0);
    r.version = version;
    r.data = data;
    return r;
  }
  static PeerRequest hold_of(ObjectId id, uint64_t token, uint32_t lease_ms, bool release = false) {
    PeerRequest r;
    r.op = PeerOp::kHold;
    r.epoch = 1;
    r.id = id;
    r.hold_token = token;
    r.lease_ms = lease_ms;
    r.flags = release ? kPeerFlagRelease : 0;
    return r;
  }
  static PeerRequest install_of(ObjectId id, std::span<const uint8_t> whole, ObjectVersion version,
                                uint64_t token) {
    PeerRequest r = write_of(id, 0, whole, version, true);
    r.flags = kPeerFlagCreate | kPeerFlagFua | kPeerFlagResync | kPeerFlagHeld;
    r.hold_token = token;
    return r;
  }
  std::shared_ptr<const EpochView> view_of_a() {
    return r0().block_on([](EpochState& epochs) -> Task<std::shared_ptr<const EpochView>> {
      co_return epochs.current();  // per reactor: read on one
    }(*a_epochs_));
  }
  PeerReply on_a(const PeerRequest& request) { return r0().block_on(a_->apply(request, {})); }
  PeerReply on_b(const PeerRequest& request) { return r0().block_on(b_->apply(request, {})); }

  std::vector<uint8_t> whole(LocalStore& store, ObjectId id) {
    std::vector<uint8_t> out(kObjectSize);
    Status st = r0().block_on(store.read(id, 0, out));
    EXPECT_TRUE(st) << st.to_string();
    return out;
  }

  Uuid a_id_ = Uuid{{0xa}};
  Uuid b_id_ = Uuid{{0xb}};
  Uuid cluster_ = Uuid{{9, 9}};
  std::filesystem::path b_dir_;
  int b_dir_fd_ = -1;
  std::unique_ptr<UringIoBackend> b_io_;
  std::unique_ptr<LocalStore> b_store_;
  std::unique_ptr<EpochState> a_epochs_;
  std::unique_ptr<EpochState> b_epochs_;
  std::unique_ptr<ReplicaService> a_;
  std::unique_ptr<ReplicaService> b_;
  std::unique_ptr<PeerServer> b_server_;
  std::unique_ptr<PeerClient> client_;
};

TEST_F(ReplicaHoldTest, AHeldObjectRefusesWritesButTakesTheHoldersInstall) {
  ObjectId id = ObjectId::data(50, 50, 1);
  ObjectId other = ObjectId::data(50, 50, 2);
  std::vector<uint8_t> ones(kBlock, 1);
  ASSERT_EQ(on_a(write_of(id, 0, ones, {1, 1}, true)).status, 0);
  ASSERT_EQ(on_a(write_of(other, 0, ones, {1, 1}, true)).status, 0);

  PeerReply held = on_a(hold_of(id, 77, 5000));
  ASSERT_EQ(held.status, 0) << held.message;
  std::vector<uint8_t> twos(kBlock, 2);
  EXPECT_EQ(on_a(write_of(id, kBlock, twos, {1, 2})).status, kNotReady);
  PeerRequest zero;
  zero.op = PeerOp::kZero;
  zero.epoch = 1;
  zero.id = id;
  zero.length = kBlock;
  zero.version = {1, 2};
  EXPECT_EQ(on_a(zero).status, kNotReady);
  PeerRequest remove;
  remove.op = PeerOp::kRemove;
  remove.epoch = 1;
  remove.id = id;
  remove.version = {1, 2};
  EXPECT_EQ(on_a(remove).status, kNotReady);
  PeerRequest cow;
  cow.op = PeerOp::kCreateFrom;
  cow.epoch = 1;
  cow.id = id;
  cow.src = other;
  cow.version = {1, 2};
  EXPECT_EQ(on_a(cow).status, kNotReady);
  std::vector<uint8_t> current = whole(*store_, id);
  PeerRequest unheld_install = install_of(id, current, {1, 2}, 0);
  unheld_install.flags &= ~kPeerFlagHeld;
  EXPECT_EQ(on_a(unheld_install).status, kNotReady) << "another resync's install waits too";
  // Other objects, reads and fetches go on.
  EXPECT_EQ(on_a(write_of(other, kBlock, twos, {1, 2})).status, 0);
  PeerRequest read;
  read.op = PeerOp::kRead;
  read.epoch = 1;
  read.id = id;
  read.length = kBlock;
  EXPECT_EQ(on_a(read).status, 0);
  PeerRequest fetch;
  fetch.op = PeerOp::kFetchObject;
  fetch.epoch = 1;
  fetch.id = id;
  fetch.flags = kPeerFlagRecovery;
  EXPECT_EQ(on_a(fetch).status, 0);

  // The holder's install goes in; another token's is refused and changes nothing.
  std::vector<uint8_t> content(kObjectSize, 3);
  EXPECT_EQ(on_a(install_of(id, content, {1, 5}, 78)).status, EAGAIN);
  EXPECT_EQ(whole(*store_, id)[0], 1);
  PeerReply installed = on_a(install_of(id, content, {1, 5}, 77));
  EXPECT_EQ(installed.status, 0) << installed.message;
  EXPECT_EQ(whole(*store_, id), content);

  EXPECT_EQ(on_a(hold_of(id, 78, 5000)).status, EBUSY) << "one hold at a time";
  EXPECT_EQ(on_a(hold_of(id, 78, 5000, true)).status, 0) << "releasing an unknown token: no-op";
  EXPECT_EQ(on_a(write_of(id, kBlock, twos, {1, 6})).status, kNotReady) << "still held";
  EXPECT_EQ(on_a(hold_of(id, 77, 5000, true)).status, 0);
  EXPECT_EQ(on_a(write_of(id, kBlock, twos, {1, 6})).status, 0) << "released";
  EXPECT_EQ(on_a(install_of(id, content, {1, 7}, 77)).status, EAGAIN) << "the hold is gone";
  EXPECT_EQ(whole(*store_, id)[kBlock], 2);
  EXPECT_EQ(on_a(hold_of(id, 77, 5000, true)).status, 0) << "a second release: no-op";
  EXPECT_EQ(on_a(hold_of(id, 78, 5000)).status, 0) << "another resync may hold it now";
  EXPECT_EQ(on_a(hold_of(id, 78, 5000, true)).status, 0);
}

TEST_F(ReplicaHoldTest, AHoldEndsWithItsLease) {
  ObjectId id = ObjectId::data(51, 51, 1);
  std::vector<uint8_t> ones(kBlock, 1);
  ASSERT_EQ(on_a(write_of(id, 0, ones, {1, 1}, true)).status, 0);
  ASSERT_EQ(on_a(hold_of(id, 5, 200)).status, 0);
  EXPECT_EQ(on_a(write_of(id, 0, ones, {1, 2})).status, kNotReady);
  // Poll until the lease lets the write through (bounded; the lease is 200 ms).
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  int32_t status = kNotReady;
  while (status == kNotReady && std::chrono::steady_clock::now() < deadline) {
    status = on_a(write_of(id, 0, ones, {1, 2})).status;
    if (status == kNotReady) std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(status, 0) << "the lease did not end";
  std::vector<uint8_t> content(kObjectSize, 4);
  EXPECT_EQ(on_a(install_of(id, content, {1, 9}, 5)).status, EAGAIN) << "expired: install refused";
  EXPECT_EQ(whole(*store_, id)[0], 1);
  PeerReply zero_lease = on_a(hold_of(id, 6, 0));
  EXPECT_EQ(zero_lease.status, EINVAL) << "a hold needs a lease";
}

// Placing a hold waits for a write that passed the check and is still being applied.
TEST_F(ReplicaHoldTest, PlacingAHoldWaitsForTheWriteInProgress) {
  // An object whose store work runs on reactor 1, which the test stalls.
  ObjectId id = ObjectId::data(52, 52, 1);
  for (VdiId family = 52; &store_->owner(id) != reactors_[1].get(); ++family) {
    id = ObjectId::data(family, family, 1);
  }
  std::vector<uint8_t> ones(kBlock, 1);
  ASSERT_EQ(on_a(write_of(id, 0, ones, {1, 1}, true)).status, 0);

  std::promise<void> stalled;
  std::promise<void> go;
  std::shared_future<void> go_signal = go.get_future().share();
  std::thread staller([&] {
    reactors_[1]->block_on([](std::promise<void>& entered, std::shared_future<void> wait) -> Task<void> {
      entered.set_value();
      wait.wait();  // blocks reactor 1's thread on purpose
      co_return;
    }(stalled, go_signal));
  });
  stalled.get_future().wait();

  std::atomic<bool> write_done{false};
  std::atomic<bool> hold_done{false};
  std::atomic<int32_t> write_status{-1};
  std::atomic<int32_t> hold_status{-1};
  std::atomic<bool> write_done_before_hold{false};
  std::vector<uint8_t> twos(kBlock, 2);
  PeerRequest write = write_of(id, kBlock, twos, {1, 2});
  PeerRequest hold = hold_of(id, 9, 5000);
  std::thread driver([&] {
    r0().block_on([](ReplicaService& service, const PeerRequest& write, const PeerRequest& hold,
                     std::atomic<bool>& write_done, std::atomic<int32_t>& write_status,
                     std::atomic<bool>& hold_done, std::atomic<int32_t>& hold_status,
                     std::atomic<bool>& before) -> Task<void> {
      spawn([](ReplicaService& service, const PeerRequest& write, std::atomic<bool>& done,
               std::atomic<int32_t>& status) -> Task<void> {
        PeerReply reply = co_await service.apply(write, {});
        status = reply.status;
        done = true;
      }(service, write, write_done, write_status));
      co_await sleep_for(std::chrono::milliseconds(20));  // the write is admitted, stalled in the store
      PeerReply reply = co_await service.apply(hold, {});
      before = write_done.load();
      hold_status = reply.status;
      hold_done = true;
    }(*a_, write, hold, write_done, write_status, hold_done, hold_status, write_done_before_hold));
  });
  // While reactor 1 is stalled the write can not finish, so the hold must not be granted.
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(write_done.load());
  EXPECT_FALSE(hold_done.load()) << "the hold was granted with a write still in progress";
  go.set_value();
  driver.join();
  staller.join();
  EXPECT_EQ(write_status.load(), 0);
  EXPECT_EQ(hold_status.load(), 0);
  EXPECT_TRUE(write_done_before_hold.load());
  EXPECT_EQ(whole(*store_, id)[kBlock], 2);
  EXPECT_EQ(on_a(write_of(id, 0, twos, {1, 3})).status, kNotReady);
  EXPECT_EQ(on_a(hold_of(id, 9, 0, true)).status, 0);
}

// B's side of the race: W1, which reached A before the resync's hold, reaches B just
// after the resync fetched B's copy (played by this handler around B's service).
class LateWriteOnB final : public PeerHandler {
 public:
  LateWriteOnB(ReplicaService& b, PeerRequest late) : b_(b), late_(std::move(late)) {}
  Status accept_hello(const PeerHello& hello) override { return b_.accept_hello(hello); }
  Task<PeerReply> handle(const PeerRequest& request) override {
    PeerReply reply = co_await b_.handle(request);
    if (request.op == PeerOp::kFetchObject && !delivered_) {
      delivered_ = true;
      PeerReply late = co_await b_.handle(late_);
      late_status = late.status;
    }
    co_return reply;
  }
  std::atomic<int32_t> late_status{-1};

 private:
  ReplicaService& b_;
  PeerRequest late_;
  bool delivered_ = false;
};

// The race of the bug (replica_resync.h): W1 (block 3, version 1.2) and W2 (block 5,
// 1.3) in flight; A applied both, B only W2; both copies at 1.3, contents differ, A
// is the suspect so B's copy is chosen and installed on A. Without the hold, W1 then
// lands on B (OK on both replicas: the gateway acknowledges it) while A lost it for
// good. With the hold, W1 on B is refused (kNotReady) until the release, and the
// gateway's retry re-applies it to both replicas.
TEST_F(ReplicaHoldTest, AWriteInFlightDuringAnOutsideResyncIsNotLost) {
  ObjectId id = ObjectId::data(53, 53, 1);
  std::vector<uint8_t> base(kBlock, 0);
  std::vector<uint8_t> w1(kBlock, 0x31);
  std::vector<uint8_t> w2(kBlock, 0x32);
  ASSERT_EQ(on_a(write_of(id, 0, base, {1, 1}, true)).status, 0);
  ASSERT_EQ(on_b(write_of(id, 0, base, {1, 1}, true)).status, 0);
  PeerRequest write1 = write_of(id, 3 * kBlock, w1, {1, 2});
  PeerRequest write2 = write_of(id, 5 * kBlock, w2, {1, 3});
  ASSERT_EQ(on_a(write1).status, 0);
  ASSERT_EQ(on_a(write2).status, 0);
  ASSERT_EQ(on_b(write2).status, 0);

  LateWriteOnB late(*b_, write1);
  serve_b(late);
  ReplicaResync resync(*client_, *a_);
  std::shared_ptr<const EpochView> view = view_of_a();
  ASSERT_TRUE(view);
  ASSERT_EQ(view->replicas(id).size(), 2u);
  std::vector<NodeIndex> suspects(1, *view->self);  // A stopped uncleanly
  ResyncOutcome outcome = r0().block_on(resync.run(*view, id, true, suspects, ResyncHold::kHoldWrites));
  EXPECT_TRUE(outcome.complete);
  ASSERT_TRUE(outcome.chosen);
  EXPECT_EQ(view->member(*outcome.chosen).id, b_id_) << "the trusted copy, without W1";

  // The gateway's side of W1: it was answered OK by A; B's answer decides.
  const int32_t on_b_status = late.late_status.load();
  ASSERT_NE(on_b_status, -1) << "W1 never reached B";
  if (on_b_status != 0) {
    EXPECT_EQ(on_b_status, kNotReady) << "refused while held";
    // Retry soon, on every replica, with the same version: the hold is released now.
    EXPECT_EQ(on_a(write1).status, 0);
    EXPECT_EQ(on_b(write1).status, 0);
  }
  // W1 is acknowledged now: every replica must hold it, and the copies must be equal.
  std::vector<uint8_t> a = whole(*store_, id);
  std::vector<uint8_t> b = whole(*b_store_, id);
  EXPECT_EQ(a[3 * kBlock], 0x31) << "A lost the acknowledged write W1";
  EXPECT_EQ(b[3 * kBlock], 0x31);
  EXPECT_EQ(a[5 * kBlock], 0x32);
  EXPECT_EQ(b[5 * kBlock], 0x32);
  EXPECT_TRUE(a == b) << "the replicas diverge";
}

// A replica that answers the hold with an error (here: another resync holds it) makes
// the resync rewrite no copy; a replica that can not be reached is not judged.
TEST_F(ReplicaHoldTest, ARefusedHoldRepairsNothing) {
  ObjectId id = ObjectId::data(54, 54, 1);
  std::vector<uint8_t> ones(kBlock, 1);
  std::vector<uint8_t> twos(kBlock, 2);
  ASSERT_EQ(on_a(write_of(id, 0, ones, {1, 1}, true)).status, 0);
  ASSERT_EQ(on_b(write_of(id, 0, twos, {1, 2}, true)).status, 0);  // A is stale
  serve_b(*b_);
  ASSERT_EQ(on_b(hold_of(id, 1234, 5000)).status, 0);  // another resync's hold on B
  // With a 200 ms lease the run waits for B's hold for 400 ms at most, then gives up.
  ReplicaResync resync(*client_, *a_, std::chrono::milliseconds(200));
  std::shared_ptr<const EpochView> view = view_of_a();
  std::vector<NodeIndex> none;
  ResyncOutcome refused = r0().block_on(resync.run(*view, id, true, none, ResyncHold::kHoldWrites));
  EXPECT_FALSE(refused.complete);
  EXPECT_EQ(whole(*store_, id)[0], 1) << "nothing rewritten";
  EXPECT_EQ(on_a(write_of(id, kBlock, ones, {1, 3})).status, 0) << "A's hold was released";
  ASSERT_EQ(on_b(hold_of(id, 1234, 0, true)).status, 0);

  ResyncOutcome repaired = r0().block_on(resync.run(*view, id, true, none, ResyncHold::kHoldWrites));
  EXPECT_TRUE(repaired.complete);
  EXPECT_EQ(whole(*store_, id), whole(*b_store_, id));
  EXPECT_EQ(on_a(write_of(id, kBlock, ones, {1, 4})).status, 0) << "released after success";
  EXPECT_EQ(on_b(write_of(id, kBlock, ones, {1, 4})).status, 0);
}

// Several resyncs of one object (the unclean-restart resyncs of several nodes, a
// `cluster check --repair`) take turns: a run that finds another's hold waits for it.
TEST_F(ReplicaHoldTest, AResyncWaitsForAnotherResyncsHold) {
  ObjectId id = ObjectId::data(55, 55, 1);
  std::vector<uint8_t> ones(kBlock, 1);
  std::vector<uint8_t> twos(kBlock, 2);
  ASSERT_EQ(on_a(write_of(id, 0, ones, {1, 1}, true)).status, 0);
  ASSERT_EQ(on_b(write_of(id, 0, twos, {1, 2}, true)).status, 0);  // A is stale
  serve_b(*b_);
  ASSERT_EQ(on_b(hold_of(id, 4321, 300)).status, 0);  // another resync's hold, ends in 300 ms
  ReplicaResync resync(*client_, *a_);
  std::shared_ptr<const EpochView> view = view_of_a();
  std::vector<NodeIndex> none;
  ResyncOutcome outcome = r0().block_on(resync.run(*view, id, true, none, ResyncHold::kHoldWrites));
  EXPECT_TRUE(outcome.complete);
  EXPECT_EQ(whole(*store_, id), whole(*b_store_, id));
  EXPECT_EQ(whole(*store_, id)[0], 2);
  EXPECT_EQ(on_a(write_of(id, kBlock, ones, {1, 3})).status, 0) << "released after success";
}

}  // namespace
}  // namespace kelpie
