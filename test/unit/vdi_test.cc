// The VDI layer over a real LocalStore: allocation through the map, trim, zeroes,
// block status, resize and reload.
#include "engine/vdi.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "engine/local_store.h"
#include "engine/vdi_directory.h"
#include "test/unit/fault_store.h"
#include "test/unit/store_fixture.h"

namespace kelpie {
namespace {

constexpr uint64_t kMiB = 1 << 20;

class VdiTest : public StoreFixture {
 protected:
  void on_started() override {
    directory_ = std::make_unique<VdiDirectory>(dir_.string(), *store_, *pool_);
    ASSERT_TRUE(directory_->open().is_ok());
  }
  void on_stopping() override { directory_.reset(); }
  std::vector<uint8_t> read(Vdi& vdi, uint64_t off, size_t len) {
    std::vector<uint8_t> out(len, 0xee);
    EXPECT_TRUE(r0().block_on(vdi.read(off, out)).is_ok());
    return out;
  }

  std::unique_ptr<VdiDirectory> directory_;
};

TEST_F(VdiTest, WritesAllocateOnlyTouchedObjectsAndSurviveReload) {
  auto created = directory_->create("d", 64 * kMiB, 20);
  ASSERT_TRUE(created.is_ok());
  Vdi& vdi = **created;
  std::vector<uint8_t> data(3 * kMiB, 0x5a);
  // Unaligned, across three object boundaries.
  ASSERT_TRUE(r0().block_on(vdi.write(5 * kMiB - 100, data, false)).is_ok());
  EXPECT_EQ(vdi.allocated_objects(), 4u);
  EXPECT_EQ(read(vdi, 5 * kMiB - 100, data.size()), data);
  EXPECT_EQ(read(vdi, 0, 4096), std::vector<uint8_t>(4096, 0));
  auto extents = vdi.block_status(0, 64 * kMiB, 100);
  ASSERT_EQ(extents.size(), 3u);
  EXPECT_FALSE(extents[0].allocated);
  EXPECT_EQ(extents[0].length, 4 * kMiB);
  EXPECT_TRUE(extents[1].allocated);
  EXPECT_EQ(extents[1].length, 4 * kMiB);
  stop();
  start();
  auto reloaded = directory_->find("d");
  ASSERT_TRUE(reloaded);
  EXPECT_EQ(reloaded->allocated_objects(), 4u);
  EXPECT_EQ(read(*reloaded, 5 * kMiB - 100, data.size()), data);
}

TEST_F(VdiTest, TrimFreesWholeObjectsAndZeroesPartialOnes) {
  auto vdi = *directory_->create("t", 16 * kMiB, 20);
  std::vector<uint8_t> data(4 * kMiB, 0x77);
  ASSERT_TRUE(r0().block_on(vdi->write(0, data, false)).is_ok());
  EXPECT_EQ(store_->object_count(), 4u + 2u);  // 4 data + inode + map
  ASSERT_TRUE(r0().block_on(vdi->trim(kMiB / 2, 2 * kMiB, false)).is_ok());
  EXPECT_EQ(vdi->allocated_objects(), 3u);  // object 1 freed, 0 and 2 zeroed in part
  auto back = read(*vdi, 0, 4 * kMiB);
  for (size_t i = 0; i < back.size(); ++i) {
    bool zeroed = i >= kMiB / 2 && i < kMiB / 2 + 2 * kMiB;
    ASSERT_EQ(back[i], zeroed ? 0 : 0x77) << "at " << i;
  }
  ASSERT_TRUE(r0().block_on(vdi->write_zeroes(2 * kMiB, kMiB, true, false)).is_ok());
  EXPECT_EQ(vdi->allocated_objects(), 3u);  // NO_HOLE keeps it allocated
  ASSERT_TRUE(r0().block_on(vdi->write_zeroes(2 * kMiB, kMiB, false, false)).is_ok());
  EXPECT_EQ(vdi->allocated_objects(), 2u);
}

TEST_F(VdiTest, ShrinkThenGrowReadsZerosBeyondTheOldEnd) {
  auto vdi = *directory_->create("r", 8 * kMiB, 20);
  std::vector<uint8_t> data(8 * kMiB, 0x11);
  ASSERT_TRUE(r0().block_on(vdi->write(0, data, false)).is_ok());
  ASSERT_TRUE(directory_->resize("r", 3 * kMiB + 512).is_ok());
  EXPECT_EQ(vdi->size(), 3 * kMiB + 512);
  EXPECT_EQ(vdi->allocated_objects(), 4u);
  ASSERT_TRUE(directory_->resize("r", 8 * kMiB).is_ok());
  auto back = read(*vdi, 0, 8 * kMiB);
  for (size_t i = 0; i < back.size(); ++i) ASSERT_EQ(back[i], i < 3 * kMiB + 512 ? 0x11 : 0) << i;
  EXPECT_EQ(directory_->resize("r", 1000).code(), EINVAL);  // not a multiple of 512
}

TEST_F(VdiTest, DirectoryErrorsAndDelete) {
  ASSERT_TRUE(directory_->create("a", kMiB, 22).is_ok());
  EXPECT_EQ(directory_->create("a", kMiB, 22).status().code(), EEXIST);
  EXPECT_EQ(directory_->create("b", 1000, 22).status().code(), EINVAL);
  EXPECT_EQ(directory_->create("b", kMiB, 27).status().code(), EINVAL);
  EXPECT_EQ(directory_->create("b@c", kMiB, 22).status().code(), EINVAL);
  EXPECT_EQ(directory_->remove("zz").code(), ENOENT);
  auto a = directory_->find("a");
  std::vector<uint8_t> data(kMiB, 1);
  ASSERT_TRUE(r0().block_on(a->write(0, data, false)).is_ok());
  a->attached = 1;
  EXPECT_EQ(directory_->remove("a").code(), EBUSY);
  a->attached = 0;
  ASSERT_TRUE(directory_->remove("a").is_ok());
  EXPECT_EQ(store_->object_count(), 0u);
  // Ids are never reused.
  auto again = directory_->create("a", kMiB, 22);
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ((*again)->id(), 2u);
}

TEST_F(VdiTest, SnapshotFreezesContentsAndHeadCopiesOnWrite) {
  auto vdi = *directory_->create("s", 8 * kMiB, 20);
  std::vector<uint8_t> a(4 * kMiB, 0xaa);
  ASSERT_TRUE(r0().block_on(vdi->write(0, a, false)).is_ok());
  VdiId before = vdi->id();
  auto snap = directory_->snapshot("s", "t1");
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  EXPECT_EQ(snap->name, "s@t1");
  EXPECT_EQ(snap->vdi->id(), before);
  EXPECT_NE(vdi->id(), before);  // the head goes on under a new id
  EXPECT_TRUE(snap->vdi->read_only());
  std::vector<uint8_t> b(100, 0xbb);
  ASSERT_TRUE(r0().block_on(vdi->write(kMiB - 50, b, false)).is_ok());  // two objects, partial
  auto head = read(*vdi, 0, 4 * kMiB);
  auto frozen = read(*snap->vdi, 0, 4 * kMiB);
  EXPECT_EQ(frozen, a);
  for (size_t i = 0; i < head.size(); ++i) {
    bool b_range = i >= kMiB - 50 && i < kMiB + 50;
    ASSERT_EQ(head[i], b_range ? 0xbb : 0xaa) << i;
  }
  EXPECT_EQ(vdi->owned_objects(), 2u);   // copied on write
  EXPECT_EQ(vdi->shared_objects(), 2u);  // still the snapshot's
  EXPECT_EQ(directory_->snapshot("s", "t1").status().code(), EEXIST);
  EXPECT_EQ(directory_->snapshot("nope", "").status().code(), ENOENT);
  // Survives a restart: the head, the snapshot and their sharing.
  stop();
  start();
  EXPECT_EQ(read(*directory_->find("s@t1"), 0, 4 * kMiB), a);
  EXPECT_EQ(read(*directory_->find("s"), 0, 4 * kMiB), head);
}

TEST_F(VdiTest, ClonesRollbackAndReclaim) {
  auto vdi = *directory_->create("c", 8 * kMiB, 20);
  std::vector<uint8_t> a(8 * kMiB, 0x01);
  ASSERT_TRUE(r0().block_on(vdi->write(0, a, false)).is_ok());
  ASSERT_TRUE(directory_->snapshot("c", "base").is_ok());
  auto clone = directory_->clone("c@base", "c2");
  ASSERT_TRUE(clone.is_ok());
  EXPECT_EQ(directory_->clone("c", "c3").status().code(), EINVAL);  // not a snapshot
  std::vector<uint8_t> x(4096, 0x22);
  ASSERT_TRUE(r0().block_on(clone->vdi->write(3 * kMiB, x, false)).is_ok());
  EXPECT_EQ(read(*directory_->find("c@base"), 3 * kMiB, 4096), std::vector<uint8_t>(4096, 0x01));
  EXPECT_EQ(read(*clone->vdi, 3 * kMiB, 4096), x);
  EXPECT_EQ(clone->vdi->owned_objects(), 1u);
  // Rollback: the head becomes the snapshot's contents again under a new id.
  ASSERT_TRUE(r0().block_on(directory_->find("c")->write(0, x, false)).is_ok());
  auto rolled = directory_->rollback("c@base");
  ASSERT_TRUE(rolled.is_ok());
  EXPECT_EQ(read(*directory_->find("c"), 0, 4096), std::vector<uint8_t>(4096, 0x01));
  // Delete the base VDI and its snapshot: the clone keeps the data it shares.
  ASSERT_TRUE(directory_->remove("c").is_ok());
  EXPECT_EQ(read(*directory_->find("c2"), 0, 8 * kMiB).at(5 * kMiB), 0x01);
  EXPECT_EQ(read(*directory_->find("c2"), 3 * kMiB, 4096), x);
  ASSERT_TRUE(directory_->remove("c2").is_ok());
  EXPECT_EQ(directory_->pending_reclaims(), 0u);
  EXPECT_EQ(store_->object_count(), 0u);
}

// A failed inode write after map object 0 was made: the write may have landed (a
// replicated store settles it to the newest inode on every replica). The next write
// must retry only the inode write: making map 0 again could fail, and the undo of that
// failed create would remove map 0 from under the inode that names it.
TEST_F(VdiTest, FailedInodeWriteAfterMapCreateKeepsTheMapObject) {
  FaultStore faults(*store_);
  Inode inode;
  inode.id = 7;
  inode.family = 7;
  inode.object_shift = 20;
  inode.size_bytes = 8 * kMiB;
  inode.name = "f";
  Vdi vdi(inode, false, faults, *pool_);
  ASSERT_TRUE(r0().block_on(vdi.create()).is_ok());
  const ObjectId inode_id = ObjectId::inode(7, 7);
  const ObjectId map0 = ObjectId::map(7, 7, 0);

  faults.fail_write_after_applying(inode_id);
  std::vector<uint8_t> data(4096, 0x5a);
  EXPECT_EQ(r0().block_on(vdi.write(kMiB, data, false)).code(), EIO);
  EXPECT_EQ(faults.creates(map0), 1u);

  faults.fail_create_and_undo(map0);  // fires only if map 0 is made again
  Status again = r0().block_on(vdi.write(kMiB, data, false));
  EXPECT_TRUE(again.is_ok()) << again.to_string();
  EXPECT_EQ(faults.creates(map0), 1u);
  std::vector<uint8_t> map_block(4096);
  EXPECT_TRUE(r0().block_on(store_->read(map0, 0, map_block)).is_ok());
  ASSERT_TRUE(r0().block_on(vdi.flush()).is_ok());

  // What a restarted gateway loads: the durable inode and the objects it names.
  std::vector<uint8_t> image(kInodeObjectSize);
  ASSERT_TRUE(r0().block_on(store_->read(inode_id, 0, image)).is_ok());
  auto stored = decode_inode(image);
  ASSERT_TRUE(stored.is_ok()) << stored.status().to_string();
  EXPECT_EQ(stored->map_table[0], 7u);
  Vdi reloaded(*stored, false, *store_, *pool_);
  Status loaded = r0().block_on(reloaded.load());
  ASSERT_TRUE(loaded.is_ok()) << loaded.to_string();
  EXPECT_EQ(reloaded.map_owner(1), 7u);
  EXPECT_EQ(read(reloaded, kMiB, data.size()), data);
  EXPECT_EQ(read(reloaded, 0, 4096), std::vector<uint8_t>(4096, 0));
}

// Issue 13 case 3: a gateway killed with writes unsettled and attached again through
// the same node must resync the VDI (a "takeover" from its own earlier run); a clean
// detach leaves nothing to take over.
TEST_F(VdiTest, WriterRecordedByAnEarlierRunIsATakeover) {
  auto alive = [](const std::string&) { return true; };
  directory_->set_cluster_identity("node-a", alive);
  ASSERT_TRUE(directory_->create("d", 8 * kMiB, 20).is_ok());
  bool took_over = true;
  auto first = directory_->lock_writer("d", &took_over);
  ASSERT_TRUE(first.is_ok());
  EXPECT_FALSE(took_over);
  stop(false);  // killed while attached
  start();
  directory_->set_cluster_identity("node-a", alive);
  auto again = directory_->lock_writer("d", &took_over);
  ASSERT_TRUE(again.is_ok());
  EXPECT_TRUE(took_over) << "the earlier run's attach was never detached";
  EXPECT_GT(*again, *first);
  ASSERT_TRUE(directory_->unlock_writer("d").is_ok());
  auto clean = directory_->lock_writer("d", &took_over);
  ASSERT_TRUE(clean.is_ok());
  EXPECT_FALSE(took_over);
  // The attach generation is the VDI's own and is what writer_holds() checks.
  VdiId head = directory_->find("d")->id();
  EXPECT_TRUE(*directory_->writer_holds(head, *clean));
  EXPECT_FALSE(*directory_->writer_holds(head, *again));
}

// Issue 13 case 2: a gateway that detaches with objects unsettled leaves the writer
// recorded as unsettled: it blocks nobody, and the next attach anywhere is a takeover.
TEST_F(VdiTest, DetachWithUnsettledObjectsMakesTheNextAttachATakeover) {
  auto alive = [](const std::string&) { return true; };
  directory_->set_cluster_identity("node-a", alive);
  ASSERT_TRUE(directory_->create("d", 8 * kMiB, 20).is_ok());
  ASSERT_TRUE(directory_->lock_writer("d").is_ok());
  ASSERT_TRUE(directory_->unlock_writer("d", true).is_ok());
  EXPECT_TRUE(directory_->live_writers().empty());
  // Another live node attaches: not refused, and told to resync first.
  directory_->set_cluster_identity("node-b", alive);
  bool took_over = false;
  ASSERT_TRUE(directory_->lock_writer("d", &took_over).is_ok());
  EXPECT_TRUE(took_over);
  ASSERT_TRUE(directory_->unlock_writer("d").is_ok());
  ASSERT_TRUE(directory_->lock_writer("d", &took_over).is_ok());
  EXPECT_FALSE(took_over);
}

}  // namespace
}  // namespace kelpie
