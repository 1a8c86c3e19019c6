// The admin wire format (common/admin_wire.h): HOST:PORT parsing and the JSON
// round trips of every summary, with the exact error for a missing or mistyped field.
#include "common/admin_wire.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "test/unit/fake_node_control.h"

namespace kelpie {
namespace {

using nlohmann::json;

TEST(AdminWire, HostPortParsing) {
  Result<HostPort> v4 = parse_host_port("127.0.0.1:7000");
  ASSERT_TRUE(v4.is_ok());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 7000);
  Result<HostPort> v6 = parse_host_port("[::1]:0");
  ASSERT_TRUE(v6.is_ok());
  EXPECT_EQ(v6->host, "::1");
  for (const char* bad : {"", "7000", ":7000", "host:", "host:70000", "host:7x", "::1:7000",
                          "[::1:7000", "host:123456"}) {
    EXPECT_EQ(parse_host_port(bad).status().code(), EINVAL) << bad;
  }
}

TEST(AdminWire, SummaryJsonRoundTripAndMistypedFields) {
  VdiSummary vdi{.name = "d@t",
                 .id = 3,
                 .size_bytes = uint64_t{1} << 40,
                 .object_size_bytes = 1 << 26,
                 .allocated_objects = 5,
                 .used_bytes = uint64_t{5} << 26,
                 .created_unix_s = -1,
                 .attached_connections = 2,
                 .tag = "t",
                 .read_only = true,
                 .parent_id = 2,
                 .family_id = 1,
                 .own_bytes = uint64_t{1} << 26,
                 .shared_bytes = uint64_t{4} << 26,
                 .restored_from = "uuid:9",
                 .object_count = 16384};
  Result<VdiSummary> back = vdi_from_json(vdi_to_json(vdi));
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->size_bytes, vdi.size_bytes);
  EXPECT_EQ(back->created_unix_s, -1);
  EXPECT_EQ(back->attached_connections, 2u);
  EXPECT_EQ(back->name, "d@t");
  EXPECT_EQ(back->tag, "t");
  EXPECT_TRUE(back->read_only);
  EXPECT_EQ(back->parent_id, 2u);
  EXPECT_EQ(back->family_id, 1u);
  EXPECT_EQ(back->own_bytes, uint64_t{1} << 26);
  EXPECT_EQ(back->shared_bytes, uint64_t{4} << 26);
  EXPECT_EQ(back->restored_from, "uuid:9");
  EXPECT_EQ(back->object_count, 16384u);

  json wrong = vdi_to_json(vdi);
  wrong["id"] = uint64_t{1} << 33;
  EXPECT_EQ(vdi_from_json(wrong).status().code(), EBADMSG);
  wrong = vdi_to_json(vdi);
  wrong.erase("used_bytes");
  EXPECT_EQ(vdi_from_json(wrong).status().message(), "field 'used_bytes' is missing");
  wrong = vdi_to_json(vdi);
  wrong["read_only"] = 1;
  EXPECT_EQ(vdi_from_json(wrong).status().message(), "field 'read_only' must be true or false");
  wrong = vdi_to_json(vdi);
  wrong.erase("restored_from");
  EXPECT_EQ(vdi_from_json(wrong).status().message(), "field 'restored_from' is missing");
  EXPECT_EQ(vdi_from_json(json::array()).status().code(), EBADMSG);
}

TEST(AdminWire, BackupPlanJson) {
  BackupPlan plan{.to_identity = "uuid:4",
                  .from_identity = "uuid:2",
                  .size_bytes = uint64_t{1} << 56,
                  .object_size_bytes = 4 << 20,
                  .extents = {{0, 4 << 20}, {(uint64_t{1} << 56) - 512, 512}}};
  json encoded = backup_plan_to_json(plan);
  EXPECT_EQ(encoded["extents"][1], json::array({(uint64_t{1} << 56) - 512, 512}));
  Result<BackupPlan> back = backup_plan_from_json(json::parse(dump_json(encoded)));
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->to_identity, plan.to_identity);
  EXPECT_EQ(back->from_identity, plan.from_identity);
  EXPECT_EQ(back->size_bytes, plan.size_bytes);
  EXPECT_EQ(back->object_size_bytes, plan.object_size_bytes);
  EXPECT_EQ(back->extents, plan.extents);
  json signed_extents = encoded;
  signed_extents["extents"] = json::array({json::array({0, 512})});  // int, not uint64_t
  ASSERT_TRUE(signed_extents["extents"][0][0].is_number_integer());
  Result<BackupPlan> in_memory = backup_plan_from_json(signed_extents);
  ASSERT_TRUE(in_memory.is_ok()) << "signed integers that are not negative are fine";
  EXPECT_EQ(in_memory->extents.size(), 1u);

  for (const char* bad : {R"([[0]])", R"([[0, 1, 2]])", R"([[0, -1]])", R"([["0", 1]])",
                          R"([0, 1])", R"({"a": 1})", R"([[0.5, 1]])"}) {
    json wrong = encoded;
    wrong["extents"] = json::parse(bad);
    EXPECT_EQ(backup_plan_from_json(wrong).status().code(), EBADMSG) << bad;
  }
  json wrong = encoded;
  wrong.erase("to_identity");
  EXPECT_EQ(backup_plan_from_json(wrong).status().message(), "field 'to_identity' is missing");
  wrong = encoded;
  wrong["object_size_bytes"] = uint64_t{1} << 32;
  EXPECT_EQ(backup_plan_from_json(wrong).status().message(),
            "field 'object_size_bytes' is out of range");
}

TEST(AdminWire, ClusterJsonRoundTripAndKeys) {
  ClusterSummary cluster = canned_cluster();
  json encoded = json::parse(dump_json(cluster_to_json(cluster)));
  std::vector<std::string> keys;
  for (const auto& [key, value] : encoded.items()) keys.push_back(key);
  std::ranges::sort(keys);
  EXPECT_EQ(keys, (std::vector<std::string>{"cluster_uuid", "copies", "driver", "epoch",
                                            "gateways", "history", "min_copies", "status",
                                            "storage_nodes", "warnings", "zones"}));
  EXPECT_EQ(encoded["history"][1],
            json::parse(R"({"epoch": 4, "created_unix_ms": 1700000100000, "reason": "join n3",
                            "nodes": ["n1", "n2", "n3"]})"));
  Result<ClusterSummary> back = cluster_from_json(encoded);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->warnings, cluster.warnings);
  ASSERT_EQ(back->history.size(), 2u);
  EXPECT_EQ(back->history[1].nodes, cluster.history[1].nodes);
  EXPECT_EQ(back->history[0].created_unix_ms, 1700000000123);
  EXPECT_EQ(cluster_to_json(*back), cluster_to_json(cluster));

  json wrong = encoded;
  wrong["warnings"] = json::array({"a", 1});
  EXPECT_EQ(cluster_from_json(wrong).status().message(), "field 'warnings' must hold strings");
  wrong = encoded;
  wrong["history"][1].erase("reason");
  EXPECT_EQ(cluster_from_json(wrong).status().message(),
            "field 'history' element 1: field 'reason' is missing");
  wrong = encoded;
  wrong["history"] = json::object();
  EXPECT_EQ(cluster_from_json(wrong).status().message(), "field 'history' must be an array");
  wrong = encoded;
  wrong["copies"] = uint64_t{1} << 32;
  EXPECT_EQ(cluster_from_json(wrong).status().message(), "field 'copies' is out of range");
}

TEST(AdminWire, MemberRecoveryCheckJsonRoundTrip) {
  for (const MemberSummary& member : canned_members()) {
    json encoded = json::parse(dump_json(member_to_json(member)));
    EXPECT_EQ(encoded.size(), 11u);
    Result<MemberSummary> back = member_from_json(encoded);
    ASSERT_TRUE(back.is_ok()) << back.status().to_string();
    EXPECT_EQ(member_to_json(*back), member_to_json(member));
    encoded["gateway"] = "no";
    EXPECT_EQ(member_from_json(encoded).status().message(), "field 'gateway' must be true or false");
  }

  RecoverySummary recovery{.node = "n", .epoch = 9, .state = "done", .to_recover = 5, .done = 5,
                           .rate_mib_s = 0.25};
  json encoded = json::parse(dump_json(recovery_to_json(recovery)));
  EXPECT_EQ(encoded, json::parse(R"({"node": "n", "epoch": 9, "state": "done",
                                     "to_recover": 5, "done": 5, "unavailable": 0,
                                     "rate_mib_s": 0.25})"));
  Result<RecoverySummary> back = recovery_from_json(encoded);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_DOUBLE_EQ(back->rate_mib_s, 0.25);
  encoded["unavailable"] = 7;
  ASSERT_EQ(recovery_from_json(encoded)->unavailable, 7u);
  encoded.erase("unavailable");
  ASSERT_TRUE(recovery_from_json(encoded).is_ok()) << "a daemon without the field reports none";
  EXPECT_EQ(recovery_from_json(encoded)->unavailable, 0u);
  encoded["rate_mib_s"] = 3;
  ASSERT_TRUE(recovery_from_json(encoded).is_ok()) << "an integer rate is a number too";
  encoded["rate_mib_s"] = "fast";
  EXPECT_EQ(recovery_from_json(encoded).status().message(), "field 'rate_mib_s' must be a number");
  recovery.rate_mib_s = std::numeric_limits<double>::quiet_NaN();
  Result<RecoverySummary> not_a_number =
      recovery_from_json(json::parse(dump_json(recovery_to_json(recovery))));
  ASSERT_TRUE(not_a_number.is_ok()) << "NaN is sent as 0, not as null";
  EXPECT_EQ(not_a_number->rate_mib_s, 0);

  CheckReport report = canned_report();
  report.issues[1].repaired = true;
  report.repaired = 1;
  json check = json::parse(dump_json(check_report_to_json(report)));
  EXPECT_EQ(check["issues"][1],
            json::parse(R"({"object": "00000001000000a1", "vdi": "disk", "node": "",
                            "problem": "differs", "repaired": true})"));
  Result<CheckReport> report_back = check_report_from_json(check);
  ASSERT_TRUE(report_back.is_ok()) << report_back.status().to_string();
  EXPECT_EQ(check_report_to_json(*report_back), check_report_to_json(report));
  check["issues"][0].erase("problem");
  EXPECT_EQ(check_report_from_json(check).status().message(),
            "field 'issues' element 0: field 'problem' is missing");
  EXPECT_EQ(check_report_from_json(json::array()).status().code(), EBADMSG);
}

}  // namespace
}  // namespace kelpie
