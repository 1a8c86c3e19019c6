// The cluster commands: `cluster format|info|check|shutdown|recover force`,
// `node list|recovery|kill` and `vdi check`. One request each; the replies are
// described in daemon/admin_server.h. A node started without --cluster refuses them
// (ENOTSUP), which reaches the user as the daemon's one-line message.
#include <algorithm>
#include <cstdio>

#include "admin/cli.h"
#include "common/admin_wire.h"

namespace kelpie::cli {
namespace {

using nlohmann::json;

constexpr uint32_t kMaxCopies = 8;
constexpr uint32_t kDefaultCopies = 3;
constexpr uint32_t kDefaultMinCopies = 2;
// A check reads every copy of every object it covers (and rewrites bad ones): on a
// large cluster that takes a long time, so the CLI waits far longer than for other
// requests. Ctrl-C stops waiting (the daemon finishes the check on its own).
constexpr int kCheckReplyTimeoutS = 6 * 3600;

// A decimal count from 1 to `max`, or `fallback` when the option was not given.
Result<uint32_t> parse_count(const std::optional<std::string>& text, const char* option,
                             uint32_t fallback, uint32_t max, const std::string& max_text) {
  if (!text) return fallback;
  uint64_t value = 0;
  bool digits = !text->empty() && text->size() <= 9 &&
                std::all_of(text->begin(), text->end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) value = std::stoull(*text);
  if (!digits || value < 1 || value > max) {
    return Status::error(EINVAL, std::string(option) + " must be from 1 to " + max_text +
                                     " (got '" + *text + "')");
  }
  return static_cast<uint32_t>(value);
}

struct Copies {
  uint32_t copies;
  uint32_t min_copies;
};

Result<Copies> parse_copies(const CliInvocation& cli) {
  Result<uint32_t> copies =
      parse_count(cli.copies, "--copies", kDefaultCopies, kMaxCopies, std::to_string(kMaxCopies));
  if (!copies) return copies.status();
  Result<uint32_t> min_copies =
      parse_count(cli.min_copies, "--min-copies", std::min(kDefaultMinCopies, *copies), *copies,
                  "the number of copies, " + std::to_string(*copies));
  if (!min_copies) return min_copies.status();
  return Copies{*copies, *min_copies};
}

// An optional unsigned count the reply may carry beside the summary's fields.
Result<uint64_t> omitted_count(const json& reply, const char* key, const std::string& address) {
  if (!reply.contains(key)) return uint64_t{0};
  Result<uint64_t> count = json_u64_field(reply, key);
  if (!count) return malformed_reply(address, count.status().message());
  return count;
}

// A ClusterSummary reply: prints it (as JSON with --json) and flushes.
Status show_cluster(const CliInvocation& cli, const Result<json>& reply) {
  if (!reply) return reply.status();
  Result<ClusterSummary> cluster = cluster_from_json(reply.value());
  if (!cluster) return malformed_reply(cli.address, cluster.status().message());
  Result<uint64_t> omitted = omitted_count(reply.value(), "history_omitted", cli.address);
  if (!omitted) return omitted.status();
  if (cli.json) {
    json document = cluster_to_json(*cluster);
    if (*omitted > 0) document["history_omitted"] = *omitted;
    print_json(document);
  } else {
    print_cluster_info(*cluster, *omitted);
  }
  return flush_stdout();
}

// The "nodes" array of a node.list / node.recovery reply.
template <typename T>
Result<std::vector<T>> decode_nodes(const Result<json>& reply, Result<T> (*from_json)(const json&),
                                    const std::string& address) {
  if (!reply) return reply.status();
  auto nodes = reply->find("nodes");
  if (nodes == reply->end() || !nodes->is_array()) {
    return malformed_reply(address, "field 'nodes' is missing or not an array");
  }
  std::vector<T> decoded;
  for (const json& entry : *nodes) {
    Result<T> value = from_json(entry);
    if (!value) return malformed_reply(address, value.status().message());
    decoded.push_back(std::move(*value));
  }
  return decoded;
}

template <typename T>
void print_json_list(const std::vector<T>& values, json (*to_json)(const T&)) {
  json list = json::array();
  for (const T& value : values) list.push_back(to_json(value));
  print_json(list);
}

std::string plural(uint64_t count, const char* noun) {
  return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

// cluster.check for one VDI or (vdi "") all of them.
Status run_check(const CliInvocation& cli, const std::string& vdi) {
  Result<json> reply = call_daemon(cli, "cluster.check", {{"vdi", vdi}, {"repair", cli.repair}},
                                   kCheckReplyTimeoutS);
  if (!reply) return reply.status();
  Result<CheckReport> report = check_report_from_json(*reply);
  if (!report) return malformed_reply(cli.address, report.status().message());
  Result<uint64_t> omitted = omitted_count(*reply, "issues_omitted", cli.address);
  if (!omitted) return omitted.status();
  uint64_t unrepaired = static_cast<uint64_t>(std::count_if(
      report->issues.begin(), report->issues.end(), [](const CheckIssue& issue) {
        return !issue.repaired;
      }));
  if (*omitted > 0) {
    // Only the counters cover the issues left out of the reply.
    const uint64_t total = report->issues.size() + *omitted;
    unrepaired = std::max(unrepaired, total - std::min(total, report->repaired));
  }
  if (cli.json) {
    json document = check_report_to_json(*report);
    if (*omitted > 0) document["issues_omitted"] = *omitted;
    print_json(document);
  } else {
    print_check_report(*report, *omitted, unrepaired);
  }
  if (Status flushed = flush_stdout(); !flushed) return flushed;
  if (unrepaired == 0) return Status::ok();
  std::string message = plural(unrepaired, "problem") + " not repaired";
  if (!cli.repair) message += " (run with --repair)";
  return Status::error(EIO, message);
}

}  // namespace

Status check_cluster_format(const CliInvocation& cli, Args) { return parse_copies(cli).status(); }

Status run_cluster_format(const CliInvocation& cli, Args) {
  Result<Copies> copies = parse_copies(cli);
  if (!copies) return copies.status();
  return show_cluster(cli, call_daemon(cli, "cluster.format",
                                       {{"copies", copies->copies},
                                        {"min_copies", copies->min_copies}}));
}

Status run_cluster_info(const CliInvocation& cli, Args) {
  return show_cluster(cli, call_daemon(cli, "cluster.info", json::object()));
}

Status run_cluster_check(const CliInvocation& cli, Args) { return run_check(cli, ""); }

Status run_vdi_check(const CliInvocation& cli, Args args) { return run_check(cli, args[0]); }

Status run_cluster_shutdown(const CliInvocation& cli, Args) {
  return call_daemon(cli, "cluster.shutdown", json::object()).status();
}

Status check_cluster_recover(const CliInvocation&, Args args) {
  if (args[0] != "force") {
    return Status::error(EINVAL, "unknown command 'cluster recover " + args[0] +
                                     "'; usage: kelpie cluster recover force");
  }
  return Status::ok();
}

Status run_cluster_recover(const CliInvocation& cli, Args) {
  return call_daemon(cli, "cluster.recover_force", json::object()).status();
}

Status run_node_list(const CliInvocation& cli, Args) {
  Result<std::vector<MemberSummary>> members =
      decode_nodes(call_daemon(cli, "node.list", json::object()), member_from_json, cli.address);
  if (!members) return members.status();
  if (cli.json) {
    print_json_list(*members, member_to_json);
  } else {
    print_member_table(*members);
  }
  return flush_stdout();
}

Status run_node_recovery(const CliInvocation& cli, Args) {
  Result<std::vector<RecoverySummary>> recoveries = decode_nodes(
      call_daemon(cli, "node.recovery", json::object()), recovery_from_json, cli.address);
  if (!recoveries) return recoveries.status();
  if (cli.json) {
    print_json_list(*recoveries, recovery_to_json);
  } else {
    print_recovery_table(*recoveries);
  }
  return flush_stdout();
}

Status run_node_kill(const CliInvocation& cli, Args args) {
  return call_daemon(cli, "node.kill", {{"id", args[0]}}).status();
}

}  // namespace kelpie::cli
