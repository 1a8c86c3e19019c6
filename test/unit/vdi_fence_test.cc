// One writer per VDI at the replica (cluster/vdi_fences.h, replica_service.h): an
// update below the VDI's attach generation is refused (ESTALE) and changes nothing,
// also for objects the newer attach never wrote here; a node that has not loaded the
// VDI directory yet answers kNotReady; resync installs are exempt; fences only rise.
// And the directory feeds them: every grant reaches the writers listener.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <vector>

#include "cluster/replica_service.h"
#include "cluster/vdi_fences.h"
#include "engine/vdi_directory.h"
#include "test/unit/store_fixture.h"

namespace kelpie {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kObjectSize = 1u << 20;

class VdiFenceTest : public StoreFixture {
 protected:
  void on_started() override {
    EpochRecord record;
    record.epoch = 1;
    record.cluster = cluster_;
    record.copies = 1;
    record.min_copies = 1;
    MemberInfo self;
    self.id = self_;
    self.vnodes = 128;
    self.peer_address = "unix:" + (dir_ / "a.sock").string();
    record.nodes.push_back(self);
    auto view = make_epoch_view(record, self_);
    ASSERT_TRUE(view);
    epochs_ = std::make_unique<EpochState>(*pool_);
    epochs_->publish(*view);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    for (auto& r : reactors_) ASSERT_TRUE(r->block_on(epochs_->wait_any(deadline)));
    Uuid cluster = cluster_;
    service_ = std::make_unique<ReplicaService>(store_.get(), nullptr, *epochs_, self_,
                                                [cluster] { return cluster; });
    service_->set_fences(&fences_);
  }
  void on_stopping() override {
    service_.reset();
    epochs_.reset();
  }
  PeerReply apply(const PeerRequest& request) { return r0().block_on(service_->apply(request, {})); }
  static PeerRequest write_of(ObjectId id, const std::vector<uint8_t>& data, ObjectVersion version,
                              bool create, bool resync = false) {
    PeerRequest r;
    r.op = PeerOp::kWrite;
    r.epoch = 1;
    r.id = id;
    r.length = data.size();
    r.object_size = kObjectSize;
    r.flags = (create ? kPeerFlagCreate : 0) | (resync ? kPeerFlagResync : 0);
    r.version = version;
    r.data = data;
    return r;
  }
  std::vector<uint8_t> read(ObjectId id) {
    std::vector<uint8_t> out(4096);
    EXPECT_TRUE(r0().block_on(store_->read(id, 0, out)).is_ok());
    return out;
  }

  Uuid cluster_ = Uuid{{1, 2, 3}};
  Uuid self_ = Uuid{{9, 8, 7}};
  VdiFences fences_;
  std::unique_ptr<EpochState> epochs_;
  std::unique_ptr<ReplicaService> service_;
};

TEST_F(VdiFenceTest, NotReadyUntilTheDirectoryIsLoaded) {
  const std::vector<uint8_t> data(4096, 0x11);
  ObjectId id = ObjectId::data(7, 7, 0);
  EXPECT_EQ(apply(write_of(id, data, {3, 1}, true)).status, kNotReady);
  fences_.learn({});
  EXPECT_EQ(apply(write_of(id, data, {3, 1}, true)).status, 0);
  EXPECT_EQ(read(id), data);
}

TEST_F(VdiFenceTest, OlderAttachIsRefusedEvenWhereTheNewOneNeverWrote) {
  fences_.learn({});
  const std::vector<uint8_t> old_data(4096, 0x11);
  const std::vector<uint8_t> late(4096, 0x22);
  ObjectId id = ObjectId::data(7, 7, 0);
  ObjectId other_vdi = ObjectId::data(8, 8, 0);
  ASSERT_EQ(apply(write_of(id, old_data, {5, 1}, true)).status, 0);
  ASSERT_EQ(apply(write_of(other_vdi, old_data, {5, 2}, true)).status, 0);
  // VDI 7 is attached anew with generation 6 elsewhere; this copy never saw it.
  fences_.learn({{7, 6}});
  PeerReply refused = apply(write_of(id, late, {5, 3}, false));
  EXPECT_EQ(refused.status, ESTALE) << refused.message;
  EXPECT_NE(refused.message.find("attach generation 6"), std::string::npos) << refused.message;
  EXPECT_EQ(read(id), old_data) << "a fenced write changed the copy";
  PeerRequest remove;
  remove.op = PeerOp::kRemove;
  remove.epoch = 1;
  remove.id = id;
  remove.version = {5, 4};
  EXPECT_EQ(apply(remove).status, ESTALE);
  EXPECT_EQ(read(id), old_data);
  // Other VDIs, the new attach, and resync installs go on.
  EXPECT_EQ(apply(write_of(other_vdi, late, {5, 5}, false)).status, 0);
  EXPECT_EQ(apply(write_of(id, late, {6, 1}, false)).status, 0);
  EXPECT_EQ(read(id), late);
  std::vector<uint8_t> whole(kObjectSize, 0x33);
  EXPECT_EQ(apply(write_of(id, whole, {6, 9}, true, true)).status, 0);
  // Fences only rise.
  fences_.learn({{7, 4}});
  EXPECT_EQ(fences_.fence(7), 6u);
}

TEST_F(VdiFenceTest, EveryGrantReachesTheWritersListener) {
  std::vector<std::pair<VdiId, uint64_t>> seen;
  VdiDirectory directory(dir_.string(), *store_, *pool_);
  directory.set_writers_listener([&seen](const std::vector<std::pair<VdiId, uint64_t>>& grants) {
    seen = grants;
  });
  ASSERT_TRUE(directory.open().is_ok());
  directory.set_cluster_identity("node-a", [](const std::string&) { return true; });
  auto created = directory.create("d", 8 << 20, 20);
  ASSERT_TRUE(created.is_ok());
  EXPECT_TRUE(seen.empty());
  auto generation = directory.lock_writer("d");
  ASSERT_TRUE(generation.is_ok());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].first, (*created)->id());
  EXPECT_EQ(seen[0].second, *generation);
}

}  // namespace
}  // namespace kelpie
