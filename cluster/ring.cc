#include "cluster/ring.h"

#include <algorithm>
#include <map>

namespace kelpie {
namespace {

// SplitMix64's increment (2^64 / golden ratio).
constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ULL;

uint64_t read_be64(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = value << 8 | bytes[i];
  return value;
}

uint64_t node_seed(const Uuid& id) {
  return mix64(mix64(read_be64(id.data())) ^ read_be64(id.data() + 8));
}

}  // namespace

uint64_t vnode_point(const Uuid& id, uint32_t k) {
  return mix64(node_seed(id) + (uint64_t{k} + 1) * kGamma);
}

uint32_t auto_vnodes(uint64_t capacity_bytes, uint64_t average_capacity_bytes) {
  if (average_capacity_bytes == 0) return kDefaultVnodes;
  // 128-bit so that capacities up to 2^64 bytes can not overflow.
  using u128 = unsigned __int128;
  u128 scaled =
      (u128{capacity_bytes} * kDefaultVnodes + average_capacity_bytes / 2) / average_capacity_bytes;
  return static_cast<uint32_t>(std::clamp<u128>(scaled, 1, u128{kMaxVnodesPerNode}));
}

bool ReplicaSet::contains(NodeIndex node) const { return std::find(begin(), end(), node) != end(); }

Result<Ring> Ring::build(std::vector<RingNode> nodes) {
  if (nodes.size() > kMaxRingNodes) {
    return Status::error(EINVAL, "ring: more than " + std::to_string(kMaxRingNodes) + " nodes");
  }
  std::sort(nodes.begin(), nodes.end(),
            [](const RingNode& a, const RingNode& b) { return a.id < b.id; });
  for (size_t i = 0; i < nodes.size(); ++i) {
    const RingNode& node = nodes[i];
    std::string name = uuid_to_string(node.id);
    if (i > 0 && nodes[i - 1].id == node.id) {
      return Status::error(EINVAL, "ring: node " + name + " listed twice");
    }
    if (node.gateway && node.vnodes != 0) {
      return Status::error(EINVAL, "ring: gateway " + name + " has vnodes");
    }
    if (node.vnodes > kMaxVnodesPerNode) {
      return Status::error(EINVAL, "ring: node " + name + " has more than " +
                                       std::to_string(kMaxVnodesPerNode) + " vnodes");
    }
  }

  Ring ring;
  // Zone numbers only need to tell zones apart; they follow the UUID order so the
  // ring stays a pure function of the node list.
  std::map<std::string, uint32_t> named_zones;
  uint32_t next_zone = 0;
  size_t total_points = 0;
  std::vector<uint32_t> zone_of(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    const RingNode& node = nodes[i];
    if (node.gateway || node.vnodes == 0) continue;
    if (node.zone.empty()) {
      zone_of[i] = next_zone++;
    } else {
      auto [it, added] = named_zones.try_emplace(node.zone, next_zone);
      if (added) ++next_zone;
      zone_of[i] = it->second;
    }
    total_points += size_t{node.vnodes} * kPointsPerVnode;
  }
  ring.zone_count_ = next_zone;
  if (total_points > kMaxRingPoints) {
    return Status::error(EINVAL, "ring: more than " + std::to_string(kMaxRingPoints) + " points");
  }

  ring.points_.reserve(total_points);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const RingNode& node = nodes[i];
    if (node.gateway) continue;
    uint32_t points = node.vnodes * kPointsPerVnode;
    for (uint32_t k = 0; k < points; ++k) {
      ring.points_.push_back({vnode_point(node.id, k), static_cast<NodeIndex>(i), zone_of[i]});
    }
  }
  // Points of one node never collide (SplitMix64 is a bijection of its counter);
  // between nodes the UUID order breaks the (astronomically rare) tie.
  std::sort(ring.points_.begin(), ring.points_.end(), [](const Point& a, const Point& b) {
    return a.position != b.position ? a.position < b.position : a.node < b.node;
  });
  ring.nodes_ = std::move(nodes);
  return ring;
}

std::optional<NodeIndex> Ring::find(const Uuid& id) const {
  auto it = std::lower_bound(nodes_.begin(), nodes_.end(), id,
                             [](const RingNode& node, const Uuid& key) { return node.id < key; });
  if (it == nodes_.end() || it->id != id) return std::nullopt;
  return static_cast<NodeIndex>(it - nodes_.begin());
}

ReplicaSet Ring::replicas(uint64_t position, size_t copies) const {
  KELPIE_ASSERT(copies >= 1 && copies <= kMaxCopies);
  ReplicaSet set;
  size_t wanted = std::min(copies, zone_count_);
  if (wanted == 0) return set;

  auto first =
      std::lower_bound(points_.begin(), points_.end(), position,
                       [](const Point& point, uint64_t key) { return point.position < key; });
  size_t start = first == points_.end() ? 0 : static_cast<size_t>(first - points_.begin());
  std::array<uint32_t, kMaxCopies> zones{};
  // Every zone counted in zone_count_ owns a point, so one lap always finds `wanted`.
  for (size_t step = 0; step < points_.size() && set.size_ < wanted; ++step) {
    size_t at = start + step;
    const Point& point = points_[at < points_.size() ? at : at - points_.size()];
    if (std::find(zones.begin(), zones.begin() + set.size_, point.zone) !=
        zones.begin() + set.size_) {
      continue;
    }
    zones[set.size_] = point.zone;
    set.nodes_[set.size_++] = point.node;
  }
  KELPIE_ASSERT(set.size_ == wanted);
  return set;
}

std::vector<Uuid> Ring::replica_ids(const ObjectId& id, size_t copies) const {
  std::vector<Uuid> ids;
  for (NodeIndex node : replicas(id, copies)) ids.push_back(nodes_[node].id);
  return ids;
}

}  // namespace kelpie
