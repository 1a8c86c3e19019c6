// LocalStore (every replica's store) on a CrashIoBackend: what a power loss keeps,
// and how fdatasync failures reach FLUSH (DESIGN.md rules 5 and 6).
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "engine/local_store.h"
#include "test/unit/store_fixture.h"

namespace kelpie {
namespace {

constexpr uint32_t kObjectSize = 1u << 20;

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

class LocalStorePowerLossTest : public StoreFixture {
 protected:
  void SetUp() override {
    power_loss_io_ = true;
    StoreFixture::SetUp();
  }
  Status write(ObjectId id, uint64_t offset, const std::vector<uint8_t>& data, WriteOptions options) {
    return r0().block_on(store_->write(id, offset, data, options));
  }
  Result<std::vector<uint8_t>> read(ObjectId id, uint64_t offset, size_t length) {
    std::vector<uint8_t> out(length);
    Status st = r0().block_on(store_->read(id, offset, out));
    if (!st.is_ok()) return st;
    return out;
  }
  static std::string path_of(ObjectId id) { return "objects/" + id.to_hex(); }
};

// The baseline the other tests rely on: FUA and flushed writes survive, the rest is
// dropped, and the replay of the dirty log leaves every object readable.
TEST_F(LocalStorePowerLossTest, FuaAndFlushedWritesSurviveTheRestIsDropped) {
  ObjectId fua = ObjectId::data(1, 1, 0);
  ObjectId flushed = ObjectId::data(1, 1, 1);
  ObjectId unsynced = ObjectId::data(1, 1, 2);
  ASSERT_TRUE(write(fua, 8192, pattern(4096, 1), {true, true, kObjectSize}).is_ok());
  ASSERT_TRUE(write(flushed, 0, pattern(8192, 2), {false, true, kObjectSize}).is_ok());
  ASSERT_TRUE(r0().block_on(store_->flush()).is_ok());
  ASSERT_TRUE(write(flushed, 0, pattern(4096, 3), {false}).is_ok());  // after the flush
  ASSERT_TRUE(write(unsynced, 0, pattern(4096, 4), {false, true, kObjectSize}).is_ok());

  power_loss();
  start();

  EXPECT_EQ(*read(fua, 8192, 4096), pattern(4096, 1));
  auto back = read(flushed, 0, 8192);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  std::vector<uint8_t> second_block = pattern(8192, 2);
  second_block.erase(second_block.begin(), second_block.begin() + 4096);
  EXPECT_EQ(std::vector<uint8_t>(back->begin() + 4096, back->end()), second_block);
  auto gone = read(unsynced, 0, 4096);  // logged, so recreated as zeros
  ASSERT_TRUE(gone.is_ok()) << gone.status().to_string();
  EXPECT_EQ(*gone, std::vector<uint8_t>(4096, 0));
}

// What a replica does for a gateway's copy-on-write: once create_from_versioned has
// answered, the gateway writes the map entry naming the copy, so the copy (data,
// crcs, version, directory entry) must already be durable.
TEST_F(LocalStorePowerLossTest, CreateFromIsDurableWhenItCompletes) {
  ObjectId src = ObjectId::data(2, 2, 0);
  ObjectId dst = ObjectId::data(3, 2, 0);  // same family: same shard, a local copy
  ASSERT_TRUE(write(src, 0, pattern(kObjectSize, 5), {false, true, kObjectSize, {4, 1}}).is_ok());
  ASSERT_TRUE(r0().block_on(store_->flush()).is_ok());
  ASSERT_TRUE(r0().block_on(store_->create_from_versioned(dst, src, {4, 2})).is_ok());

  power_loss();
  start();

  auto copy = read(dst, 0, kObjectSize);
  ASSERT_TRUE(copy.is_ok()) << copy.status().to_string();
  EXPECT_EQ(*copy, pattern(kObjectSize, 5)) << "the copy was only in the page cache";
  auto version = r0().block_on(store_->version_of(dst));
  ASSERT_TRUE(version.is_ok()) << version.status().to_string();
  EXPECT_EQ(*version, (ObjectVersion{4, 2}));
  auto bad = r0().block_on(store_->bad_blocks(dst));
  ASSERT_TRUE(bad.is_ok());
  EXPECT_TRUE(bad->empty());
}

// One shard: a second shard's flush could start after the failure and fail for that
// reason alone, which would hide whether this shard's flush waited.
class OneShardPowerLossTest : public LocalStorePowerLossTest {
 protected:
  void SetUp() override {
    reactor_count_ = 1;
    LocalStorePowerLossTest::SetUp();
  }
};

// Case 5, third part: an LRU eviction takes a dirty object out of the flush's set and
// fdatasyncs it itself. A FLUSH that starts while that sync runs must wait for it and
// fail if it fails; the store then refuses writes. Deterministic: the eviction's sync
// is held until the flush syncs the objects directory, then fails.
TEST_F(OneShardPowerLossTest, FlushWaitsForAnEvictionSyncAndFailsWithIt) {
  store_->set_open_file_limit(1);
  ObjectId evicted = ObjectId::data(4, 4, 0);
  ObjectId newcomer = ObjectId::data(4, 4, 1);  // same shard: opening it evicts `evicted`
  ASSERT_TRUE(write(evicted, 0, pattern(4096, 6), {false, true, kObjectSize}).is_ok());

  crash_io_->hold_datasync(path_of(evicted), "objects", EIO);
  Status newcomer_write;
  std::thread writer([&] {
    newcomer_write = r0().block_on(store_->write(newcomer, 0, pattern(4096, 7), {false, true, kObjectSize}));
  });
  crash_io_->wait_held(path_of(evicted));  // the eviction's fdatasync has begun

  Status flushed = r0().block_on(store_->flush());
  writer.join();
  EXPECT_EQ(flushed.code(), EIO) << "FLUSH acknowledged while the eviction's fdatasync failed: "
                                 << flushed.to_string();
  EXPECT_TRUE(store_->failed());
  EXPECT_EQ(write(evicted, 0, pattern(4096, 8), {false}).code(), EIO);  // refused from now on
  EXPECT_EQ(r0().block_on(store_->flush()).code(), EIO);
  stop(false);  // a clean close would flush, and fail
}

}  // namespace
}  // namespace kelpie
