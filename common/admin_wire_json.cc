// The JSON half of common/admin_wire.h: typed field access and the summaries'
// one JSON form.
#include <limits>

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
  };
}

Result<VdiSummary> vdi_from_json(const json& object) {
  VdiSummary vdi;
  Result<std::string> name = json_string_field(object, "name");
  if (!name) return name.status();
  vdi.name = std::move(*name);
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

}  // namespace kelpie
