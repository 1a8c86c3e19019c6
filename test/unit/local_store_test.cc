// LocalStore against real files in a temporary directory, on two reactors.
#include "engine/local_store.h"

#include "test/unit/store_fixture.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <fstream>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <tuple>
#include <random>
#include <thread>

#include "common/bytes.h"
#include "common/crc32c.h"
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

  Status write_v(ObjectId id, uint64_t off, const std::vector<uint8_t>& data, ObjectVersion v,
                 bool create = false, bool fua = false) {
    return r0().block_on(store_->write(id, off, data, {fua, create, kObjectSize, v}));
  }
  Result<ObjectCopyInfo> stat(ObjectId id) { return r0().block_on(store_->stat_object(id)); }
  ObjectVersion version(ObjectId id) {
    auto v = r0().block_on(store_->version_of(id));
    EXPECT_TRUE(v.is_ok()) << v.status().to_string();
    return v ? *v : ObjectVersion{~0ull, ~0ull};
  }
  // (id hex, generation, sequence, size), sorted: comparable with EXPECT_EQ.
  using Row = std::tuple<std::string, uint64_t, uint64_t, uint32_t>;
  std::vector<Row> list_all() {
    auto listed = r0().block_on(store_->list_all());
    EXPECT_TRUE(listed.is_ok());
    std::vector<Row> rows;
    if (listed) {
      for (const StoredObject& o : *listed) {
        rows.emplace_back(o.id.to_hex(), o.version.generation, o.version.sequence, o.object_size);
      }
    }
    std::sort(rows.begin(), rows.end());
    return rows;
  }
  Status install(ObjectId id, ObjectVersion v, const std::vector<uint8_t>& data) {
    return r0().block_on(store_->install(id, v, static_cast<uint32_t>(data.size()), data));
  }
  // Changes one byte of the object's file behind the store's back (bit rot).
  void flip_byte(ObjectId id, uint64_t file_offset) {
    int fd = ::open(object_file(id).c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t byte;
    ASSERT_EQ(::pread(fd, &byte, 1, file_offset), 1);
    byte ^= 0x10;
    ASSERT_EQ(::pwrite(fd, &byte, 1, file_offset), 1);
    ::close(fd);
  }
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

// ---- versions, the object list cache and recovery ---------------------------------

TEST_F(LocalStoreTest, VersionIsStoredAndSurvivesRestartAndKill) {
  ObjectId id = ObjectId::data(10, 10, 0);
  ASSERT_TRUE(write_v(id, 0, pattern(4096, 1), {3, 1}, true).is_ok());
  EXPECT_EQ(version(id), (ObjectVersion{3, 1}));
  ASSERT_TRUE(write_v(id, 8192, pattern(100, 2), {3, 2}).is_ok());
  auto info = stat(id);
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ(info->version, (ObjectVersion{3, 2}));
  EXPECT_EQ(info->object_size, kObjectSize);
  stop(true);
  start();
  EXPECT_EQ(version(id), (ObjectVersion{3, 2}));
  ASSERT_TRUE(write_v(id, 0, pattern(4096, 3), {4, 1}, false, /*fua=*/true).is_ok());
  stop(false);  // kill -9: the page cache (here: the fua write) survives
  start();
  EXPECT_EQ(version(id), (ObjectVersion{4, 1}));
  EXPECT_EQ(*read(id, 0, 4096), pattern(4096, 3));
  EXPECT_EQ(*read(id, 8192, 100), pattern(100, 2));
  EXPECT_EQ(stat(ObjectId::data(10, 10, 1)).status().code(), ENOENT);
  EXPECT_EQ(r0().block_on(store_->version_of(ObjectId::data(10, 10, 1))).status().code(), ENOENT);
}

TEST_F(LocalStoreTest, LowerSequenceOfSameGenerationKeepsTheHigherVersion) {
  ObjectId id = ObjectId::data(10, 10, 2);
  ASSERT_TRUE(write_v(id, 0, pattern(10, 1), {5, 9}, true).is_ok());
  ASSERT_TRUE(write_v(id, 4096, pattern(10, 2), {5, 7}).is_ok());  // disjoint, completed late
  EXPECT_EQ(version(id), (ObjectVersion{5, 9}));
  EXPECT_EQ(*read(id, 4096, 10), pattern(10, 2));
}

TEST_F(LocalStoreTest, FenceRefusesLowerGenerationAndChangesNothing) {
  ObjectId id = ObjectId::data(11, 11, 0);
  ObjectId src = ObjectId::data(12, 11, 0);
  ASSERT_TRUE(write_v(id, 0, pattern(8192, 1), {5, 1}, true).is_ok());
  ASSERT_TRUE(write(src, 0, pattern(4096, 9), true).is_ok());
  auto refused = [&] {
    EXPECT_EQ(write_v(id, 0, pattern(8192, 2), {4, 99}).code(), ESTALE);
    EXPECT_EQ(write_v(id, 0, pattern(10, 2), {4, 99}, /*create=*/true).code(), ESTALE);
    EXPECT_EQ(r0().block_on(store_->zero_versioned(id, 0, 8192, false, {4, 99})).code(), ESTALE);
    EXPECT_EQ(r0().block_on(store_->create_from_versioned(id, src, {4, 99})).code(), ESTALE);
    EXPECT_EQ(*read(id, 0, 8192), pattern(8192, 1));  // not wiped, not overwritten
    EXPECT_EQ(version(id), (ObjectVersion{5, 1}));
  };
  refused();
  stop(true);  // the fence comes back from the header
  start();
  refused();
  ASSERT_TRUE(write_v(id, 0, pattern(10, 3), {6, 1}).is_ok());  // a newer gateway
  EXPECT_EQ(write_v(id, 0, pattern(10, 4), {5, 2}).code(), ESTALE);
  EXPECT_EQ(*read(id, 0, 10), pattern(10, 3));
  EXPECT_EQ(version(id), (ObjectVersion{6, 1}));
}

// kRemove's fence (cluster/replica_service.h): an old gateway's late undo or trim
// (generation 4) must not remove what a newer attach (generation 5) wrote.
TEST_F(LocalStoreTest, RemoveIsFencedByGeneration) {
  ObjectId id = ObjectId::data(13, 13, 0);
  ASSERT_TRUE(write_v(id, 0, pattern(8192, 1), {5, 3}, true).is_ok());
  EXPECT_EQ(r0().block_on(store_->remove_versioned(id, {4, 99})).code(), ESTALE);
  EXPECT_EQ(*read(id, 0, 8192), pattern(8192, 1));  // still there, unchanged
  EXPECT_EQ(version(id), (ObjectVersion{5, 3}));
  EXPECT_EQ(list_all().size(), 1u);
  stop(true);  // the fence comes back from the header
  start();
  EXPECT_EQ(r0().block_on(store_->remove_versioned(id, {4, 99})).code(), ESTALE);
  EXPECT_EQ(*read(id, 0, 8192), pattern(8192, 1));
  // The same generation removes it, whatever the sequence (its own earlier undo).
  Status same = r0().block_on(store_->remove_versioned(id, {5, 1}));
  EXPECT_TRUE(same.is_ok()) << same.to_string();
  EXPECT_EQ(read(id, 0, 10).status().code(), ENOENT);
  EXPECT_TRUE(list_all().empty());
  // A newer generation (a VDI delete raises it first) removes any older writer's copy.
  ASSERT_TRUE(write_v(id, 0, pattern(8192, 2), {5, 4}, true).is_ok());
  Status newer = r0().block_on(store_->remove_versioned(id, {9, 1}));
  EXPECT_TRUE(newer.is_ok()) << newer.to_string();
  EXPECT_EQ(read(id, 0, 10).status().code(), ENOENT);
  // An empty version is not fenced; an absent object is ok.
  ASSERT_TRUE(write_v(id, 0, pattern(8192, 3), {7, 1}, true).is_ok());
  EXPECT_TRUE(r0().block_on(store_->remove(id)).is_ok());
  EXPECT_TRUE(r0().block_on(store_->remove_versioned(id, {1, 1})).is_ok());
}

TEST_F(LocalStoreTest, EmptyVersionLeavesTheStoredVersion) {
  ObjectId id = ObjectId::data(13, 13, 0);
  ASSERT_TRUE(write_v(id, 0, pattern(4096, 1), {7, 3}, true).is_ok());
  ASSERT_TRUE(write(id, 0, pattern(4096, 2)).is_ok());
  ASSERT_TRUE(r0().block_on(store_->zero(id, 4096, 4096, true)).is_ok());
  EXPECT_EQ(version(id), (ObjectVersion{7, 3}));
  stop(true);
  start();
  EXPECT_EQ(version(id), (ObjectVersion{7, 3}));
  EXPECT_EQ(*read(id, 0, 4096), pattern(4096, 2));
}

TEST_F(LocalStoreTest, UnversionedHeaderIsByteIdenticalToTheOldFormat) {
  ObjectId id = ObjectId::data(14, 14, 0);
  ASSERT_TRUE(write(id, 0, pattern(4096, 1), true).is_ok());
  stop(true);
  int fd = ::open(object_file(id).c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> header(kHeaderSize);
  ASSERT_EQ(::pread(fd, header.data(), kHeaderSize, 0), static_cast<ssize_t>(kHeaderSize));
  ::close(fd);
  EXPECT_EQ(std::vector<uint8_t>(header.begin() + 64, header.end()),
            std::vector<uint8_t>(kHeaderSize - 64, 0));
  start();
  EXPECT_EQ(version(id), (ObjectVersion{}));
}

TEST_F(LocalStoreTest, OldFormatHeaderReadsAsNoVersion) {
  ObjectId id = ObjectId::data(15, 15, 0);
  ASSERT_TRUE(write_v(id, 0, pattern(4096, 1), {9, 9}, true).is_ok());
  stop(true);
  // The header exactly as format 1 wrote it before the version record existed.
  std::vector<uint8_t> header(kHeaderSize, 0);
  std::memcpy(header.data(), "KELPOBJ1", 8);
  put_le32(header.data() + 8, 1);
  id.encode(header.data() + 12);
  put_le32(header.data() + 28, kObjectSize);
  put_le32(header.data() + 60, crc32c(header.data(), 60));
  int fd = ::open(object_file(id).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, header.data(), kHeaderSize, 0), static_cast<ssize_t>(kHeaderSize));
  ::close(fd);
  start();
  EXPECT_EQ(version(id), (ObjectVersion{}));
  EXPECT_EQ(*read(id, 0, 4096), pattern(4096, 1));
  ASSERT_TRUE(write_v(id, 0, pattern(10, 2), {1, 1}).is_ok());  // an old copy takes versions
  EXPECT_EQ(version(id), (ObjectVersion{1, 1}));
}

TEST_F(LocalStoreTest, CorruptVersionRecordIsNeverListedAndInstallRepairsIt) {
  ObjectId id = ObjectId::data(16, 16, 0);
  ASSERT_TRUE(write_v(id, 0, pattern(4096, 1), {2, 2}, true).is_ok());
  stop(true);
  flip_byte(id, kVersionRecordOffset + 3);
  start();
  EXPECT_EQ(list_all(), std::vector<Row>{});
  EXPECT_EQ(read(id, 0, 10).status().code(), EIO);
  ASSERT_TRUE(install(id, {2, 3}, pattern(kObjectSize, 4)).is_ok());
  EXPECT_EQ(version(id), (ObjectVersion{2, 3}));
  EXPECT_EQ(*read(id, 0, kObjectSize), pattern(kObjectSize, 4));
}

TEST_F(LocalStoreTest, ListAllFollowsEveryOperationAndSurvivesRestart) {
  ObjectId a = ObjectId::data(20, 20, 0);
  ObjectId b = ObjectId::data(20, 20, 1);
  ObjectId c = ObjectId::data(21, 20, 1);
  ObjectId d = ObjectId::data(22, 22, 7);
  EXPECT_EQ(list_all(), std::vector<Row>{});
  ASSERT_TRUE(write(a, 0, pattern(10, 1), true).is_ok());
  ASSERT_TRUE(write_v(b, 0, pattern(10, 2), {1, 1}, true).is_ok());
  ASSERT_TRUE(r0().block_on(store_->create_from_versioned(c, b, {1, 2})).is_ok());
  EXPECT_EQ(list_all(), (std::vector<Row>{{a.to_hex(), 0, 0, kObjectSize},
                                          {b.to_hex(), 1, 1, kObjectSize},
                                          {c.to_hex(), 1, 2, kObjectSize}}));
  ASSERT_TRUE(write_v(a, 0, pattern(10, 3), {2, 5}).is_ok());
  ASSERT_TRUE(r0().block_on(store_->remove(b)).is_ok());
  ASSERT_TRUE(install(d, {3, 1}, pattern(65536, 4)).is_ok());
  const std::vector<Row> expected{{a.to_hex(), 2, 5, kObjectSize},
                                  {c.to_hex(), 1, 2, kObjectSize},
                                  {d.to_hex(), 3, 1, 65536}};
  std::vector<Row> sorted = expected;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(list_all(), sorted);
  stop(true);
  start();
  EXPECT_EQ(list_all(), sorted);
  stop(false);
  start();
  EXPECT_EQ(list_all(), sorted);
}

TEST_F(LocalStoreTest, FetchReturnsTheWholeCopyAndRefusesABadOne) {
  ObjectId id = ObjectId::data(23, 23, 0);
  ASSERT_TRUE(write_v(id, 4096, pattern(50000, 1), {4, 4}, true).is_ok());
  std::vector<uint8_t> expect(kObjectSize, 0);
  auto bytes = pattern(50000, 1);
  std::copy(bytes.begin(), bytes.end(), expect.begin() + 4096);
  auto fetched = r0().block_on(store_->fetch(id));
  ASSERT_TRUE(fetched.is_ok());
  EXPECT_EQ(fetched->version, (ObjectVersion{4, 4}));
  EXPECT_EQ(fetched->object_size, kObjectSize);
  ASSERT_EQ(fetched->data.size(), kObjectSize);
  EXPECT_TRUE(std::equal(expect.begin(), expect.end(), fetched->data.data()));
  EXPECT_EQ(r0().block_on(store_->bad_blocks(id)).value(), std::vector<uint32_t>{});

  flip_byte(id, kDataOffset + 5 * kBlockSize + 17);      // a written block
  flip_byte(id, kDataOffset + 200 * kBlockSize + 4095);  // a never-written one (crc 0)
  EXPECT_EQ(r0().block_on(store_->fetch(id)).status().code(), EIO);
  EXPECT_EQ(r0().block_on(store_->bad_blocks(id)).value(), (std::vector<uint32_t>{5, 200}));
  EXPECT_EQ(r0().block_on(store_->fetch(ObjectId::data(23, 23, 1))).status().code(), ENOENT);
  EXPECT_EQ(r0().block_on(store_->bad_blocks(ObjectId::data(23, 23, 1))).status().code(), ENOENT);
}

TEST_F(LocalStoreTest, InstallReplacesAnyCopyDurablyAndSurvivesRestart) {
  ObjectId id = ObjectId::data(24, 24, 0);
  ASSERT_TRUE(write_v(id, 0, pattern(kObjectSize, 1), {9, 9}, true).is_ok());
  flip_byte(id, kDataOffset + 3 * kBlockSize);  // a bad copy is replaced too
  // A lower generation and another size: the caller (recovery) decides.
  ASSERT_TRUE(install(id, {8, 1}, pattern(262144, 2)).is_ok());
  auto info = stat(id);
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ(info->version, (ObjectVersion{8, 1}));
  EXPECT_EQ(info->object_size, 262144u);
  EXPECT_EQ(*read(id, 0, 262144), pattern(262144, 2));
  EXPECT_EQ(read(id, 262144, 1).status().code(), EINVAL);
  stop(false);  // no flush: install was durable by itself
  start();
  EXPECT_EQ(version(id), (ObjectVersion{8, 1}));
  EXPECT_EQ(*read(id, 0, 262144), pattern(262144, 2));
  EXPECT_EQ(r0().block_on(store_->bad_blocks(id)).value(), std::vector<uint32_t>{});
  EXPECT_EQ(install(id, {8, 2}, pattern(1000, 3)).code(), EINVAL);
  EXPECT_EQ(r0().block_on(store_->install(id, {8, 2}, 8192, pattern(4096, 3))).code(), EINVAL);
  EXPECT_EQ(version(id), (ObjectVersion{8, 1}));
}

// Rule 4's resync install: never over a copy a later write made newer.
TEST_F(LocalStoreTest, InstallUnlessNewerRefusesANewerCopyAndReplacesTheRest) {
  ObjectId id = ObjectId::data(25, 25, 0);
  auto resync = [&](ObjectVersion v, const std::vector<uint8_t>& data) {
    return r0().block_on(store_->install_unless_newer(id, v, static_cast<uint32_t>(data.size()), data));
  };
  ASSERT_TRUE(write_v(id, 0, pattern(kObjectSize, 1), {4, 7}, true).is_ok());
  // Newer copy held: EAGAIN, nothing changes.
  EXPECT_EQ(resync({4, 6}, pattern(kObjectSize, 2)).code(), EAGAIN);
  EXPECT_EQ(version(id), (ObjectVersion{4, 7}));
  EXPECT_EQ(*read(id, 0, kObjectSize), pattern(kObjectSize, 1));
  // The same version with other content (a torn copy): replaced.
  ASSERT_TRUE(resync({4, 7}, pattern(kObjectSize, 3)).is_ok());
  EXPECT_EQ(*read(id, 0, kObjectSize), pattern(kObjectSize, 3));
  // An older copy: replaced; a missing one: made.
  ASSERT_TRUE(resync({4, 9}, pattern(kObjectSize, 4)).is_ok());
  EXPECT_EQ(version(id), (ObjectVersion{4, 9}));
  ObjectId missing = ObjectId::data(25, 25, 1);
  ASSERT_TRUE(r0().block_on(store_->install_unless_newer(missing, {4, 9}, kObjectSize,
                                                         pattern(kObjectSize, 5))).is_ok());
  EXPECT_EQ(*read(missing, 0, kObjectSize), pattern(kObjectSize, 5));
}

TEST_F(LocalStoreTest, UncleanObjectsNameTheLoggedObjectsOnlyAfterAnUncleanStop) {
  ObjectId logged = ObjectId::data(26, 26, 0);
  ObjectId synced = ObjectId::data(26, 26, 1);
  ASSERT_TRUE(write(synced, 0, pattern(4096, 1), true).is_ok());
  ASSERT_TRUE(r0().block_on(store_->flush()).is_ok());
  ASSERT_TRUE(write(logged, 0, pattern(4096, 2), true).is_ok());
  EXPECT_TRUE(store_->unclean_objects().empty());
  stop(false);
  start();
  EXPECT_EQ(store_->unclean_objects(), std::vector<ObjectId>{logged});
  // A clean stop does not settle them: only the cluster's resync (or, on one node,
  // the replay) does, through settle_unclean().
  stop(true);
  start();
  EXPECT_EQ(store_->unclean_objects(), std::vector<ObjectId>{logged});
  ASSERT_TRUE(store_->settle_unclean({}).is_ok());
  stop(true);
  start();
  EXPECT_TRUE(store_->unclean_objects().empty());
}

// Issue 13 case 3: the dirty logs are gone after the replay, so the unclean ids must be
// recorded durably before that, or a second crash before their resync forgets them.
TEST_F(LocalStoreTest, UncleanObjectsSurviveASecondCrashUntilSettled) {
  ObjectId first = ObjectId::data(27, 27, 0);
  ObjectId second = ObjectId::data(27, 27, 1);
  ASSERT_TRUE(write(first, 0, pattern(4096, 1), true).is_ok());
  stop(false);
  start();
  ASSERT_EQ(store_->unclean_objects(), std::vector<ObjectId>{first});
  EXPECT_TRUE(std::filesystem::exists(dir_ / LocalStore::kUncleanFile));
  // Crash again before the resync settled it, with a new unsynced write meanwhile.
  ASSERT_TRUE(write(second, 0, pattern(4096, 2), true).is_ok());
  stop(false);
  start();
  EXPECT_EQ(store_->unclean_objects(), (std::vector<ObjectId>{first, second}));
  // Part settled: only the rest is remembered.
  ASSERT_TRUE(store_->settle_unclean({second}).is_ok());
  stop(false);
  start();
  EXPECT_EQ(store_->unclean_objects(), std::vector<ObjectId>{second});
  ASSERT_TRUE(store_->settle_unclean({}).is_ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ / LocalStore::kUncleanFile));
  stop(false);
  start();
  EXPECT_TRUE(store_->unclean_objects().empty());
}

TEST_F(LocalStoreTest, DamagedUncleanRecordRefusesToOpen) {
  stop(true);
  {
    std::ofstream out(dir_ / LocalStore::kUncleanFile);
    out << "not-an-object-id\n";
  }
  dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
  io_ = std::make_unique<UringIoBackend>(dir_fd_);
  std::vector<Reactor*> raw;
  reactors_.push_back(std::make_unique<Reactor>(0, 64));
  raw.push_back(reactors_.back().get());
  Reactor* r = raw.back();
  threads_.emplace_back([r] { r->run(); });
  pool_ = std::make_unique<ReactorPool>(raw);
  store_ = std::make_unique<LocalStore>(raw, *io_, dir_.string());
  Status opened = store_->open();
  EXPECT_EQ(opened.code(), EIO);
  EXPECT_NE(opened.message().find("unclean.ids"), std::string::npos) << opened.to_string();
  stop(false);  // never opened: nothing to close
  std::filesystem::remove(dir_ / LocalStore::kUncleanFile);
}

TEST_F(LocalStoreTest, InstallNeverInterleavesWithWrites) {
  ObjectId id = ObjectId::data(25, 25, 0);
  ASSERT_TRUE(write(id, 0, pattern(1, 0), true).is_ok());
  std::vector<std::vector<uint8_t>> chunks;
  for (int i = 0; i < 16; ++i) chunks.push_back(pattern(65536, static_cast<uint8_t>(i)));
  auto whole = pattern(kObjectSize, 77);
  Status st = r0().block_on([](LocalStore* store, ObjectId oid, decltype(chunks)* c,
                               std::vector<uint8_t>* w) -> Task<Status> {
    std::vector<Task<Status>> tasks;
    for (size_t i = 0; i < c->size(); ++i) tasks.push_back(store->write(oid, i * 65536, (*c)[i], {}));
    tasks.push_back(store->install(oid, {1, 1}, kObjectSize, *w));
    co_return co_await when_all(std::move(tasks));
  }(store_.get(), id, &chunks, &whole));
  ASSERT_TRUE(st.is_ok());
  // Every write landed wholly before or wholly after the install, and every block's
  // crc matches (a whole-object read has no EIO).
  auto data = read(id, 0, kObjectSize);
  ASSERT_TRUE(data.is_ok());
  for (size_t i = 0; i < chunks.size(); ++i) {
    auto begin = data->begin() + i * 65536;
    bool from_install = std::equal(begin, begin + 65536, whole.begin() + i * 65536);
    bool from_write = std::equal(begin, begin + 65536, chunks[i].begin());
    EXPECT_TRUE(from_install || from_write) << "chunk " << i;
  }
  EXPECT_TRUE(std::equal(data->begin() + chunks.size() * 65536, data->end(),
                         whole.begin() + chunks.size() * 65536));
  EXPECT_EQ(version(id), (ObjectVersion{1, 1}));
}

TEST_F(LocalStoreTest, CreateFromAndZeroCarryVersions) {
  ObjectId src = ObjectId::data(26, 26, 0);
  ObjectId dst = ObjectId::data(27, 26, 0);
  ASSERT_TRUE(write_v(src, 0, pattern(16384, 1), {3, 1}, true).is_ok());
  ASSERT_TRUE(write_v(dst, 0, pattern(10, 2), {3, 7}, true).is_ok());
  ASSERT_TRUE(r0().block_on(store_->create_from_versioned(dst, src, {3, 2})).is_ok());
  EXPECT_EQ(version(dst), (ObjectVersion{3, 2}));  // replaced: exactly the given version
  EXPECT_EQ(version(src), (ObjectVersion{3, 1}));
  EXPECT_EQ(*read(dst, 0, 16384), pattern(16384, 1));
  ASSERT_TRUE(r0().block_on(store_->zero_versioned(dst, 1000, 8000, true, {3, 3})).is_ok());
  EXPECT_EQ(version(dst), (ObjectVersion{3, 3}));
  auto expect = pattern(16384, 1);
  std::fill(expect.begin() + 1000, expect.begin() + 9000, 0);
  EXPECT_EQ(*read(dst, 0, 16384), expect);
  ASSERT_TRUE(r0().block_on(store_->create_from(dst, src)).is_ok());  // unversioned replace
  EXPECT_EQ(version(dst), (ObjectVersion{}));
  stop(true);
  start();
  EXPECT_EQ(version(src), (ObjectVersion{3, 1}));
  EXPECT_EQ(version(dst), (ObjectVersion{}));
  EXPECT_EQ(*read(dst, 0, 16384), pattern(16384, 1));
}

}  // namespace
}  // namespace kelpie
