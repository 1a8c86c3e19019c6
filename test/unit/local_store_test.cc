// LocalStore against real files in a temporary directory, on two reactors.
#include "engine/local_store.h"

#include "test/unit/store_fixture.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "common/log.h"

namespace kelpie {
namespace {

constexpr uint32_t kObjectSize = 1u << 20;

class LocalStoreTest : public StoreFixture {
 protected:
  Status write(ObjectId id, uint64_t off, const std::vector<uint8_t>& data, bool create = false) {
    return reactors_[0]->block_on(store_->write(id, off, data, {false, create, kObjectSize}));
  }
  Result<std::vector<uint8_t>> read(ObjectId id, uint64_t off, size_t len) {
    std::vector<uint8_t> out(len);
    Status st = reactors_[0]->block_on(store_->read(id, off, out));
    if (!st.is_ok()) return st;
    return out;
  }
  std::filesystem::path object_file(ObjectId id) { return dir_ / "objects" / id.to_hex(); }

};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

TEST_F(LocalStoreTest, MissingObjectIsEnoent) {
  EXPECT_EQ(read(ObjectId::data(1, 1, 0), 0, 10).status().code(), ENOENT);
  EXPECT_EQ(write(ObjectId::data(1, 1, 0), 0, pattern(10, 1)).code(), ENOENT);
}

TEST_F(LocalStoreTest, UnalignedWritesReadBackAndUnwrittenIsZero) {
  ObjectId id = ObjectId::data(1, 1, 3);
  ASSERT_TRUE(write(id, 4095, pattern(3, 9), true).is_ok());
  ASSERT_TRUE(write(id, 100000, pattern(10000, 3)).is_ok());
  auto a = read(id, 4095, 3);
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(*a, pattern(3, 9));
  auto b = read(id, 100000, 10000);
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(*b, pattern(10000, 3));
  auto zeros = read(id, 500000, 8192);
  ASSERT_TRUE(zeros.is_ok());
  EXPECT_EQ(*zeros, std::vector<uint8_t>(8192, 0));
  EXPECT_EQ(read(id, kObjectSize - 1, 2).status().code(), EINVAL);
}

TEST_F(LocalStoreTest, SurvivesCleanRestartAndKill) {
  ObjectId id = ObjectId::data(2, 2, 0);
  ASSERT_TRUE(write(id, 12345, pattern(70000, 5), true).is_ok());
  stop(true);
  start();
  EXPECT_EQ(*read(id, 12345, 70000), pattern(70000, 5));
  ASSERT_TRUE(write(id, 0, pattern(4096, 8)).is_ok());
  stop(false);  // no flush: the dirty log is replayed at the next open
  EXPECT_TRUE(std::filesystem::exists(dir_ / "dirty.0.log") || std::filesystem::exists(dir_ / "dirty.1.log"));
  start();
  EXPECT_EQ(*read(id, 0, 4096), pattern(4096, 8));
  EXPECT_EQ(*read(id, 12345, 70000), pattern(70000, 5));
  EXPECT_EQ(store_->object_count(), 1u);
}

TEST_F(LocalStoreTest, FlippedBitOnDiskIsEio) {
  ObjectId id = ObjectId::data(3, 3, 1);
  ASSERT_TRUE(write(id, 0, pattern(8192, 1), true).is_ok());
  stop(true);
  {
    int fd = ::open(object_file(id).c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t byte;
    ASSERT_EQ(::pread(fd, &byte, 1, kDataOffset + 5000), 1);
    byte ^= 0x10;
    ASSERT_EQ(::pwrite(fd, &byte, 1, kDataOffset + 5000), 1);
    ::close(fd);
  }
  start();
  EXPECT_EQ(read(id, 0, 4096).status().code(), 0);      // the other block is fine
  EXPECT_EQ(read(id, 4096, 10).status().code(), EIO);   // never wrong data
  EXPECT_EQ(write(id, 4097, pattern(3, 1)).code(), EIO);  // read-modify-write refuses too
}

TEST_F(LocalStoreTest, UncleanStopRepairsOnlyLoggedObjects) {
  ObjectId logged = ObjectId::data(8, 8, 0);
  ObjectId clean = ObjectId::data(8, 8, 1);
  ASSERT_TRUE(write(clean, 0, pattern(4096, 1), true).is_ok());
  ASSERT_TRUE(reactors_[0]->block_on(store_->flush()).is_ok());  // `clean` is synced, off the log
  ASSERT_TRUE(write(logged, 0, pattern(4096, 2), true).is_ok());
  stop(false);
  // A torn write: new data reached the disk, its checksum did not (and bit rot elsewhere).
  for (ObjectId id : {logged, clean}) {
    int fd = ::open(object_file(id).c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t byte = 0x99;
    ASSERT_EQ(::pwrite(fd, &byte, 1, kDataOffset + 10), 1);
    ::close(fd);
  }
  start();
  auto repaired = read(logged, 0, 4096);
  ASSERT_TRUE(repaired.is_ok());  // was mid-write: the data on disk now stands
  EXPECT_EQ((*repaired)[10], 0x99);
  EXPECT_EQ(read(clean, 0, 4096).status().code(), EIO);  // not logged: bit rot is caught
}

TEST_F(LocalStoreTest, ZeroAndRemove) {
  ObjectId id = ObjectId::data(4, 4, 2);
  ASSERT_TRUE(write(id, 0, pattern(65536, 2), true).is_ok());
  ASSERT_TRUE(reactors_[0]->block_on(store_->zero(id, 1000, 20000, false)).is_ok());
  auto data = read(id, 0, 65536);
  ASSERT_TRUE(data.is_ok());
  auto expect = pattern(65536, 2);
  std::fill(expect.begin() + 1000, expect.begin() + 21000, 0);
  EXPECT_EQ(*data, expect);
  ASSERT_TRUE(reactors_[0]->block_on(store_->remove(id)).is_ok());
  EXPECT_EQ(read(id, 0, 1).status().code(), ENOENT);
  EXPECT_FALSE(std::filesystem::exists(object_file(id)));
  EXPECT_EQ(store_->object_count(), 0u);
}

TEST_F(LocalStoreTest, CreateReplacesOldCopyAndCreateFromCopies) {
  ObjectId id = ObjectId::data(5, 5, 0);
  ASSERT_TRUE(write(id, 0, pattern(4096, 1), true).is_ok());
  ASSERT_TRUE(write(id, 8192, pattern(4096, 2), true).is_ok());
  EXPECT_EQ(*read(id, 0, 4096), std::vector<uint8_t>(4096, 0));
  ObjectId clone = ObjectId::data(6, 5, 0);
  ASSERT_TRUE(reactors_[0]->block_on(store_->create_from(clone, id)).is_ok());
  EXPECT_EQ(*read(clone, 8192, 4096), pattern(4096, 2));
  ASSERT_TRUE(write(clone, 8192, pattern(10, 3)).is_ok());
  EXPECT_EQ(*read(id, 8192, 4096), pattern(4096, 2));
}

TEST_F(LocalStoreTest, ConcurrentOverlappingWritesStayConsistent) {
  ObjectId id = ObjectId::data(7, 7, 0);
  ASSERT_TRUE(write(id, 0, pattern(1, 0), true).is_ok());
  std::mt19937 rng(42);
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> writes;
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % (kObjectSize - 20000);
    writes.emplace_back(off, pattern(1 + rng() % 20000, static_cast<uint8_t>(i)));
  }
  Status st = reactors_[0]->block_on([](LocalStore* store, decltype(writes)* w, ObjectId oid) -> Task<Status> {
    std::vector<Task<Status>> tasks;
    for (auto& [off, data] : *w) tasks.push_back(store->write(oid, off, data, {}));
    co_return co_await when_all(std::move(tasks));
  }(store_.get(), &writes, id));
  ASSERT_TRUE(st.is_ok());
  // Every block's checksum matches its data: the whole object reads without EIO.
  EXPECT_TRUE(read(id, 0, kObjectSize).is_ok());
  ASSERT_TRUE(reactors_[0]->block_on(store_->flush()).is_ok());
}

}  // namespace
}  // namespace kelpie
