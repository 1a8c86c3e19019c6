// The JSON half of common/admin_wire.h: typed field access and the one JSON form of
// the summaries and the backup plan.
#include <cmath>
#include <initializer_list>
#include <limits>
#include <utility>
#include <vector>

#include "common/admin_wire.h"

namespace kelpie {
namespace {

using nlohmann::json;

Status field_error(const char* key, const char* what) {
  return Status::error(EBADMSG, std::string("field '") + key + "' " + what);
}

Result<const json*> find_field(const json& object, const char* key) {
  if (!object.is_object()) return Status::error(EBADMSG, "expected a JSON object");
  auto it = object.find(key);
  if (it == object.end()) return field_error(key, "is missing");
  return &*it;
}

// Narrows into `out` or reports the field as out of range.
template <typename T>
Status narrow_field(const json& object, const char* key, T& out) {
  Result<uint64_t> value = json_u64_field(object, key);
  if (!value) return value.status();
  if (*value > std::numeric_limits<T>::max()) return field_error(key, "is out of range");
  out = static_cast<T>(*value);
  return Status::ok();
}

struct StringField {
  const char* key;
  std::string* out;
};

Status read_string_fields(const json& object, std::initializer_list<StringField> fields) {
  for (StringField field : fields) {
    Result<std::string> value = json_string_field(object, field.key);
    if (!value) return value.status();
    *field.out = std::move(*value);
  }
  return Status::ok();
}

Status first_error(std::initializer_list<Status> statuses) {
  for (const Status& status : statuses) {
    if (!status) return status;
  }
  return Status::ok();
}

Result<const json*> array_field(const json& object, const char* key) {
  Result<const json*> field = find_field(object, key);
  if (!field) return field.status();
  if (!(*field)->is_array()) return field_error(key, "must be an array");
  return field;
}

Status string_array_field(const json& object, const char* key, std::vector<std::string>& out) {
  Result<const json*> array = array_field(object, key);
  if (!array) return array.status();
  out.clear();
  for (const json& element : **array) {
    if (!element.is_string()) return field_error(key, "must hold strings");
    out.push_back(element.get<std::string>());
  }
  return Status::ok();
}

// Decodes each element of the array `key` with `from_json`; an element's error names
// the array and the element's index.
template <typename T>
Status object_array_field(const json& object, const char* key,
                          Result<T> (*from_json)(const json&), std::vector<T>& out) {
  Result<const json*> array = array_field(object, key);
  if (!array) return array.status();
  out.clear();
  for (const json& element : **array) {
    Result<T> value = from_json(element);
    if (!value) {
      return Status::error(EBADMSG, std::string("field '") + key + "' element " +
                                        std::to_string(out.size()) + ": " +
                                        value.status().message());
    }
    out.push_back(std::move(*value));
  }
  return Status::ok();
}

template <typename T>
json array_to_json(const std::vector<T>& values, json (*to_json)(const T&)) {
  json array = json::array();
  for (const T& value : values) array.push_back(to_json(value));
  return array;
}

}  // namespace

Result<std::string> json_string_field(const json& object, const char* key) {
  Result<const json*> field = find_field(object, key);
  if (!field) return field.status();
  if (!(*field)->is_string()) return field_error(key, "must be a string");
  return (*field)->get<std::string>();
}

Result<uint64_t> json_u64_field(const json& object, const char* key) {
  Result<const json*> field = find_field(object, key);
  if (!field) return field.status();
  const json& value = **field;
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) {
    if (value.get<int64_t>() < 0) return field_error(key, "must not be negative");
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return field_error(key, "must be an integer");
}

Result<int64_t> json_i64_field(const json& object, const char* key) {
  Result<const json*> field = find_field(object, key);
  if (!field) return field.status();
  const json& value = **field;
  if (value.is_number_unsigned()) {
    if (value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return field_error(key, "is out of range");
    }
    return static_cast<int64_t>(value.get<uint64_t>());
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  return field_error(key, "must be an integer");
}

Result<bool> json_bool_field(const json& object, const char* key) {
  Result<const json*> field = find_field(object, key);
  if (!field) return field.status();
  if (!(*field)->is_boolean()) return field_error(key, "must be true or false");
  return (*field)->get<bool>();
}

Result<double> json_double_field(const json& object, const char* key) {
  Result<const json*> field = find_field(object, key);
  if (!field) return field.status();
  if (!(*field)->is_number()) return field_error(key, "must be a number");
  return (*field)->get<double>();
}

json vdi_to_json(const VdiSummary& vdi) {
  return {
      {"name", vdi.name},
      {"id", vdi.id},
      {"size_bytes", vdi.size_bytes},
      {"object_size_bytes", vdi.object_size_bytes},
      {"allocated_objects", vdi.allocated_objects},
      {"used_bytes", vdi.used_bytes},
      {"created_unix_s", vdi.created_unix_s},
      {"attached_connections", vdi.attached_connections},
      {"tag", vdi.tag},
      {"read_only", vdi.read_only},
      {"parent_id", vdi.parent_id},
      {"family_id", vdi.family_id},
      {"own_bytes", vdi.own_bytes},
      {"shared_bytes", vdi.shared_bytes},
      {"restored_from", vdi.restored_from},
      {"object_count", vdi.object_count},
  };
}

Result<VdiSummary> vdi_from_json(const json& object) {
  VdiSummary vdi;
  for (auto [key, out] : {std::pair{"name", &vdi.name}, std::pair{"tag", &vdi.tag},
                          std::pair{"restored_from", &vdi.restored_from}}) {
    Result<std::string> value = json_string_field(object, key);
    if (!value) return value.status();
    *out = std::move(*value);
  }
  Result<bool> read_only = json_bool_field(object, "read_only");
  if (!read_only) return read_only.status();
  vdi.read_only = *read_only;
  Result<int64_t> created = json_i64_field(object, "created_unix_s");
  if (!created) return created.status();
  vdi.created_unix_s = *created;
  for (Status status : {
           narrow_field(object, "id", vdi.id),
           narrow_field(object, "size_bytes", vdi.size_bytes),
           narrow_field(object, "object_size_bytes", vdi.object_size_bytes),
           narrow_field(object, "allocated_objects", vdi.allocated_objects),
           narrow_field(object, "used_bytes", vdi.used_bytes),
           narrow_field(object, "attached_connections", vdi.attached_connections),
           narrow_field(object, "parent_id", vdi.parent_id),
           narrow_field(object, "family_id", vdi.family_id),
           narrow_field(object, "own_bytes", vdi.own_bytes),
           narrow_field(object, "shared_bytes", vdi.shared_bytes),
           narrow_field(object, "object_count", vdi.object_count),
       }) {
    if (!status) return status;
  }
  return vdi;
}

json node_to_json(const NodeSummary& node) {
  return {
      {"version", node.version},
      {"node_uuid", node.node_uuid},
      {"data_dir", node.data_dir},
      {"nbd_tcp", node.nbd_tcp},
      {"nbd_unix", node.nbd_unix},
      {"admin_address", node.admin_address},
      {"threads", node.threads},
      {"format_version", node.format_version},
      {"capacity_bytes", node.capacity_bytes},
      {"free_bytes", node.free_bytes},
      {"objects", node.objects},
      {"vdi_count", node.vdi_count},
      {"nbd_connections", node.nbd_connections},
      {"uptime_s", node.uptime_s},
  };
}

Result<NodeSummary> node_from_json(const json& object) {
  NodeSummary node;
  struct StringField {
    const char* key;
    std::string* out;
  };
  for (StringField field :
       {StringField{"version", &node.version}, StringField{"node_uuid", &node.node_uuid},
        StringField{"data_dir", &node.data_dir}, StringField{"nbd_tcp", &node.nbd_tcp},
        StringField{"nbd_unix", &node.nbd_unix},
        StringField{"admin_address", &node.admin_address}}) {
    Result<std::string> value = json_string_field(object, field.key);
    if (!value) return value.status();
    *field.out = std::move(*value);
  }
  for (Status status : {
           narrow_field(object, "threads", node.threads),
           narrow_field(object, "format_version", node.format_version),
           narrow_field(object, "capacity_bytes", node.capacity_bytes),
           narrow_field(object, "free_bytes", node.free_bytes),
           narrow_field(object, "objects", node.objects),
           narrow_field(object, "vdi_count", node.vdi_count),
           narrow_field(object, "nbd_connections", node.nbd_connections),
           narrow_field(object, "uptime_s", node.uptime_s),
       }) {
    if (!status) return status;
  }
  return node;
}

json epoch_to_json(const EpochSummary& epoch) {
  return {
      {"epoch", epoch.epoch},
      {"created_unix_ms", epoch.created_unix_ms},
      {"reason", epoch.reason},
      {"nodes", epoch.nodes},
  };
}

Result<EpochSummary> epoch_from_json(const json& object) {
  EpochSummary epoch;
  Result<int64_t> created = json_i64_field(object, "created_unix_ms");
  if (!created) return created.status();
  epoch.created_unix_ms = *created;
  Status status = first_error({
      narrow_field(object, "epoch", epoch.epoch),
      read_string_fields(object, {{"reason", &epoch.reason}}),
      string_array_field(object, "nodes", epoch.nodes),
  });
  if (!status) return status;
  return epoch;
}

json cluster_to_json(const ClusterSummary& cluster) {
  return {
      {"driver", cluster.driver},
      {"status", cluster.status},
      {"cluster_uuid", cluster.cluster_uuid},
      {"epoch", cluster.epoch},
      {"copies", cluster.copies},
      {"min_copies", cluster.min_copies},
      {"zones", cluster.zones},
      {"storage_nodes", cluster.storage_nodes},
      {"gateways", cluster.gateways},
      {"warnings", cluster.warnings},
      {"history", array_to_json(cluster.history, epoch_to_json)},
  };
}

Result<ClusterSummary> cluster_from_json(const json& object) {
  ClusterSummary cluster;
  Status status = first_error({
      read_string_fields(object, {{"driver", &cluster.driver},
                                  {"status", &cluster.status},
                                  {"cluster_uuid", &cluster.cluster_uuid}}),
      narrow_field(object, "epoch", cluster.epoch),
      narrow_field(object, "copies", cluster.copies),
      narrow_field(object, "min_copies", cluster.min_copies),
      narrow_field(object, "zones", cluster.zones),
      narrow_field(object, "storage_nodes", cluster.storage_nodes),
      narrow_field(object, "gateways", cluster.gateways),
      string_array_field(object, "warnings", cluster.warnings),
      object_array_field(object, "history", epoch_from_json, cluster.history),
  });
  if (!status) return status;
  return cluster;
}

json member_to_json(const MemberSummary& member) {
  return {
      {"id", member.id},
      {"address", member.address},
      {"nbd_address", member.nbd_address},
      {"admin_address", member.admin_address},
      {"zone", member.zone},
      {"vnodes", member.vnodes},
      {"gateway", member.gateway},
      {"status", member.status},
      {"capacity_bytes", member.capacity_bytes},
      {"used_bytes", member.used_bytes},
      {"objects", member.objects},
  };
}

Result<MemberSummary> member_from_json(const json& object) {
  MemberSummary member;
  Result<bool> gateway = json_bool_field(object, "gateway");
  if (!gateway) return gateway.status();
  member.gateway = *gateway;
  Status status = first_error({
      read_string_fields(object, {{"id", &member.id},
                                  {"address", &member.address},
                                  {"nbd_address", &member.nbd_address},
                                  {"admin_address", &member.admin_address},
                                  {"zone", &member.zone},
                                  {"status", &member.status}}),
      narrow_field(object, "vnodes", member.vnodes),
      narrow_field(object, "capacity_bytes", member.capacity_bytes),
      narrow_field(object, "used_bytes", member.used_bytes),
      narrow_field(object, "objects", member.objects),
  });
  if (!status) return status;
  return member;
}

json recovery_to_json(const RecoverySummary& recovery) {
  return {
      {"node", recovery.node},
      {"epoch", recovery.epoch},
      {"state", recovery.state},
      {"to_recover", recovery.to_recover},
      {"done", recovery.done},
      {"unavailable", recovery.unavailable},
      // JSON has no NaN or infinity (nlohmann would write null).
      {"rate_mib_s", std::isfinite(recovery.rate_mib_s) ? recovery.rate_mib_s : 0.0},
  };
}

Result<RecoverySummary> recovery_from_json(const json& object) {
  RecoverySummary recovery;
  Result<double> rate = json_double_field(object, "rate_mib_s");
  if (!rate) return rate.status();
  recovery.rate_mib_s = *rate;
  Status status = first_error({
      read_string_fields(object, {{"node", &recovery.node}, {"state", &recovery.state}}),
      narrow_field(object, "epoch", recovery.epoch),
      narrow_field(object, "to_recover", recovery.to_recover),
      narrow_field(object, "done", recovery.done),
      // Absent from daemons older than the field: none known.
      object.contains("unavailable") ? narrow_field(object, "unavailable", recovery.unavailable)
                                     : Status::ok(),
  });
  if (!status) return status;
  return recovery;
}

json check_issue_to_json(const CheckIssue& issue) {
  return {
      {"object", issue.object}, {"vdi", issue.vdi},           {"node", issue.node},
      {"problem", issue.problem}, {"repaired", issue.repaired},
  };
}

Result<CheckIssue> check_issue_from_json(const json& object) {
  CheckIssue issue;
  Result<bool> repaired = json_bool_field(object, "repaired");
  if (!repaired) return repaired.status();
  issue.repaired = *repaired;
  Status status = read_string_fields(object, {{"object", &issue.object},
                                              {"vdi", &issue.vdi},
                                              {"node", &issue.node},
                                              {"problem", &issue.problem}});
  if (!status) return status;
  return issue;
}

json check_report_to_json(const CheckReport& report) {
  return {
      {"objects_checked", report.objects_checked},
      {"copies_checked", report.copies_checked},
      {"repaired", report.repaired},
      {"issues", array_to_json(report.issues, check_issue_to_json)},
  };
}

Result<CheckReport> check_report_from_json(const json& object) {
  CheckReport report;
  Status status = first_error({
      narrow_field(object, "objects_checked", report.objects_checked),
      narrow_field(object, "copies_checked", report.copies_checked),
      narrow_field(object, "repaired", report.repaired),
      object_array_field(object, "issues", check_issue_from_json, report.issues),
  });
  if (!status) return status;
  return report;
}

json backup_plan_to_json(const BackupPlan& plan) {
  json extents = json::array();
  for (const auto& [offset, length] : plan.extents) extents.push_back({offset, length});
  return {
      {"to_identity", plan.to_identity}, {"from_identity", plan.from_identity},
      {"size_bytes", plan.size_bytes},   {"object_size_bytes", plan.object_size_bytes},
      {"extents", std::move(extents)},
  };
}

Result<BackupPlan> backup_plan_from_json(const json& object) {
  BackupPlan plan;
  for (auto [key, out] : {std::pair{"to_identity", &plan.to_identity},
                          std::pair{"from_identity", &plan.from_identity}}) {
    Result<std::string> value = json_string_field(object, key);
    if (!value) return value.status();
    *out = std::move(*value);
  }
  for (Status status : {
           narrow_field(object, "size_bytes", plan.size_bytes),
           narrow_field(object, "object_size_bytes", plan.object_size_bytes),
       }) {
    if (!status) return status;
  }
  Result<const json*> extents = find_field(object, "extents");
  if (!extents) return extents.status();
  if (!(*extents)->is_array()) return field_error("extents", "must be an array");
  plan.extents.reserve((*extents)->size());
  auto is_u64 = [](const json& value) {
    return value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0);
  };
  for (const json& extent : **extents) {
    if (!extent.is_array() || extent.size() != 2 || !is_u64(extent[0]) || !is_u64(extent[1])) {
      return field_error("extents", "must hold [offset, length] pairs of unsigned integers");
    }
    plan.extents.emplace_back(extent[0].get<uint64_t>(), extent[1].get<uint64_t>());
  }
  return plan;
}

}  // namespace kelpie
