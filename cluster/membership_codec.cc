#include "cluster/membership_codec.h"

#include <algorithm>
#include <cerrno>

#include "common/admin_wire.h"

namespace kelpie {

using nlohmann::json;

namespace {
constexpr size_t kMaxBlobNameBytes = 200;
}  // namespace

std::optional<Uuid> parse_uuid(const std::string& text) {
  if (text.size() != 36) return std::nullopt;
  Uuid uuid{};
  size_t byte = 0;
  for (size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int high = nibble(text[i]), low = nibble(text[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    uuid[byte++] = static_cast<uint8_t>(high * 16 + low);
    i += 2;
  }
  return uuid;
}

nlohmann::json member_info_to_json(const MemberInfo& member) {
  return {{"id", uuid_to_string(member.id)},
          {"peer_address", member.peer_address},
          {"admin_address", member.admin_address},
          {"nbd_address", member.nbd_address},
          {"zone", member.zone},
          {"vnodes", member.vnodes},
          {"gateway", member.gateway},
          {"capacity_bytes", member.capacity_bytes},
          {"pid", member.pid}};
}

namespace {

Result<Uuid> uuid_field(const json& object, const char* key) {
  Result<std::string> text = json_string_field(object, key);
  if (!text) return text.status();
  std::optional<Uuid> uuid = parse_uuid(*text);
  if (!uuid) return Status::error(EBADMSG, std::string("field '") + key + "' is not a uuid");
  return *uuid;
}

}  // namespace

Result<MemberInfo> member_info_from_json(const json& object) {
  MemberInfo member;
  Result<Uuid> id = uuid_field(object, "id");
  Result<std::string> peer = json_string_field(object, "peer_address");
  Result<std::string> admin = json_string_field(object, "admin_address");
  Result<std::string> nbd = json_string_field(object, "nbd_address");
  Result<std::string> zone = json_string_field(object, "zone");
  Result<uint64_t> vnodes = json_u64_field(object, "vnodes");
  Result<bool> gateway = json_bool_field(object, "gateway");
  Result<uint64_t> capacity = json_u64_field(object, "capacity_bytes");
  Result<int64_t> pid = json_i64_field(object, "pid");
  for (const Status& s : {id.status(), peer.status(), admin.status(), nbd.status(),
                          zone.status(), vnodes.status(), gateway.status(), capacity.status(),
                          pid.status()}) {
    if (!s) return s;
  }
  member.id = *id;
  member.peer_address = *peer;
  member.admin_address = *admin;
  member.nbd_address = *nbd;
  member.zone = *zone;
  member.vnodes = static_cast<uint32_t>(*vnodes);
  member.gateway = *gateway;
  member.capacity_bytes = *capacity;
  member.pid = static_cast<int>(*pid);
  return member;
}

nlohmann::json record_to_json(const EpochRecord& record) {
  json nodes = json::array();
  for (const MemberInfo& node : record.nodes) nodes.push_back(member_info_to_json(node));
  return {{"epoch", record.epoch},
          {"cluster", uuid_to_string(record.cluster)},
          {"copies", record.copies},
          {"min_copies", record.min_copies},
          {"created_unix_ms", record.created_unix_ms},
          {"reason", record.reason},
          {"nodes", nodes}};
}

Result<EpochRecord> record_from_json(const json& object) {
  EpochRecord record;
  Result<uint64_t> epoch = json_u64_field(object, "epoch");
  Result<Uuid> cluster = uuid_field(object, "cluster");
  Result<uint64_t> copies = json_u64_field(object, "copies");
  Result<uint64_t> min_copies = json_u64_field(object, "min_copies");
  Result<int64_t> created = json_i64_field(object, "created_unix_ms");
  Result<std::string> reason = json_string_field(object, "reason");
  for (const Status& s : {epoch.status(), cluster.status(), copies.status(),
                          min_copies.status(), created.status(), reason.status()}) {
    if (!s) return s;
  }
  auto nodes = object.find("nodes");
  if (nodes == object.end() || !nodes->is_array()) {
    return Status::error(EBADMSG, "field 'nodes' must be an array");
  }
  for (const json& node : *nodes) {
    Result<MemberInfo> member = member_info_from_json(node);
    if (!member) return member.status();
    record.nodes.push_back(*member);
  }
  record.epoch = *epoch;
  record.cluster = *cluster;
  record.copies = static_cast<uint32_t>(*copies);
  record.min_copies = static_cast<uint32_t>(*min_copies);
  record.created_unix_ms = *created;
  record.reason = *reason;
  return record;
}

bool lists(const EpochRecord& record, const Uuid& id) {
  return std::any_of(record.nodes.begin(), record.nodes.end(),
                     [&](const MemberInfo& node) { return node.id == id; });
}

// The record after `last` with `nodes` (sorted here).
EpochRecord successor(const EpochRecord& last, std::string reason,
                      std::vector<MemberInfo> nodes) {
  EpochRecord next = last;
  next.reason = std::move(reason);
  next.nodes = std::move(nodes);
  return next;
}

std::vector<MemberInfo> without(const std::vector<MemberInfo>& nodes, const Uuid& id) {
  std::vector<MemberInfo> kept;
  for (const MemberInfo& node : nodes) {
    if (node.id != id) kept.push_back(node);
  }
  return kept;
}

bool valid_blob_name(const std::string& name) {
  return !name.empty() && name.size() <= kMaxBlobNameBytes && name[0] != '.' &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos;
}


void sort_by_id(std::vector<MemberInfo>& nodes) {
  std::sort(nodes.begin(), nodes.end(),
            [](const MemberInfo& a, const MemberInfo& b) { return a.id < b.id; });
}

const char* cluster_status_name(ClusterStatus status) {
  switch (status) {
    case ClusterStatus::kUnformatted: return "unformatted";
    case ClusterStatus::kWaiting: return "waiting";
    case ClusterStatus::kRunning: return "running";
    case ClusterStatus::kShutdown: return "shutdown";
  }
  return "unknown";
}

}  // namespace kelpie
