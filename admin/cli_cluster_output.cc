// Human output of the cluster commands (cli_cluster.cc); --json output is the
// summaries' JSON form from common/admin_wire.h.
#include <algorithm>
#include <cstdio>

#include "admin/cli.h"

namespace kelpie::cli {
namespace {

std::string or_dash(const std::string& text) { return text.empty() ? "-" : text; }

}  // namespace

std::string short_node_id(const std::string& id) { return or_dash(id.substr(0, 8)); }

void print_cluster_info(const ClusterSummary& cluster, uint64_t history_omitted) {
  print_key_values({
      {"driver", cluster.driver},
      {"status", cluster.status},
      {"cluster uuid", cluster.cluster_uuid.empty() ? "none (not formatted)" : cluster.cluster_uuid},
      {"epoch", std::to_string(cluster.epoch)},
      {"copies", std::to_string(cluster.copies)},
      {"min copies", std::to_string(cluster.min_copies)},
      {"zones", std::to_string(cluster.zones)},
      {"nodes", std::to_string(cluster.storage_nodes)},
      {"gateways", std::to_string(cluster.gateways)},
  });
  for (const std::string& warning : cluster.warnings) std::printf("warning: %s\n", warning.c_str());
  if (cluster.history.empty()) return;
  std::printf("\n");
  std::vector<std::vector<std::string>> rows = {{"EPOCH", "TIME", "REASON", "NODES"}};
  for (const EpochSummary& epoch : cluster.history) {
    // Floor division: a time before 1970 still shows the second it falls in.
    int64_t seconds = epoch.created_unix_ms / 1000 - (epoch.created_unix_ms % 1000 < 0 ? 1 : 0);
    rows.push_back({std::to_string(epoch.epoch), utc_time(seconds), or_dash(epoch.reason),
                    std::to_string(epoch.nodes.size())});
  }
  print_table(rows);
  if (history_omitted > 0) {
    std::printf("(%llu older epochs not shown)\n",
                static_cast<unsigned long long>(history_omitted));
  }
}

void print_member_table(const std::vector<MemberSummary>& members) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "ADDRESS", "ZONE", "VNODES", "CAPACITY", "USED", "OBJECTS", "STATUS"}};
  for (const MemberSummary& member : members) {
    rows.push_back({short_node_id(member.id), or_dash(member.address), or_dash(member.zone),
                    std::to_string(member.vnodes), human_bytes(member.capacity_bytes),
                    human_bytes(member.used_bytes), std::to_string(member.objects),
                    or_dash(member.status)});
  }
  print_table(rows);
}

void print_recovery_table(const std::vector<RecoverySummary>& recoveries) {
  std::vector<std::vector<std::string>> rows = {
      {"NODE", "EPOCH", "STATE", "DONE", "UNAVAILABLE", "RATE"}};
  for (const RecoverySummary& recovery : recoveries) {
    char rate[32];
    std::snprintf(rate, sizeof(rate), "%.1f MiB/s", recovery.rate_mib_s);
    rows.push_back({short_node_id(recovery.node), std::to_string(recovery.epoch),
                    or_dash(recovery.state),
                    std::to_string(recovery.done) + "/" + std::to_string(recovery.to_recover),
                    std::to_string(recovery.unavailable), rate});
  }
  print_table(rows);
}

void print_check_report(const CheckReport& report, uint64_t issues_omitted, uint64_t unrepaired) {
  const std::string counts = std::to_string(report.objects_checked) + " objects, " +
                             std::to_string(report.copies_checked) + " copies checked";
  const uint64_t problems = report.issues.size() + issues_omitted;
  if (problems == 0) {
    std::printf("%s: no problems\n", counts.c_str());
    return;
  }
  std::printf("%s\n", counts.c_str());
  for (const CheckIssue& issue : report.issues) {
    std::printf("%s %s %s%s\n", or_dash(issue.object).c_str(), short_node_id(issue.node).c_str(),
                or_dash(issue.problem).c_str(), issue.repaired ? " repaired" : "");
  }
  if (issues_omitted > 0) {
    std::printf("(%llu more problems not shown)\n",
                static_cast<unsigned long long>(issues_omitted));
  }
  std::printf("%llu problems, %llu repaired\n", static_cast<unsigned long long>(problems),
              static_cast<unsigned long long>(problems - std::min(problems, unrepaired)));
}

}  // namespace kelpie::cli
