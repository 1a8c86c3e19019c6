// Internals of the `kelpie` admin CLI (admin/cli_main.cc is the entry point).
//
// Contract:
//  - parse_cli_args() splits argv into options and positional words. It only fails
//    on usage errors (unknown option, option without its value), which exit 2.
//  - Each run_* command receives its positional arguments (after "vdi create" etc.),
//    already counted against the command's usage, prints its result on stdout and
//    returns a Status whose message is the one line printed as "kelpie: <message>"
//    (exit 1). Messages are the daemon's own when it refused the request.
//  - Output: tables and "key: value" lines for people, --json for programs (field
//    names are those of common/admin_wire.h; byte counts are integers).
//  - Snapshots are named "NAME@TAG" everywhere on the command line and in output.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "daemon/node_control.h"

namespace kelpie::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr const char* kDefaultAddress = "127.0.0.1:7000";

struct CliInvocation {
  std::string address;  // --addr, else $KELPIE_ADDR, else kDefaultAddress
  bool json = false;
  bool help = false;
  bool version = false;
  std::optional<std::string> object_size;
  std::optional<std::string> tag;         // --tag (vdi snapshot)
  std::optional<std::string> from;        // --from (vdi backup)
  std::optional<std::string> copies;      // --copies (cluster format)
  std::optional<std::string> min_copies;  // --min-copies (cluster format)
  bool repair = false;                    // --repair (cluster check, vdi check)
  std::vector<std::string> words;         // command words and their arguments
  std::vector<std::string> options_seen;  // "--json", "--tag", ...: checked per command
};

// `env_address` is $KELPIE_ADDR or nullptr.
Result<CliInvocation> parse_cli_args(int argc, char** argv, const char* env_address);
const char* usage_text();

using Args = std::span<const std::string>;

// Admin commands (cli_commands.cc).
Status run_vdi_create(const CliInvocation& cli, Args args);
Status run_vdi_list(const CliInvocation& cli, Args args);
Status run_vdi_info(const CliInvocation& cli, Args args);
Status run_vdi_delete(const CliInvocation& cli, Args args);
Status run_vdi_resize(const CliInvocation& cli, Args args);
Status run_node_info(const CliInvocation& cli, Args args);

// Lifecycle commands (cli_lifecycle.cc, cli_tree.cc).
Status run_vdi_snapshot(const CliInvocation& cli, Args args);
Status run_vdi_clone(const CliInvocation& cli, Args args);
Status run_vdi_rollback(const CliInvocation& cli, Args args);
Status run_vdi_tree(const CliInvocation& cli, Args args);

// Backup and restore (cli_backup.cc, cli_restore.cc).
Status run_vdi_backup(const CliInvocation& cli, Args args);
Status run_vdi_restore(const CliInvocation& cli, Args args);

// Cluster commands (cli_cluster.cc). check_* run before the command and their
// failure is a usage error (exit 2).
Status check_cluster_format(const CliInvocation& cli, Args args);
Status run_cluster_format(const CliInvocation& cli, Args args);
Status run_cluster_info(const CliInvocation& cli, Args args);
Status run_cluster_check(const CliInvocation& cli, Args args);
Status run_cluster_shutdown(const CliInvocation& cli, Args args);
Status check_cluster_recover(const CliInvocation& cli, Args args);
Status run_cluster_recover(const CliInvocation& cli, Args args);
Status run_node_list(const CliInvocation& cli, Args args);
Status run_node_recovery(const CliInvocation& cli, Args args);
Status run_node_kill(const CliInvocation& cli, Args args);
Status run_vdi_check(const CliInvocation& cli, Args args);

// Shared by the commands (cli_commands.cc).
// EINVAL "'X' is not a snapshot (expected NAME@TAG)" unless `name` has the form NAME@TAG.
Status require_snapshot_name(const std::string& name);
// Connects and runs one request, waiting up to reply_timeout_s for the reply (0: the
// client's default, AdminClient::kReplyTimeoutS).
Result<nlohmann::json> call_daemon(const CliInvocation& cli, std::string_view op,
                                   nlohmann::json arguments, int reply_timeout_s = 0);
// EBADMSG "malformed reply from kelpied at ADDRESS: <what>".
Status malformed_reply(const std::string& address, const std::string& what);
// The reply's VdiSummary, or EBADMSG naming the daemon's address.
Result<VdiSummary> decode_vdi(const Result<nlohmann::json>& reply, const std::string& address);
// Every VDI and snapshot (vdi.list).
Result<std::vector<VdiSummary>> list_vdis(const CliInvocation& cli);
void print_json(const nlohmann::json& value);

// Data commands over NBD (cli_data.cc).
Status run_vdi_read(const CliInvocation& cli, Args args);
Status run_vdi_write(const CliInvocation& cli, Args args);

// Output (cli_output.cc). All write to stdout; flush_stdout() reports a failure.
// "NAME" for a VDI, "NAME@TAG" for a snapshot.
std::string display_name(const VdiSummary& vdi);
// The name before "@TAG": the writable VDI a snapshot belongs to.
std::string base_name(const VdiSummary& vdi);
// Exact when short ("10 GiB"), else one decimal in the largest unit ("93.1 GiB").
std::string human_bytes(uint64_t bytes);
// VDIs first by base name, each writable VDI before its snapshots, those by id.
void sort_vdis(std::vector<VdiSummary>& vdis);
void print_vdi_table(const std::vector<VdiSummary>& vdis);
void print_vdi_info(const VdiSummary& vdi);
void print_node_info(const NodeSummary& node);
// "2024-01-02 03:04:05 UTC".
std::string utc_time(int64_t unix_s);
struct KeyValue {
  const char* key;
  std::string value;
};
// "key:   value" lines, values aligned.
void print_key_values(std::initializer_list<KeyValue> lines);
// Rows of columns, the first row the header, columns left-aligned two spaces apart.
void print_table(const std::vector<std::vector<std::string>>& rows);

// Cluster output (cli_cluster_output.cc). "First 8 characters" of a node id in tables.
std::string short_node_id(const std::string& id);
void print_cluster_info(const ClusterSummary& cluster, uint64_t history_omitted);
void print_member_table(const std::vector<MemberSummary>& members);
void print_recovery_table(const std::vector<RecoverySummary>& recoveries);
// The counts, one line per issue and the summary line; `unrepaired` of the issues
// (shown or omitted) were not repaired.
void print_check_report(const CheckReport& report, uint64_t issues_omitted, uint64_t unrepaired);
Status flush_stdout();

// Writes all of `length` bytes to fd 1, retrying EINTR and short writes.
Status write_stdout(const void* data, size_t length);

}  // namespace kelpie::cli
