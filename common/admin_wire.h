// Admin wire format, shared by kelpied's admin server and the `kelpie` CLI.
//
// Contract:
//  - A message is a 4-byte big-endian length followed by that many bytes of UTF-8
//    JSON, which must be an object. Lengths above kMaxAdminMessageBytes are refused
//    by both sides.
//  - Requests are {"op": "...", ...arguments}; replies are {"ok": true, ...payload}
//    or {"ok": false, "errno": N, "error": "one line"}.
//  - send_admin_message / recv_admin_message block on a connected stream socket,
//    retry EINTR and short transfers, and never raise SIGPIPE. recv failures:
//      EPIPE     the peer closed the connection before the first byte of a message
//      EPROTO    the peer closed the connection in the middle of a message
//      EMSGSIZE  the announced length exceeds the limit (the body is not read)
//      EBADMSG   the body is not a JSON object (the framing is still in sync)
//      ETIMEDOUT a socket timeout (SO_RCVTIMEO/SO_SNDTIMEO) expired
//      other     the socket's errno
//  - The *_from_json conversions never throw: a missing or mistyped field is EBADMSG.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"
#include "daemon/node_control.h"

namespace kelpie {

inline constexpr uint32_t kMaxAdminMessageBytes = 1u << 20;

[[nodiscard]] Status send_admin_message(int fd, const nlohmann::json& message);
[[nodiscard]] Result<nlohmann::json> recv_admin_message(int fd);

// Serialises without throwing: invalid UTF-8 in strings is replaced by U+FFFD.
std::string dump_json(const nlohmann::json& value, int indent = -1);

// {"ok": false, "errno": code, "error": message (strerror(code) when empty)}.
nlohmann::json error_reply(const Status& status);

// "HOST:PORT" or "[V6HOST]:PORT"; PORT 0..65535. EINVAL names the text otherwise.
struct HostPort {
  std::string host;
  uint16_t port = 0;
};
Result<HostPort> parse_host_port(std::string_view text);

// Field access on a JSON object that reports, instead of throwing, a missing or
// mistyped field as EBADMSG "field 'x' ...".
Result<std::string> json_string_field(const nlohmann::json& object, const char* key);
Result<uint64_t> json_u64_field(const nlohmann::json& object, const char* key);
Result<int64_t> json_i64_field(const nlohmann::json& object, const char* key);
Result<bool> json_bool_field(const nlohmann::json& object, const char* key);
// Any JSON number (integer or not).
Result<double> json_double_field(const nlohmann::json& object, const char* key);

// One definition of the summaries' JSON form: field names are the struct's member
// names and byte counts are integers.
nlohmann::json vdi_to_json(const VdiSummary& vdi);
Result<VdiSummary> vdi_from_json(const nlohmann::json& object);
nlohmann::json node_to_json(const NodeSummary& node);
Result<NodeSummary> node_from_json(const nlohmann::json& object);

// The cluster views (daemon/node_control.h), same rules: keys are the member names,
// lists of strings and of nested summaries are JSON arrays, rate_mib_s is a number.
nlohmann::json epoch_to_json(const EpochSummary& epoch);
Result<EpochSummary> epoch_from_json(const nlohmann::json& object);
nlohmann::json cluster_to_json(const ClusterSummary& cluster);
Result<ClusterSummary> cluster_from_json(const nlohmann::json& object);
nlohmann::json member_to_json(const MemberSummary& member);
Result<MemberSummary> member_from_json(const nlohmann::json& object);
nlohmann::json recovery_to_json(const RecoverySummary& recovery);
Result<RecoverySummary> recovery_from_json(const nlohmann::json& object);
nlohmann::json check_issue_to_json(const CheckIssue& issue);
Result<CheckIssue> check_issue_from_json(const nlohmann::json& object);
nlohmann::json check_report_to_json(const CheckReport& report);
Result<CheckReport> check_report_from_json(const nlohmann::json& object);

// A backup plan's JSON form: the struct's fields, with "extents" as
// [[offset, length], ...]. backup_plan_from_json checks types and ranges only; the
// order and bounds of the extents are the caller's to check.
nlohmann::json backup_plan_to_json(const BackupPlan& plan);
Result<BackupPlan> backup_plan_from_json(const nlohmann::json& object);

// vdi.backup_plan replies carry at most this many extents (a page, well inside
// kMaxAdminMessageBytes: an extent takes at most 44 bytes of JSON); the client asks
// for the next page with "first_extent" until it holds "extent_count" of them.
inline constexpr size_t kMaxBackupPlanExtentsPerReply = 16384;

// cluster.info / cluster.format and cluster.check replies keep their lists (epoch
// history, newest kept; check issues, first kept) within this many bytes of JSON, so
// a long history or a check of a badly damaged cluster still fits in one message.
// The reply then says how many it left out ("history_omitted", "issues_omitted").
inline constexpr size_t kMaxAdminReplyListBytes = 768 * 1024;

}  // namespace kelpie
