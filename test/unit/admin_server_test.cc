// AdminServer driven over real TCP by AdminClient (and by raw frames for the
// malformed cases), against an in-memory NodeControl (fake_node_control.h). The JSON
// encoding of the replies is tested on its own in admin_wire_test.cc.
#include "daemon/admin_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <tuple>
#include <vector>

#include "admin/admin_client.h"
#include "common/admin_wire.h"
#include "common/bytes.h"
#include "test/unit/fake_node_control.h"

namespace kelpie {
namespace {

using nlohmann::json;

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.start().is_ok());
    address_ = "127.0.0.1:" + std::to_string(server_.bound_port());
  }

  AdminClient connect() {
    Result<AdminClient> client = AdminClient::connect(address_);
    KELPIE_ASSERT(client.is_ok());
    return std::move(client.value());
  }

  // Sends raw bytes on a fresh connection's socket.
  static void send_raw(int fd, const std::string& bytes) {
    ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  static std::string frame(const std::string& body, uint32_t length) {
    uint8_t header[4];
    put_be32(header, length);
    return std::string(reinterpret_cast<char*>(header), 4) + body;
  }
  static std::string frame(const std::string& body) {
    return frame(body, static_cast<uint32_t>(body.size()));
  }

  void expect_still_serving() {
    AdminClient client = connect();
    Result<json> reply = client.call("node.info");
    ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
    EXPECT_EQ((*reply)["version"], "0.1.0");
  }

  FakeNodeControl control_;
  AdminServer server_{control_, "127.0.0.1:0"};
  std::string address_;
};

TEST_F(AdminServerTest, CreateInfoListResizeDelete) {
  AdminClient client = connect();
  Result<json> created = client.call(
      "vdi.create", {{"name", "a"}, {"size", uint64_t{10} << 30}, {"object_shift", 22}});
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();
  EXPECT_EQ((*created)["ok"], true);
  Result<VdiSummary> vdi = vdi_from_json(*created);
  ASSERT_TRUE(vdi.is_ok()) << vdi.status().to_string();
  EXPECT_EQ(vdi->name, "a");
  EXPECT_EQ(vdi->size_bytes, uint64_t{10} << 30);
  EXPECT_EQ(vdi->object_size_bytes, 4u << 20);

  ASSERT_TRUE(client.call("vdi.create", {{"name", "b"}, {"size", 512}}).is_ok())
      << "object_shift is optional";
  ASSERT_TRUE(client.call("vdi.resize", {{"name", "a"}, {"size", 1 << 20}}).is_ok());
  Result<json> info = client.call("vdi.info", {{"name", "a"}});
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ((*info)["size_bytes"], 1 << 20);

  Result<json> list = client.call("vdi.list");
  ASSERT_TRUE(list.is_ok());
  ASSERT_EQ((*list)["vdis"].size(), 2u);
  EXPECT_EQ((*list)["vdis"][1]["name"], "b");
  EXPECT_EQ((*list)["vdis"][1]["object_size_bytes"], 4 << 20);

  ASSERT_TRUE(client.call("vdi.delete", {{"name", "a"}}).is_ok());
  EXPECT_EQ(client.call("vdi.info", {{"name", "a"}}).status().code(), ENOENT);
}

TEST_F(AdminServerTest, SnapshotCloneRollback) {
  AdminClient client = connect();
  Result<json> created = client.call("vdi.create", {{"name", "disk"}, {"size", 1 << 20}});
  ASSERT_TRUE(created.is_ok());
  const uint32_t first_id = (*created)["id"];

  Result<json> tagged = client.call("vdi.snapshot", {{"name", "disk"}, {"tag", "a"}});
  ASSERT_TRUE(tagged.is_ok()) << tagged.status().to_string();
  Result<VdiSummary> snapshot = vdi_from_json(*tagged);
  ASSERT_TRUE(snapshot.is_ok()) << snapshot.status().to_string();
  EXPECT_EQ(snapshot->name, "disk@a");
  EXPECT_EQ(snapshot->tag, "a");
  EXPECT_TRUE(snapshot->read_only);
  EXPECT_EQ(snapshot->id, first_id);
  Result<json> automatic = client.call("vdi.snapshot", {{"name", "disk"}});
  ASSERT_TRUE(automatic.is_ok()) << "tag is optional";
  EXPECT_EQ((*automatic)["name"], "disk@1");
  Result<json> empty_tag = client.call("vdi.snapshot", {{"name", "disk"}, {"tag", ""}});
  ASSERT_TRUE(empty_tag.is_ok());
  EXPECT_EQ((*empty_tag)["name"], "disk@2");
  Status duplicate = client.call("vdi.snapshot", {{"name", "disk"}, {"tag", "a"}}).status();
  EXPECT_EQ(duplicate.code(), EEXIST);
  EXPECT_EQ(duplicate.message(), "snapshot 'disk@a' already exists");

  Result<json> cloned = client.call("vdi.clone", {{"snapshot", "disk@a"}, {"new_name", "c"}});
  ASSERT_TRUE(cloned.is_ok()) << cloned.status().to_string();
  Result<VdiSummary> clone = vdi_from_json(*cloned);
  ASSERT_TRUE(clone.is_ok());
  EXPECT_EQ(clone->name, "c");
  EXPECT_FALSE(clone->read_only);
  EXPECT_EQ(clone->parent_id, snapshot->id);
  EXPECT_EQ(clone->family_id, first_id);
  Status not_snapshot =
      client.call("vdi.clone", {{"snapshot", "disk"}, {"new_name", "d"}}).status();
  EXPECT_EQ(not_snapshot.code(), EINVAL);
  EXPECT_EQ(not_snapshot.message(), "'disk' is not a snapshot");

  Result<json> rolled = client.call("vdi.rollback", {{"snapshot", "disk@a"}});
  ASSERT_TRUE(rolled.is_ok()) << rolled.status().to_string();
  EXPECT_EQ((*rolled)["name"], "disk");
  EXPECT_EQ((*rolled)["parent_id"], snapshot->id);
  control_.set_attached("disk", 1);
  EXPECT_EQ(client.call("vdi.rollback", {{"snapshot", "disk@a"}}).status().code(), EBUSY);
  EXPECT_EQ(client.call("vdi.rollback", {{"snapshot", "disk@zz"}}).status().code(), ENOENT);

  Result<json> list = client.call("vdi.list");
  ASSERT_TRUE(list.is_ok());
  ASSERT_EQ((*list)["vdis"].size(), 5u);  // c, disk, disk@1, disk@2, disk@a
  for (const json& entry : (*list)["vdis"]) {
    Result<VdiSummary> vdi = vdi_from_json(entry);
    ASSERT_TRUE(vdi.is_ok()) << vdi.status().to_string();
    EXPECT_EQ(vdi->read_only, !vdi->tag.empty()) << vdi->name;
  }
  ASSERT_TRUE(client.call("vdi.delete", {{"name", "disk@1"}}).is_ok());
  ASSERT_TRUE(client.call("vdi.delete", {{"name", "disk"}}).is_ok());
  Result<json> after = client.call("vdi.list");
  ASSERT_TRUE(after.is_ok());
  ASSERT_EQ((*after)["vdis"].size(), 1u) << "deleting NAME deletes its snapshots";
  EXPECT_EQ((*after)["vdis"][0]["name"], "c");
}

TEST_F(AdminServerTest, LifecycleRequestsCheckTheirArguments) {
  AdminClient client = connect();
  for (const auto& [op, arguments] : std::vector<std::pair<const char*, json>>{
           {"vdi.snapshot", json::object()},
           {"vdi.snapshot", {{"name", "a"}, {"tag", 5}}},
           {"vdi.clone", {{"snapshot", "a@b"}}},
           {"vdi.clone", {{"new_name", "x"}}},
           {"vdi.rollback", json::object()},
           {"vdi.backup_plan", {{"from", "a@b"}}},
           {"vdi.backup_plan", {{"to", "a@b"}, {"from", false}}},
           {"vdi.backup_plan", {{"to", "a@b"}, {"first_extent", -1}}},
           {"vdi.set_restored_from", {{"name", "a"}}},
           {"vdi.set_restored_from", {{"identity", "u:1"}}},
       }) {
    Status status = client.call(op, arguments).status();
    EXPECT_EQ(status.code(), EINVAL) << op << " " << arguments.dump();
    EXPECT_TRUE(status.message().starts_with("invalid request: field '")) << status.message();
  }
}

TEST_F(AdminServerTest, BackupPlanFullAndDifferential) {
  AdminClient client = connect();
  ASSERT_TRUE(client.call("vdi.create", {{"name", "disk"}, {"size", 64 << 20}}).is_ok());
  Result<json> one = client.call("vdi.snapshot", {{"name", "disk"}, {"tag", "one"}});
  Result<json> two = client.call("vdi.snapshot", {{"name", "disk"}, {"tag", "two"}});
  ASSERT_TRUE(one.is_ok() && two.is_ok());
  control_.set_extents((*one)["id"], {{0, 4 << 20}});
  control_.set_extents((*two)["id"], {{0, 4 << 20}, {8 << 20, 8 << 20}});

  Result<json> full_reply = client.call("vdi.backup_plan", {{"to", "disk@two"}, {"from", ""}});
  ASSERT_TRUE(full_reply.is_ok()) << full_reply.status().to_string();
  EXPECT_EQ((*full_reply)["extent_count"], 2);
  EXPECT_EQ((*full_reply)["first_extent"], 0);
  Result<BackupPlan> full = backup_plan_from_json(*full_reply);
  ASSERT_TRUE(full.is_ok()) << full.status().to_string();
  EXPECT_EQ(full->to_identity, "u:" + std::to_string((*two)["id"].get<uint32_t>()));
  EXPECT_EQ(full->from_identity, "");
  EXPECT_EQ(full->size_bytes, uint64_t{64} << 20);
  EXPECT_EQ(full->object_size_bytes, 4u << 20);
  using Extents = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(full->extents, (Extents{{0, 4 << 20}, {8 << 20, 8 << 20}}));
  EXPECT_EQ((*full_reply)["extents"], json::parse("[[0, 4194304], [8388608, 8388608]]"))
      << "extents are [offset, length] pairs";
  ASSERT_TRUE(client.call("vdi.backup_plan", {{"to", "disk@two"}}).is_ok()) << "from is optional";

  Result<json> diff_reply =
      client.call("vdi.backup_plan", {{"to", "disk@two"}, {"from", "disk@one"}});
  ASSERT_TRUE(diff_reply.is_ok()) << diff_reply.status().to_string();
  Result<BackupPlan> diff = backup_plan_from_json(*diff_reply);
  ASSERT_TRUE(diff.is_ok());
  EXPECT_EQ(diff->from_identity, "u:" + std::to_string((*one)["id"].get<uint32_t>()));
  EXPECT_EQ(diff->extents, (Extents{{8 << 20, 8 << 20}}));

  EXPECT_EQ(client.call("vdi.backup_plan", {{"to", "disk"}}).status().message(),
            "'disk' is not a snapshot");
  EXPECT_EQ(client.call("vdi.backup_plan", {{"to", "disk@nope"}}).status().code(), ENOENT);
  Status past = client.call("vdi.backup_plan", {{"to", "disk@two"}, {"first_extent", 3}}).status();
  EXPECT_EQ(past.code(), EINVAL);
  EXPECT_EQ(past.message(), "first_extent 3 is past the plan's 2 extents");
}

TEST_F(AdminServerTest, LargeBackupPlanComesInPages) {
  AdminClient client = connect();
  ASSERT_TRUE(client.call("vdi.create", {{"name", "big"}, {"size", uint64_t{1} << 50}}).is_ok());
  Result<json> snapshot = client.call("vdi.snapshot", {{"name", "big"}, {"tag", "s"}});
  ASSERT_TRUE(snapshot.is_ok());
  // Every other object of a 1 PiB VDI at the largest offsets the JSON can hold: the
  // whole plan would not fit in one admin message.
  const size_t total = 2 * kMaxBackupPlanExtentsPerReply + 5;
  std::vector<std::pair<uint64_t, uint64_t>> extents;
  for (size_t i = 0; i < total; ++i) {
    extents.emplace_back((uint64_t{1} << 49) + (uint64_t{8} << 20) * i, uint64_t{4} << 20);
  }
  control_.set_extents((*snapshot)["id"], extents);
  std::vector<std::pair<uint64_t, uint64_t>> collected;
  while (collected.size() < total) {
    Result<json> page =
        client.call("vdi.backup_plan", {{"to", "big@s"}, {"first_extent", collected.size()}});
    ASSERT_TRUE(page.is_ok()) << page.status().to_string();
    EXPECT_EQ((*page)["extent_count"], total);
    EXPECT_EQ((*page)["first_extent"], collected.size());
    Result<BackupPlan> plan = backup_plan_from_json(*page);
    ASSERT_TRUE(plan.is_ok());
    ASSERT_FALSE(plan->extents.empty());
    ASSERT_LE(plan->extents.size(), kMaxBackupPlanExtentsPerReply);
    collected.insert(collected.end(), plan->extents.begin(), plan->extents.end());
  }
  EXPECT_EQ(collected, extents);
  Result<json> end = client.call("vdi.backup_plan", {{"to", "big@s"}, {"first_extent", total}});
  ASSERT_TRUE(end.is_ok());
  EXPECT_TRUE((*end)["extents"].empty());
}

TEST_F(AdminServerTest, SetRestoredFrom) {
  AdminClient client = connect();
  ASSERT_TRUE(client.call("vdi.create", {{"name", "disk"}, {"size", 512}}).is_ok());
  Result<json> fresh = client.call("vdi.info", {{"name", "disk"}});
  ASSERT_TRUE(fresh.is_ok());
  EXPECT_EQ((*fresh)["restored_from"], "");
  Result<json> reply =
      client.call("vdi.set_restored_from", {{"name", "disk"}, {"identity", "u:7"}});
  ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
  EXPECT_EQ(*reply, json({{"ok", true}}));
  Result<json> info = client.call("vdi.info", {{"name", "disk"}});
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ((*info)["restored_from"], "u:7");
  Status missing =
      client.call("vdi.set_restored_from", {{"name", "nope"}, {"identity", "u:7"}}).status();
  EXPECT_EQ(missing.code(), ENOENT);
  EXPECT_EQ(missing.message(), "VDI 'nope' not found");
}

TEST_F(AdminServerTest, NodeInfoCarriesEveryField) {
  AdminClient client = connect();
  Result<json> reply = client.call("node.info");
  ASSERT_TRUE(reply.is_ok());
  Result<NodeSummary> node = node_from_json(*reply);
  ASSERT_TRUE(node.is_ok()) << node.status().to_string();
  EXPECT_EQ(node->nbd_unix, "/d/nbd.sock");
  EXPECT_EQ(node->capacity_bytes, uint64_t{1} << 40);
  EXPECT_EQ(node->uptime_s, 99u);
}

TEST_F(AdminServerTest, NodeControlErrorsPassThrough) {
  AdminClient client = connect();
  Status missing = client.call("vdi.info", {{"name", "nope"}}).status();
  EXPECT_EQ(missing.code(), ENOENT);
  EXPECT_EQ(missing.message(), "VDI 'nope' not found");
  ASSERT_TRUE(client.call("vdi.create", {{"name", "x"}, {"size", 512}}).is_ok());
  Status exists = client.call("vdi.create", {{"name", "x"}, {"size", 512}}).status();
  EXPECT_EQ(exists.code(), EEXIST);
  EXPECT_EQ(exists.message(), "VDI 'x' already exists");
  EXPECT_EQ(client.call("vdi.delete", {{"name", "nope"}}).status().code(), ENOENT);
}

TEST_F(AdminServerTest, UnknownOpAndBadArguments) {
  AdminClient client = connect();
  Status unknown = client.call("vdi.frobnicate").status();
  EXPECT_EQ(unknown.code(), EINVAL);
  EXPECT_EQ(unknown.message(), "unknown operation 'vdi.frobnicate'");
  EXPECT_EQ(client.call("vdi.create", {{"name", "x"}}).status().code(), EINVAL);
  EXPECT_EQ(client.call("vdi.create", {{"name", 7}, {"size", 512}}).status().code(), EINVAL);
  EXPECT_EQ(client.call("vdi.create", {{"name", "x"}, {"size", -512}}).status().code(), EINVAL);
  EXPECT_EQ(client.call("vdi.resize", {{"name", "x"}, {"size", "1G"}}).status().code(), EINVAL);
  EXPECT_EQ(client.call("vdi.info").status().code(), EINVAL);
}

TEST_F(AdminServerTest, ExceptionBecomesErrorReply) {
  AdminClient client = connect();
  Status status = client.call("vdi.info", {{"name", "explode"}}).status();
  EXPECT_EQ(status.code(), EIO);
  EXPECT_TRUE(client.call("vdi.list").is_ok()) << "the connection survives";
}

TEST_F(AdminServerTest, MalformedJsonGetsErrorAndConnectionStaysUsable) {
  AdminClient client = connect();
  for (const std::string& body : {std::string("{not json"), std::string("[1,2]"), std::string(""),
                                  std::string("\"op\""), std::string("{\"op\": \"\xff\xfe\"}")}) {
    send_raw(client.fd(), frame(body));
    Result<json> reply = recv_admin_message(client.fd());
    ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
    EXPECT_EQ((*reply)["ok"], false);
    EXPECT_EQ((*reply)["errno"], EBADMSG) << body;
  }
  send_raw(client.fd(), frame("{\"op\": 5}"));
  Result<json> reply = recv_admin_message(client.fd());
  ASSERT_TRUE(reply.is_ok());
  EXPECT_EQ((*reply)["errno"], EINVAL);
  EXPECT_TRUE(client.call("vdi.list").is_ok());
}

TEST_F(AdminServerTest, OversizedFrameIsRefusedAndServerCarriesOn) {
  AdminClient client = connect();
  send_raw(client.fd(), frame(std::string(100, 'x'), kMaxAdminMessageBytes + 1));
  Result<json> reply = recv_admin_message(client.fd());
  if (reply.is_ok()) {
    EXPECT_EQ((*reply)["errno"], EMSGSIZE);
  }
  // Either way the connection is over.
  Result<json> after = recv_admin_message(client.fd());
  EXPECT_FALSE(after.is_ok());
  AdminClient other = connect();
  send_raw(other.fd(), frame("", 0xffffffffu));
  Result<json> other_reply = recv_admin_message(other.fd());
  if (other_reply.is_ok()) {
    EXPECT_EQ((*other_reply)["errno"], EMSGSIZE);
  }
  expect_still_serving();
}

TEST_F(AdminServerTest, TruncatedFramesAndAbruptClosesDoNotHurt) {
  {
    AdminClient client = connect();
    send_raw(client.fd(), std::string("\0\0", 2));
  }
  {
    AdminClient client = connect();
    send_raw(client.fd(), frame("{\"op\": \"node.info\"", 400));
  }
  {
    AdminClient client = connect();
    send_raw(client.fd(), frame("{\"op\": \"vdi.list\"}"));  // closes without reading
  }
  expect_still_serving();
}

TEST_F(AdminServerTest, ManyRequestsOnOneConnection) {
  AdminClient client = connect();
  for (int i = 0; i < 200; ++i) {
    // Not "v" + std::to_string(i): GCC 12 -O3 warns falsely (-Wrestrict) about that.
    std::string name = std::to_string(i);
    name.insert(name.begin(), 'v');
    ASSERT_TRUE(client.call("vdi.create", {{"name", name}, {"size", 512 * (i + 1)}}).is_ok());
    Result<json> info = client.call("vdi.info", {{"name", name}});
    ASSERT_TRUE(info.is_ok());
    EXPECT_EQ((*info)["size_bytes"], 512 * (i + 1));
  }
  Result<json> list = client.call("vdi.list");
  ASSERT_TRUE(list.is_ok());
  EXPECT_EQ((*list)["vdis"].size(), 200u);
}

TEST_F(AdminServerTest, ConnectionCapRefusesTheNextOne) {
  std::vector<AdminClient> clients;
  for (size_t i = 0; i < AdminServer::kMaxConnections; ++i) {
    clients.push_back(connect());
    ASSERT_TRUE(clients.back().call("node.info").is_ok());  // being served
  }
  AdminClient extra = connect();
  Status refused = extra.call("node.info").status();
  // The server closes right after its EBUSY reply; a RST racing the reply may win.
  EXPECT_TRUE(refused.code() == EBUSY || refused.code() == ECONNRESET) << refused.to_string();
  clients.pop_back();
  // The slot frees once the server notices the close; poll with a deadline.
  bool served = false;
  for (int attempt = 0; attempt < 500 && !served; ++attempt) {
    served = connect().call("node.info").is_ok();
    if (!served) ::usleep(10'000);
  }
  EXPECT_TRUE(served);
}

TEST_F(AdminServerTest, StopWithClientsConnectedReturns) {
  AdminClient idle = connect();
  AdminClient busy = connect();
  ASSERT_TRUE(busy.call("node.info").is_ok());
  server_.stop();
  EXPECT_FALSE(busy.call("node.info").is_ok());
  Status refused = AdminClient::connect(address_).status();
  EXPECT_EQ(refused.code(), ECONNREFUSED);
  EXPECT_EQ(refused.message(), "cannot reach kelpied at " + address_ + ": Connection refused");
}

TEST_F(AdminServerTest, ClusterInfoAndFormat) {
  AdminClient client = connect();
  Result<json> info = client.call("cluster.info");
  ASSERT_TRUE(info.is_ok()) << info.status().to_string();
  EXPECT_EQ((*info)["history_omitted"], 0);
  EXPECT_EQ((*info)["cluster_uuid"], "c0ffee00-0000-4000-8000-000000000000");
  EXPECT_EQ((*info)["history"][0]["created_unix_ms"], 1700000000123);
  Result<ClusterSummary> cluster = cluster_from_json(*info);
  ASSERT_TRUE(cluster.is_ok()) << cluster.status().to_string();
  EXPECT_EQ(cluster_to_json(*cluster), cluster_to_json(canned_cluster()));

  Result<json> formatted = client.call("cluster.format", {{"copies", 2}, {"min_copies", 1}});
  ASSERT_TRUE(formatted.is_ok()) << formatted.status().to_string();
  EXPECT_EQ((*formatted)["copies"], 2);
  EXPECT_EQ((*formatted)["min_copies"], 1);
  ASSERT_TRUE(cluster_from_json(*formatted).is_ok());
  Status refused = client.call("cluster.format", {{"copies", 9}, {"min_copies", 1}}).status();
  EXPECT_EQ(refused.code(), EINVAL) << "NodeControl's answer passes through";
  EXPECT_EQ(refused.message(), "invalid copies");
  EXPECT_EQ(control_.cluster_calls(),
            (std::vector<std::string>{"info", "format 2 1", "format 9 1"}));
}

TEST_F(AdminServerTest, NodeListRecoveryKill) {
  AdminClient client = connect();
  Result<json> list = client.call("node.list");
  ASSERT_TRUE(list.is_ok()) << list.status().to_string();
  ASSERT_EQ((*list)["nodes"].size(), 2u);
  std::vector<MemberSummary> want = canned_members();
  for (size_t i = 0; i < want.size(); ++i) {
    Result<MemberSummary> member = member_from_json((*list)["nodes"][i]);
    ASSERT_TRUE(member.is_ok()) << member.status().to_string();
    EXPECT_EQ(member_to_json(*member), member_to_json(want[i]));
  }
  EXPECT_EQ((*list)["nodes"][1]["gateway"], true);

  Result<json> recovery = client.call("node.recovery");
  ASSERT_TRUE(recovery.is_ok()) << recovery.status().to_string();
  ASSERT_EQ((*recovery)["nodes"].size(), 1u);
  Result<RecoverySummary> progress = recovery_from_json((*recovery)["nodes"][0]);
  ASSERT_TRUE(progress.is_ok()) << progress.status().to_string();
  EXPECT_EQ(progress->state, "recovering");
  EXPECT_EQ(progress->done, 30u);
  EXPECT_EQ(progress->to_recover, 120u);
  EXPECT_DOUBLE_EQ(progress->rate_mib_s, 12.5);

  Result<json> killed = client.call("node.kill", {{"id", "0f1e2d3c"}});
  ASSERT_TRUE(killed.is_ok()) << killed.status().to_string();
  EXPECT_EQ(*killed, json({{"ok", true}}));
  Status unknown = client.call("node.kill", {{"id", "ffff"}}).status();
  EXPECT_EQ(unknown.code(), ENOENT);
  EXPECT_EQ(unknown.message(), "node 'ffff' not found");
  EXPECT_EQ(control_.cluster_calls(),
            (std::vector<std::string>{"list", "recovery", "kill 0f1e2d3c", "kill ffff"}));
}

TEST_F(AdminServerTest, ShutdownAndRecoverForce) {
  AdminClient client = connect();
  Result<json> shutdown = client.call("cluster.shutdown");
  ASSERT_TRUE(shutdown.is_ok()) << shutdown.status().to_string();
  EXPECT_EQ(*shutdown, json({{"ok", true}}));
  Result<json> recover = client.call("cluster.recover_force");
  ASSERT_TRUE(recover.is_ok()) << recover.status().to_string();
  EXPECT_EQ(*recover, json({{"ok", true}}));
  EXPECT_EQ(control_.cluster_calls(), (std::vector<std::string>{"shutdown", "recover_force"}));
}

TEST_F(AdminServerTest, ClusterCheck) {
  AdminClient client = connect();
  ASSERT_TRUE(client.call("vdi.create", {{"name", "disk"}, {"size", 512}}).is_ok());
  Result<json> all = client.call("cluster.check", {{"vdi", ""}, {"repair", false}});
  ASSERT_TRUE(all.is_ok()) << all.status().to_string();
  EXPECT_EQ((*all)["issues_omitted"], 0);
  Result<CheckReport> report = check_report_from_json(*all);
  ASSERT_TRUE(report.is_ok()) << report.status().to_string();
  EXPECT_EQ(check_report_to_json(*report), check_report_to_json(canned_report()));

  Result<json> repaired = client.call("cluster.check", {{"vdi", "disk"}, {"repair", true}});
  ASSERT_TRUE(repaired.is_ok()) << repaired.status().to_string();
  EXPECT_EQ((*repaired)["repaired"], 2);
  EXPECT_EQ((*repaired)["issues"][1]["repaired"], true);
  Status missing = client.call("cluster.check", {{"vdi", "nope"}, {"repair", false}}).status();
  EXPECT_EQ(missing.code(), ENOENT);
  EXPECT_EQ(missing.message(), "VDI 'nope' not found");
  EXPECT_EQ(control_.cluster_calls(),
            (std::vector<std::string>{"check ''", "check 'disk' repair", "check 'nope'"}));
}

TEST_F(AdminServerTest, ClusterRequestsCheckTheirArguments) {
  AdminClient client = connect();
  for (const auto& [op, arguments, message] : std::vector<std::tuple<const char*, json, std::string>>{
           {"cluster.format", {{"min_copies", 2}}, "field 'copies' is missing"},
           {"cluster.format", {{"copies", 3}}, "field 'min_copies' is missing"},
           {"cluster.format", {{"copies", "3"}, {"min_copies", 2}}, "field 'copies' must be an integer"},
           {"cluster.format", {{"copies", -3}, {"min_copies", 2}},
            "field 'copies' must not be negative"},
           {"cluster.format", {{"copies", uint64_t{1} << 32}, {"min_copies", 2}},
            "field 'copies' is out of range"},
           {"cluster.format", {{"copies", 3}, {"min_copies", 2.5}},
            "field 'min_copies' must be an integer"},
           {"node.kill", json::object(), "field 'id' is missing"},
           {"node.kill", {{"id", 7}}, "field 'id' must be a string"},
           {"cluster.check", {{"repair", false}}, "field 'vdi' is missing"},
           {"cluster.check", {{"vdi", ""}}, "field 'repair' is missing"},
           {"cluster.check", {{"vdi", 1}, {"repair", false}}, "field 'vdi' must be a string"},
           {"cluster.check", {{"vdi", ""}, {"repair", "yes"}},
            "field 'repair' must be true or false"},
       }) {
    Status status = client.call(op, arguments).status();
    EXPECT_EQ(status.code(), EINVAL) << op << " " << arguments.dump();
    EXPECT_EQ(status.message(), "invalid request: " + message) << op << " " << arguments.dump();
  }
  EXPECT_TRUE(control_.cluster_calls().empty()) << "bad requests never reach NodeControl";
}

TEST_F(AdminServerTest, NotAClusterAnswersEnotsupForEveryClusterRequest) {
  control_.set_clustered(false);
  AdminClient client = connect();
  for (const auto& [op, arguments] : std::vector<std::pair<const char*, json>>{
           {"cluster.format", {{"copies", 3}, {"min_copies", 2}}},
           {"cluster.info", json::object()},
           {"node.list", json::object()},
           {"node.recovery", json::object()},
           {"node.kill", {{"id", "0f1e2d3c"}}},
           {"cluster.shutdown", json::object()},
           {"cluster.recover_force", json::object()},
           {"cluster.check", {{"vdi", ""}, {"repair", true}}},
       }) {
    Status status = client.call(op, arguments).status();
    EXPECT_EQ(status.code(), ENOTSUP) << op;
    EXPECT_EQ(status.message(), "this node is not part of a cluster (started without --cluster)")
        << op;
  }
  EXPECT_EQ(control_.cluster_calls().size(), 8u);
}

TEST_F(AdminServerTest, HugeCheckReportAndHistoryAreCutToFitOneReply) {
  CheckReport report{.objects_checked = 1'000'000, .copies_checked = 3'000'000};
  for (uint64_t i = 0; i < 20'000; ++i) {
    report.issues.push_back({.object = std::to_string(i),
                             .vdi = std::string(200, 'v'),
                             .node = "0f1e2d3c-0000-4000-8000-000000000001",
                             .problem = "missing copy"});
  }
  control_.set_check_report(report);
  AdminClient client = connect();
  Result<json> reply = client.call("cluster.check", {{"vdi", ""}, {"repair", false}});
  ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
  const size_t kept = (*reply)["issues"].size();
  ASSERT_GT(kept, 100u);
  EXPECT_EQ(kept + (*reply)["issues_omitted"].get<size_t>(), 20'000u);
  EXPECT_EQ((*reply)["issues"][0]["object"], "0") << "the first issues are kept";
  EXPECT_EQ((*reply)["objects_checked"], 1'000'000);

  ClusterSummary cluster = canned_cluster();
  cluster.history.clear();
  for (uint64_t epoch = 1; epoch <= 20'000; ++epoch) {
    cluster.history.push_back({.epoch = epoch,
                               .created_unix_ms = 1700000000000,
                               .reason = "join n",
                               .nodes = std::vector<std::string>(3, std::string(36, 'n'))});
  }
  control_.set_cluster(cluster);
  Result<json> info = client.call("cluster.info");
  ASSERT_TRUE(info.is_ok()) << info.status().to_string();
  const json& history = (*info)["history"];
  ASSERT_GT(history.size(), 100u);
  EXPECT_EQ(history.size() + (*info)["history_omitted"].get<size_t>(), 20'000u);
  EXPECT_EQ(history.back()["epoch"], 20'000) << "the newest epochs are kept";
  EXPECT_EQ(history[0]["epoch"], 20'000 - history.size() + 1) << "oldest first";
}

TEST_F(AdminServerTest, ClientWaitsAsLongAsItWasToldForACheck) {
  control_.set_check_report(canned_report(), /*delay_ms=*/1500);
  AdminClient impatient = connect();
  impatient.set_reply_timeout_s(1);
  Status timed_out = impatient.call("cluster.check", {{"vdi", ""}, {"repair", false}}).status();
  EXPECT_EQ(timed_out.code(), ETIMEDOUT) << timed_out.to_string();
  AdminClient patient = connect();
  patient.set_reply_timeout_s(5);
  EXPECT_TRUE(patient.call("cluster.check", {{"vdi", ""}, {"repair", false}}).is_ok());
}

TEST(AdminServerStart, BadOrBusyAddress) {
  FakeNodeControl control;
  AdminServer bad(control, "nonsense");
  Status status = bad.start();
  EXPECT_EQ(status.code(), EINVAL);
  EXPECT_EQ(status.message(), "invalid address 'nonsense' (expected HOST:PORT)");

  AdminServer first(control, "127.0.0.1:0");
  ASSERT_TRUE(first.start().is_ok());
  std::string taken = "127.0.0.1:" + std::to_string(first.bound_port());
  AdminServer second(control, taken);
  status = second.start();
  EXPECT_EQ(status.code(), EADDRINUSE);
  EXPECT_EQ(status.message(),
            "cannot listen on admin address " + taken + ": Address already in use");
}

}  // namespace
}  // namespace kelpie
