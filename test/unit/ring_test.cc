// The placement ring as a pure function: balance, movement on join and leave,
// weights, zones, gateways. Node UUIDs come from fixed seeds, so every figure this
// prints (docs/placement.md quotes them) replays exactly.
#include "cluster/ring.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace kelpie {
namespace {

constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ULL;
// Each seed is a different cluster of random-looking node UUIDs; the bounds must
// hold for all of them, not for one lucky draw.
constexpr uint64_t kClusterSeeds[] = {1, 2, 3, 4, 5};
constexpr uint32_t kFamilies = 4;
constexpr uint32_t kObjectsPerFamily = 50'000;

// A v4-shaped UUID: node n of the cluster drawn with `seed`.
Uuid test_uuid(uint64_t seed, uint64_t n) {
  uint64_t hi = mix64(seed * 1'000'003 + (2 * n + 1) * kGamma);
  uint64_t lo = mix64(seed * 1'000'003 + (2 * n + 2) * kGamma);
  Uuid id{};
  for (int i = 0; i < 8; ++i) {
    id[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    id[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
  id[6] = (id[6] & 0x0f) | 0x40;
  id[8] = (id[8] & 0x3f) | 0x80;
  return id;
}

std::vector<RingNode> storage_nodes(uint64_t seed, size_t count, uint32_t vnodes = 128) {
  std::vector<RingNode> nodes;
  for (size_t n = 0; n < count; ++n) nodes.push_back({test_uuid(seed, n), "", vnodes, false});
  return nodes;
}

Ring must_build(std::vector<RingNode> nodes) {
  auto ring = Ring::build(std::move(nodes));
  if (!ring) {
    ADD_FAILURE() << ring.status().to_string();
    return Ring();
  }
  return std::move(*ring);
}

// 200k data objects of a few families, owned by the family's root VDI.
const std::vector<ObjectId>& population() {
  static const std::vector<ObjectId> objects = [] {
    std::vector<ObjectId> all;
    for (VdiId family = 1; family <= kFamilies; ++family) {
      for (uint32_t index = 0; index < kObjectsPerFamily; ++index) {
        all.push_back(ObjectId::data(family, family, index));
      }
    }
    return all;
  }();
  return objects;
}

// Copies held per node (primaries and replicas), by node UUID.
std::vector<size_t> loads(const Ring& ring, size_t copies) {
  std::vector<size_t> held(ring.nodes().size());
  for (const ObjectId& id : population()) {
    for (NodeIndex node : ring.replicas(id, copies)) ++held[node];
  }
  return held;
}

// Every object's replicas by UUID, `copies` per object, primary first.
std::vector<Uuid> placement(const Ring& ring, size_t copies) {
  std::vector<Uuid> all;
  all.reserve(population().size() * copies);
  for (const ObjectId& id : population()) {
    ReplicaSet set = ring.replicas(id, copies);
    KELPIE_ASSERT(set.size() == copies);
    for (NodeIndex node : set) all.push_back(ring.nodes()[node].id);
  }
  return all;
}

struct Movement {
  size_t added = 0;              // (object, node) pairs the new placement adds
  size_t added_elsewhere = 0;    // ... on a node other than `changed`
  size_t removed = 0;            // pairs it drops
  size_t removed_elsewhere = 0;  // ... from a node other than `changed`
};

Movement movement(const std::vector<Uuid>& before, const std::vector<Uuid>& after, size_t copies,
                  const Uuid& changed) {
  auto in_set = [copies](const std::vector<Uuid>& all, size_t object, const Uuid& id) {
    auto first = all.begin() + object * copies;
    return std::find(first, first + copies, id) != first + copies;
  };
  Movement moved;
  for (size_t object = 0; object < before.size() / copies; ++object) {
    for (size_t i = 0; i < copies; ++i) {
      const Uuid& added = after[object * copies + i];
      if (!in_set(before, object, added)) {
        ++moved.added;
        if (added != changed) ++moved.added_elsewhere;
      }
      const Uuid& removed = before[object * copies + i];
      if (!in_set(after, object, removed)) {
        ++moved.removed;
        if (removed != changed) ++moved.removed_elsewhere;
      }
    }
  }
  return moved;
}

double busiest_over_ideal(const Ring& ring, size_t copies) {
  std::vector<size_t> held = loads(ring, copies);
  double ideal = double(population().size()) * copies / held.size();
  return *std::max_element(held.begin(), held.end()) / ideal;
}

TEST(Ring, VnodePointsAreTheDocumentedSplitMix64Stream) {
  Uuid id = test_uuid(7, 0);
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 8; ++i) {
    hi = hi << 8 | id[i];
    lo = lo << 8 | id[8 + i];
  }
  uint64_t seed = mix64(mix64(hi) ^ lo);
  for (uint32_t k : {0u, 1u, 511u}) {
    EXPECT_EQ(vnode_point(id, k), mix64(seed + (uint64_t{k} + 1) * kGamma));
  }
  // A wire contract: this value must never change between versions.
  Uuid fixed{};
  for (int i = 0; i < 16; ++i) fixed[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(vnode_point(fixed, 0), 0x45c3dc6aca147514ULL);
}

struct Spread {
  double mean = 0;
  double worst = 0;
  void add(double excess, size_t count) {
    mean += excess / count;
    worst = std::max(worst, excess);
  }
};

TEST(Ring, EqualNodesAreBalanced) {
  constexpr size_t kClusters = 20;
  std::printf("balance, 8 equal nodes, %zu objects, busiest node over the ideal, %zu clusters\n",
              population().size(), kClusters);
  Spread one, three, one_point;
  for (uint64_t seed = 1; seed <= kClusters; ++seed) {
    Ring ring = must_build(storage_nodes(seed, 8));
    double busiest = busiest_over_ideal(ring, 3);
    EXPECT_LE(busiest, 1.10) << "cluster seed " << seed;
    three.add(busiest - 1, kClusters);
    one.add(busiest_over_ideal(ring, 1) - 1, kClusters);
    // 128 points per node: what one point per vnode would give at 128 vnodes.
    Ring sparse = must_build(storage_nodes(seed, 8, 128 / kPointsPerVnode));
    one_point.add(busiest_over_ideal(sparse, 3) - 1, kClusters);
  }
  std::printf(
      "  128 vnodes (%u points each): copies 3 mean %+.1f%% worst %+.1f%%; "
      "copies 1 mean %+.1f%% worst %+.1f%%\n",
      kPointsPerVnode, three.mean * 100, three.worst * 100, one.mean * 100, one.worst * 100);
  std::printf("  one point per vnode, for comparison: copies 3 mean %+.1f%% worst %+.1f%%\n",
              one_point.mean * 100, one_point.worst * 100);
}

TEST(Ring, JoinAndLeaveMoveAboutOneNth) {
  std::printf("movement, copies 3, moved replica assignments over the ideal 1/N share\n");
  for (uint64_t seed : kClusterSeeds) {
    std::vector<RingNode> nine = storage_nodes(seed, 9);
    std::vector<RingNode> eight(nine.begin(), nine.begin() + 8);
    std::vector<RingNode> seven(nine.begin(), nine.begin() + 7);
    auto with_eight = placement(must_build(eight), 3);
    double total = double(population().size()) * 3;

    Movement join = movement(with_eight, placement(must_build(nine), 3), 3, nine[8].id);
    double join_ratio = join.added / (total / 9);
    Movement leave = movement(with_eight, placement(must_build(seven), 3), 3, eight[7].id);
    double leave_ratio = leave.removed / (total / 8);
    std::printf("  cluster %llu: join 8->9 %.3fx, leave 8->7 %.3fx\n",
                static_cast<unsigned long long>(seed), join_ratio, leave_ratio);
    EXPECT_LE(join_ratio, 1.3) << "cluster seed " << seed;
    EXPECT_LE(leave_ratio, 1.3) << "cluster seed " << seed;
    // Nothing moves between the nodes that stay: a joiner only takes copies, a
    // leaver's copies only go to others.
    EXPECT_EQ(join.added_elsewhere, 0u);
    EXPECT_EQ(join.removed, join.added);
    EXPECT_EQ(leave.removed_elsewhere, 0u);
    EXPECT_EQ(leave.added, leave.removed);
  }
}

// What a node of weight weights[0] holds over the mean of the others when each
// object takes `copies` distinct nodes, each drawn in proportion to weight from
// those not yet drawn: the model of a ring walk that skips a node already chosen.
double modelled_ratio(const std::vector<double>& weights, size_t copies) {
  std::vector<double> held(weights.size());
  // Depth-first over every ordered draw of `copies` nodes, with its probability.
  auto draw = [&](auto& self, std::vector<bool>& taken, size_t left, double p) -> void {
    if (left == 0) return;
    double free_weight = 0;
    for (size_t n = 0; n < weights.size(); ++n) free_weight += taken[n] ? 0 : weights[n];
    for (size_t n = 0; n < weights.size(); ++n) {
      if (taken[n]) continue;
      double q = p * weights[n] / free_weight;
      held[n] += q;
      taken[n] = true;
      self(self, taken, left - 1, q);
      taken[n] = false;
    }
  };
  std::vector<bool> taken(weights.size());
  draw(draw, taken, copies, 1.0);
  double others = 0;
  for (size_t n = 1; n < held.size(); ++n) others += held[n];
  return held[0] / (others / (held.size() - 1));
}

TEST(Ring, DoubleWeightHoldsTwiceTheData) {
  std::vector<double> weights(8, 1.0);
  weights[0] = 2.0;
  double model[4] = {0, modelled_ratio(weights, 1), modelled_ratio(weights, 2),
                     modelled_ratio(weights, 3)};
  std::printf(
      "weight, 7 nodes x 128 vnodes + 1 node x 256: its copies over the others' mean\n"
      "  modelled (weighted draws without replacement): copies 1 %.3fx, copies 2 %.3fx, "
      "copies 3 %.3fx\n",
      model[1], model[2], model[3]);
  for (uint64_t seed : kClusterSeeds) {
    std::vector<RingNode> nodes = storage_nodes(seed, 8);
    nodes[0].vnodes = 256;
    Ring ring = must_build(nodes);
    NodeIndex heavy = *ring.find(nodes[0].id);
    double ratio[4] = {};
    for (size_t copies : {1, 2, 3}) {
      std::vector<size_t> held = loads(ring, copies);
      double others = 0;
      for (size_t n = 0; n < held.size(); ++n) others += n == heavy ? 0 : held[n];
      ratio[copies] = held[heavy] / (others / (held.size() - 1));
    }
    std::printf("  cluster %llu: copies 1 %.3fx, copies 2 %.3fx, copies 3 %.3fx\n",
                static_cast<unsigned long long>(seed), ratio[1], ratio[2], ratio[3]);
    // Primaries follow the weights exactly; each further copy must avoid the nodes
    // already chosen, which a heavy node is more often among.
    EXPECT_NEAR(ratio[1], 2.0, 0.30) << "cluster seed " << seed;
    EXPECT_NEAR(ratio[2], model[2], 0.15 * model[2]) << "cluster seed " << seed;
    EXPECT_NEAR(ratio[3], model[3], 0.15 * model[3]) << "cluster seed " << seed;
  }
}

TEST(Ring, RaisingAWeightOnlyMovesDataToThatNode) {
  std::vector<RingNode> nodes = storage_nodes(1, 8);
  auto before = placement(must_build(nodes), 3);
  nodes[3].vnodes = 192;
  Movement moved = movement(before, placement(must_build(nodes), 3), 3, nodes[3].id);
  EXPECT_GT(moved.added, 0u);
  EXPECT_EQ(moved.added_elsewhere, 0u);
}

TEST(Ring, NoTwoCopiesInOneZone) {
  std::vector<RingNode> nodes = storage_nodes(1, 9);
  const char* zones[] = {"rack-a", "rack-b", "rack-c"};
  for (size_t n = 0; n < nodes.size(); ++n) nodes[n].zone = zones[n % 3];
  Ring ring = must_build(nodes);
  EXPECT_EQ(ring.zone_count(), 3u);
  for (const ObjectId& id : population()) {
    ReplicaSet set = ring.replicas(id, 3);
    ASSERT_EQ(set.size(), 3u);
    std::vector<std::string> seen;
    for (NodeIndex node : set) seen.push_back(ring.nodes()[node].zone);
    std::sort(seen.begin(), seen.end());
    ASSERT_EQ(std::unique(seen.begin(), seen.end()), seen.end()) << id.to_hex();
  }
}

TEST(Ring, ZoneDefaultsToTheNode) {
  Ring ring = must_build(storage_nodes(1, 8));
  EXPECT_EQ(ring.zone_count(), 8u);
  for (const ObjectId& id : population()) {
    ReplicaSet set = ring.replicas(id, 3);
    ASSERT_EQ(set.size(), 3u);
    ASSERT_TRUE(set[0] != set[1] && set[1] != set[2] && set[0] != set[2]) << id.to_hex();
  }
}

TEST(Ring, FewerZonesThanCopies) {
  std::vector<RingNode> nodes = storage_nodes(2, 4);
  for (size_t n = 0; n < nodes.size(); ++n) nodes[n].zone = n < 2 ? "left" : "right";
  Ring two_zones = must_build(nodes);
  Ring one_node = must_build(storage_nodes(2, 1));
  Ring empty;
  for (uint32_t index = 0; index < 1000; ++index) {
    ObjectId id = ObjectId::data(1, 1, index);
    ReplicaSet set = two_zones.replicas(id, 3);
    ASSERT_EQ(set.size(), 2u);
    EXPECT_NE(two_zones.nodes()[set[0]].zone, two_zones.nodes()[set[1]].zone);
    EXPECT_EQ(one_node.replicas(id, 3).size(), 1u);
    EXPECT_EQ(one_node.replicas(id, 1).size(), 1u);
    EXPECT_TRUE(empty.replicas(id, 3).empty());
  }
}

TEST(Ring, GatewaysAndDrainedNodesOwnNothing) {
  std::vector<RingNode> storage = storage_nodes(3, 8);
  std::vector<RingNode> mixed = storage;
  mixed.push_back({test_uuid(3, 100), "", 0, true});
  mixed.push_back({test_uuid(3, 101), "rack-a", 0, true});
  mixed.push_back({test_uuid(3, 102), "", 0, false});  // storage, drained to 0 vnodes
  Ring ring = must_build(mixed);
  EXPECT_EQ(ring.nodes().size(), 11u);
  EXPECT_EQ(ring.zone_count(), 8u);
  EXPECT_EQ(ring.point_count(), 8u * 128 * kPointsPerVnode);
  std::vector<size_t> held = loads(ring, 3);
  for (size_t n = 0; n < mixed.size(); ++n) {
    if (mixed[n].vnodes == 0) {
      EXPECT_EQ(held[*ring.find(mixed[n].id)], 0u);
    }
  }
  // Nodes that own nothing change no placement.
  EXPECT_EQ(placement(ring, 3), placement(must_build(storage), 3));
  EXPECT_TRUE(must_build({mixed[8], mixed[9]}).replicas(ObjectId::data(1, 1, 0), 3).empty());
}

TEST(Ring, InputOrderDoesNotMatter) {
  std::vector<RingNode> nodes = storage_nodes(4, 9);
  for (size_t n = 0; n < nodes.size(); ++n) nodes[n].vnodes = 64 + 16 * n;
  nodes[0].zone = nodes[1].zone = "rack-a";
  Ring sorted = must_build(nodes);
  std::mt19937 shuffle(4);
  std::shuffle(nodes.begin(), nodes.end(), shuffle);
  Ring shuffled = must_build(nodes);
  ASSERT_EQ(sorted.nodes().size(), shuffled.nodes().size());
  for (size_t n = 0; n < sorted.nodes().size(); ++n) {
    EXPECT_EQ(sorted.nodes()[n].id, shuffled.nodes()[n].id);
  }
  for (const ObjectId& id : population()) {
    ReplicaSet a = sorted.replicas(id, 3);
    ReplicaSet b = shuffled.replicas(id, 3);
    ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << id.to_hex();
  }
}

TEST(Ring, SnapshotsAndClonesOfAFamilyShareReplicas) {
  Ring ring = must_build(storage_nodes(5, 8));
  size_t differs_by_index = 0;
  for (uint32_t index = 0; index < 10'000; ++index) {
    auto root = ring.replica_ids(ObjectId::data(1, 1, index), 3);
    EXPECT_EQ(ring.replica_ids(ObjectId::data(7, 1, index), 3), root);   // a snapshot
    EXPECT_EQ(ring.replica_ids(ObjectId::data(12, 1, index), 3), root);  // a clone
    if (ring.replica_ids(ObjectId::data(1, 1, index + 1), 3) != root) ++differs_by_index;
  }
  EXPECT_GT(differs_by_index, 9'000u);
}

TEST(Ring, RejectsBadNodeLists) {
  std::vector<RingNode> twice = storage_nodes(6, 3);
  twice.push_back(twice[1]);
  EXPECT_EQ(Ring::build(twice).status().code(), EINVAL);
  EXPECT_EQ(Ring::build({{test_uuid(6, 9), "", 128, true}}).status().code(), EINVAL);
  EXPECT_EQ(Ring::build({{test_uuid(6, 9), "", kMaxVnodesPerNode + 1, false}}).status().code(),
            EINVAL);
  EXPECT_TRUE(Ring::build({{test_uuid(6, 9), "", kMaxVnodesPerNode, false}}).is_ok());
}

TEST(Ring, AutoVnodesFollowCapacity) {
  constexpr uint64_t kTiB = uint64_t{1} << 40;
  EXPECT_EQ(auto_vnodes(kTiB, kTiB), 128u);
  EXPECT_EQ(auto_vnodes(2 * kTiB, kTiB), 256u);
  EXPECT_EQ(auto_vnodes(kTiB / 2, kTiB), 64u);
  EXPECT_EQ(auto_vnodes(kTiB + kTiB / 3, kTiB), 171u);  // 170.67 rounds up
  EXPECT_EQ(auto_vnodes(1, kTiB), 1u);
  EXPECT_EQ(auto_vnodes(0, kTiB), 1u);
  EXPECT_EQ(auto_vnodes(kTiB, 0), kDefaultVnodes);
  EXPECT_EQ(auto_vnodes(UINT64_MAX, 1), kMaxVnodesPerNode);
}

TEST(Ring, BuildAndLookupCost) {
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  Ring ring = must_build(storage_nodes(1, 1000));
  auto built = Clock::now();
  size_t sum = 0;
  for (const ObjectId& id : population()) sum += ring.replicas(id, 3)[0];
  auto looked_up = Clock::now();
  auto us = [](auto d) {
    return static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  std::printf(
      "cost: 1000 nodes x 128 vnodes (%zu points) built in %.1f ms; %.0f ns per lookup "
      "(copies 3)\n",
      ring.point_count(), us(built - start) / 1000,
      us(looked_up - built) * 1000 / population().size());
  EXPECT_GT(sum, 0u);
}

}  // namespace
}  // namespace kelpie
