// The resync choice of rule 4 (cluster/replica_resync.h) as a pure function: which
// copy every replica of an object is made equal to, and what is wrong with the others.
#include "cluster/replica_resync.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/crc32c.h"

namespace kelpie {
namespace {

constexpr uint32_t kSize = 8192;

ReplicaCopy copy_of(NodeIndex node, ObjectVersion version, uint8_t fill) {
  ReplicaCopy c;
  c.node = node;
  c.version = version;
  c.object_size = kSize;
  c.data = Buffer::get(kSize);
  std::memset(c.data.data(), fill, kSize);
  c.crc = crc32c(c.data.data(), kSize);
  return c;
}

ReplicaCopy failed(NodeIndex node, int code) {
  ReplicaCopy c;
  c.node = node;
  c.status = Status::error(code, "test");
  return c;
}

// ReplicaCopy holds a move-only Buffer: no initializer lists.
template <typename... Copies>
std::vector<ReplicaCopy> copies_of(Copies&&... list) {
  std::vector<ReplicaCopy> copies;
  (copies.push_back(std::move(list)), ...);
  return copies;
}

TEST(ReplicaResyncChoice, NewestVersionWinsOverAnOlderMajority) {
  auto copies = copies_of(copy_of(0, {1, 5}, 'a'), copy_of(1, {1, 5}, 'a'), copy_of(2, {1, 6}, 'b'));
  CopyChoice choice = choose_copy(copies, {});
  ASSERT_TRUE(choice.chosen);
  EXPECT_EQ(*choice.chosen, 2u);
  EXPECT_EQ(choice.problems[0], CopyProblem::kStale);
  EXPECT_EQ(choice.problems[1], CopyProblem::kStale);
  EXPECT_EQ(choice.problems[2], CopyProblem::kNone);
}

TEST(ReplicaResyncChoice, MostCommonContentOfTheNewestVersionNotTheFirst) {
  // The primary's copy differs from the two others at the same version.
  auto copies = copies_of(copy_of(0, {2, 9}, 'x'), copy_of(1, {2, 9}, 'y'), copy_of(2, {2, 9}, 'y'));
  CopyChoice choice = choose_copy(copies, {});
  ASSERT_TRUE(choice.chosen);
  EXPECT_EQ(*choice.chosen, 1u);
  EXPECT_EQ(choice.problems[0], CopyProblem::kDiffers);
  EXPECT_EQ(choice.problems[1], CopyProblem::kNone);
  EXPECT_EQ(choice.problems[2], CopyProblem::kNone);
}

TEST(ReplicaResyncChoice, ATieGoesToACopyOnANodeThatIsNotASuspect) {
  // Two copies, same version, different content; node 0 (first in order) failed the write.
  auto copies = copies_of(copy_of(0, {3, 1}, 'p'), copy_of(1, {3, 1}, 'q'));
  NodeIndex suspects[] = {0};
  CopyChoice choice = choose_copy(copies, suspects);
  ASSERT_TRUE(choice.chosen);
  EXPECT_EQ(*choice.chosen, 1u);
  EXPECT_EQ(choice.problems[0], CopyProblem::kDiffers);
  // Without suspects the tie keeps replica-set order: the primary.
  CopyChoice plain = choose_copy(copies, {});
  ASSERT_TRUE(plain.chosen);
  EXPECT_EQ(*plain.chosen, 0u);
  EXPECT_EQ(plain.problems[1], CopyProblem::kDiffers);
}

TEST(ReplicaResyncChoice, AMajorityBeatsTrustWhenCountsDiffer) {
  // Two suspects agree, one trusted node differs: the content held by more copies wins.
  auto copies = copies_of(copy_of(0, {4, 2}, 'm'), copy_of(1, {4, 2}, 'm'), copy_of(2, {4, 2}, 'n'));
  NodeIndex suspects[] = {0, 1};
  CopyChoice choice = choose_copy(copies, suspects);
  ASSERT_TRUE(choice.chosen);
  EXPECT_EQ(*choice.chosen, 0u);
  EXPECT_EQ(choice.problems[2], CopyProblem::kDiffers);
}

TEST(ReplicaResyncChoice, MissingBadAndUnreachableCopiesAreNamed) {
  auto copies = copies_of(failed(0, ENOENT), copy_of(1, {1, 1}, 'z'), failed(2, EIO),
                           failed(3, ETIMEDOUT));
  CopyChoice choice = choose_copy(copies, {});
  ASSERT_TRUE(choice.chosen);
  EXPECT_EQ(*choice.chosen, 1u);
  EXPECT_EQ(choice.problems[0], CopyProblem::kMissing);
  EXPECT_EQ(choice.problems[1], CopyProblem::kNone);
  EXPECT_EQ(choice.problems[2], CopyProblem::kBadChecksum);
  EXPECT_EQ(choice.problems[3], CopyProblem::kUnreachable);
  EXPECT_EQ(describe_problem(choice.problems[0], copies[0]), "missing copy");
  EXPECT_EQ(describe_problem(choice.problems[2], copies[2]), "bad checksum");
  EXPECT_EQ(describe_problem(choice.problems[3], copies[3]), "unreachable (test)");
}

TEST(ReplicaResyncChoice, ContentIsComparedByBytesAndSize) {
  // Same version, same fill, but one copy is a different object size: it differs.
  auto copies = copies_of(copy_of(0, {5, 5}, 'k'), copy_of(1, {5, 5}, 'k'), copy_of(2, {5, 5}, 'k'));
  copies[2].object_size = kSize * 2;
  CopyChoice choice = choose_copy(copies, {});
  ASSERT_TRUE(choice.chosen);
  EXPECT_EQ(*choice.chosen, 0u);
  EXPECT_EQ(choice.problems[2], CopyProblem::kDiffers);
}

TEST(ReplicaResyncChoice, NoReadableCopy) {
  auto copies = copies_of(failed(0, EIO), failed(1, ENOENT));
  CopyChoice choice = choose_copy(copies, {});
  EXPECT_FALSE(choice.chosen);
  EXPECT_EQ(choice.problems[0], CopyProblem::kBadChecksum);
  EXPECT_EQ(choice.problems[1], CopyProblem::kMissing);
}

}  // namespace
}  // namespace kelpie
