// The JSON coding of membership records and small helpers every membership driver
// shares (cluster/membership.h): the `local` driver frames these records in its epoch
// log, the `zookeeper` driver stores them in znodes. The JSON is a format contract:
//   MemberInfo  {"id", "peer_address", "admin_address", "nbd_address", "zone",
//                "vnodes", "gateway", "capacity_bytes", "pid"}
//   EpochRecord {"epoch", "cluster", "copies", "min_copies", "created_unix_ms",
//                "reason", "nodes": [MemberInfo...]}
// Decoders ignore unknown keys (a driver may add its own) and return EBADMSG naming
// the first missing or mistyped field.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cluster/membership.h"

namespace kelpie {

// The canonical 8-4-4-4-12 lower-case form only.
std::optional<Uuid> parse_uuid(const std::string& text);

nlohmann::json member_info_to_json(const MemberInfo& member);
Result<MemberInfo> member_info_from_json(const nlohmann::json& object);
nlohmann::json record_to_json(const EpochRecord& record);
Result<EpochRecord> record_from_json(const nlohmann::json& object);

// Whether `record` lists storage node `id`.
bool lists(const EpochRecord& record, const Uuid& id);
// The record after `last` with `reason` and `nodes` (the caller numbers and sorts it).
EpochRecord successor(const EpochRecord& last, std::string reason,
                      std::vector<MemberInfo> nodes);
std::vector<MemberInfo> without(const std::vector<MemberInfo>& nodes, const Uuid& id);
// Sorts by id (an epoch record's order).
void sort_by_id(std::vector<MemberInfo>& nodes);

// Shared-blob names: 1..200 bytes, no '/' or NUL, not starting with '.'.
bool valid_blob_name(const std::string& name);

}  // namespace kelpie
