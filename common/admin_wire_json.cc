// The JSON half of common/admin_wire.h: typed field access and the one JSON form of
// the summaries and the backup plan.
#include <limits>
#include <utility>

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
