// The placement ring: which storage nodes hold the copies of an object
// (DESIGN.md, "Placement: consistent hashing with weighted virtual nodes").
//
// Contract:
// - A Ring is a pure function of its node list. The same nodes, given in any order,
//   give the same placement on every node, in the CLI and in every version. Ring::build
//   sorts the nodes by UUID; every node index below is an index into that sorted list
//   (nodes()).
// - Each storage node owns `vnodes` virtual nodes (its weight); a vnode is
//   kPointsPerVnode points on a 64-bit ring. Point k of the node with UUID U is
//       seed(U)     = mix64(mix64(hi(U)) ^ lo(U))
//       point(U, k) = mix64(seed(U) + (k + 1) * 0x9e3779b97f4a7c15)
//   that is, output k of SplitMix64 seeded with seed(U); hi and lo are the UUID's
//   bytes 0-7 and 8-15 read big-endian, and mix64 is SplitMix64's finaliser
//   (engine/object_id.h). Vnode i owns points k = kPointsPerVnode*i ...
//   kPointsPerVnode*i + kPointsPerVnode-1, so raising a node's vnodes only adds points.
//   Never std::hash. These values are a wire contract: changing them moves data.
// - An object's ring position is ObjectId::placement_hash(): (family, type, index),
//   never the owning VDI, so object i of every snapshot and clone of a family has
//   the same replicas.
// - Its replicas are the first `copies` distinct zones met clockwise from the
//   position (the first point at or after it, wrapping at 2^64): from each zone, the
//   node of the first point met. Primary first. When fewer zones exist than copies,
//   the replica set has zone_count() members; it never holds two nodes of one zone.
// - A zone is a node's zone string; an empty zone means the node is its own zone.
//   Gateways own no points and count as no zone: adding or removing one changes no
//   placement. A storage node with 0 vnodes (drained) also owns nothing.
// - Weights: primaries follow vnodes exactly. Each further copy avoids the nodes
//   already chosen, so in a small cluster a node much heavier than the others holds
//   less than its weight (8 nodes, one of double weight, copies 3: 1.7x, not 2x).
// - Cost: build is O(P log P) for P points; a lookup is a binary search, O(log P),
//   then a clockwise walk that stops at the copies-th distinct zone (a few points
//   when zones are of similar weight; never more than P).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/uuid.h"
#include "engine/object_id.h"

namespace kelpie {

// An index into Ring::nodes().
using NodeIndex = uint32_t;

struct RingNode {
  Uuid id{};
  std::string zone;     // failure domain; empty: the node is its own zone
  uint32_t vnodes = 0;  // weight; must be 0 for a gateway
  bool gateway = false;
};

// Ring points per vnode. With one point per vnode, the busiest of 8 equal nodes of
// 128 vnodes holds about 7% more than the ideal, and up to 15% (copies 3, over 100
// random clusters); eight points bring that to about 3% and 5% (docs/placement.md).
constexpr uint32_t kPointsPerVnode = 8;
// The weight of a node of average capacity.
constexpr uint32_t kDefaultVnodes = 128;
constexpr uint32_t kMaxVnodesPerNode = 1u << 16;
constexpr size_t kMaxRingNodes = 1u << 16;
// 16 bytes each: a ring of at most 64 MiB (1,000 average nodes need 512k points).
constexpr size_t kMaxRingPoints = 1u << 22;
constexpr size_t kMaxCopies = 8;

// Point k of node `id` (see the contract above).
uint64_t vnode_point(const Uuid& id, uint32_t k);

// The weight for a node of capacity_bytes: kDefaultVnodes for a node of average
// capacity, proportional to capacity, rounded, clamped to [1, kMaxVnodesPerNode].
// kDefaultVnodes when average_capacity_bytes is 0 (nothing to compare with).
uint32_t auto_vnodes(uint64_t capacity_bytes, uint64_t average_capacity_bytes);

// Up to kMaxCopies node indices, primary first. A value: no allocation per lookup.
class ReplicaSet {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  NodeIndex operator[](size_t i) const {
    KELPIE_ASSERT(i < size_);
    return nodes_[i];
  }
  const NodeIndex* begin() const { return nodes_.data(); }
  const NodeIndex* end() const { return nodes_.data() + size_; }
  bool contains(NodeIndex node) const;

 private:
  friend class Ring;
  std::array<NodeIndex, kMaxCopies> nodes_{};
  size_t size_ = 0;
};

class Ring {
 public:
  // An empty ring: no nodes, every replica set empty.
  Ring() = default;

  // EINVAL for a duplicate UUID, a gateway with vnodes, a node with more than
  // kMaxVnodesPerNode vnodes, more than kMaxRingNodes nodes or kMaxRingPoints points.
  static Result<Ring> build(std::vector<RingNode> nodes);

  // The input nodes (gateways included), sorted by UUID.
  const std::vector<RingNode>& nodes() const { return nodes_; }
  std::optional<NodeIndex> find(const Uuid& id) const;
  // Zones that own at least one point: the most copies an object can have.
  size_t zone_count() const { return zone_count_; }
  size_t point_count() const { return points_.size(); }

  // REQUIRES: 1 <= copies <= kMaxCopies.
  ReplicaSet replicas(uint64_t position, size_t copies) const;
  ReplicaSet replicas(const ObjectId& id, size_t copies) const {
    return replicas(id.placement_hash(), copies);
  }
  std::vector<Uuid> replica_ids(const ObjectId& id, size_t copies) const;

 private:
  struct Point {
    uint64_t position;
    NodeIndex node;
    uint32_t zone;
  };

  std::vector<RingNode> nodes_;
  std::vector<Point> points_;  // sorted by (position, node, k)
  size_t zone_count_ = 0;
};

}  // namespace kelpie
