// AdminServer driven over real TCP by AdminClient (and by raw frames for the
// malformed cases), against an in-memory NodeControl.
#include "daemon/admin_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "admin/admin_client.h"
#include "common/admin_wire.h"
#include "common/bytes.h"

namespace kelpie {
namespace {

using nlohmann::json;

// Keeps VDIs and snapshots (named "NAME@TAG") in a map, with the id and parent
// bookkeeping of the real node: a snapshot keeps the head's id and the head moves on
// to a new one whose parent is the snapshot.
class FakeNodeControl : public NodeControl {
 public:
  Result<VdiSummary> create_vdi(const std::string& name, uint64_t size_bytes,
                                uint32_t object_shift) override {
    std::lock_guard lock(mutex_);
    if (object_shift < 20 || object_shift > 26) return Status::error(EINVAL, "bad object size");
    if (vdis_.contains(name)) return Status::error(EEXIST, "VDI '" + name + "' already exists");
    uint32_t id = next_id_++;
    VdiSummary vdi{.name = name,
                   .id = id,
                   .size_bytes = size_bytes,
                   .object_size_bytes = 1u << object_shift,
                   .created_unix_s = 1700000000,
                   .family_id = id};
    vdis_[name] = vdi;
    return vdi;
  }
  Status delete_vdi(const std::string& name) override {
    std::lock_guard lock(mutex_);
    if (vdis_.erase(name) == 0) return Status::error(ENOENT, "VDI '" + name + "' not found");
    if (name.find('@') == std::string::npos) {
      std::erase_if(vdis_, [&](const auto& entry) { return entry.first.starts_with(name + "@"); });
    }
    return Status::ok();
  }
  Status resize_vdi(const std::string& name, uint64_t size_bytes) override {
    std::lock_guard lock(mutex_);
    auto it = vdis_.find(name);
    if (it == vdis_.end()) return Status::error(ENOENT, "VDI '" + name + "' not found");
    it->second.size_bytes = size_bytes;
    return Status::ok();
  }
  Result<VdiSummary> vdi_info(const std::string& name) override {
    std::lock_guard lock(mutex_);
    if (name == "explode") throw std::runtime_error("boom");
    auto it = vdis_.find(name);
    if (it == vdis_.end()) return Status::error(ENOENT, "VDI '" + name + "' not found");
    return it->second;
  }
  std::vector<VdiSummary> list_vdis() override {
    std::lock_guard lock(mutex_);
    std::vector<VdiSummary> list;
    for (const auto& [name, vdi] : vdis_) list.push_back(vdi);
    return list;
  }
  NodeSummary node_info() override {
    return NodeSummary{.version = "0.1.0",
                       .node_uuid = "u",
                       .data_dir = "/d",
                       .nbd_tcp = "127.0.0.1:10809",
                       .nbd_unix = "/d/nbd.sock",
                       .admin_address = "127.0.0.1:7000",
                       .threads = 4,
                       .format_version = 1,
                       .capacity_bytes = uint64_t{1} << 40,
                       .free_bytes = uint64_t{1} << 39,
                       .objects = 3,
                       .vdi_count = 1,
                       .nbd_connections = 2,
                       .uptime_s = 99};
  }

  Result<VdiSummary> snapshot_vdi(const std::string& name, const std::string& tag) override {
    std::lock_guard lock(mutex_);
    Result<VdiSummary*> head = writable_locked(name);
    if (!head) return head.status();
    std::string snapshot_tag = tag;
    for (uint32_t n = 1; snapshot_tag.empty(); ++n) {
      if (!vdis_.contains(name + "@" + std::to_string(n))) snapshot_tag = std::to_string(n);
    }
    std::string snapshot_name = name + "@" + snapshot_tag;
    if (vdis_.contains(snapshot_name)) {
      return Status::error(EEXIST, "snapshot '" + snapshot_name + "' already exists");
    }
    VdiSummary snapshot = **head;
    snapshot.name = snapshot_name;
    snapshot.tag = snapshot_tag;
    snapshot.read_only = true;
    snapshot.attached_connections = 0;
    (*head)->parent_id = snapshot.id;
    (*head)->id = next_id_++;
    vdis_[snapshot_name] = snapshot;
    return snapshot;
  }
  Result<VdiSummary> clone_vdi(const std::string& snapshot, const std::string& new_name) override {
    std::lock_guard lock(mutex_);
    Result<VdiSummary*> source = snapshot_locked(snapshot);
    if (!source) return source.status();
    if (vdis_.contains(new_name)) {
      return Status::error(EEXIST, "VDI '" + new_name + "' already exists");
    }
    VdiSummary clone = **source;
    clone.name = new_name;
    clone.tag.clear();
    clone.read_only = false;
    clone.parent_id = clone.id;
    clone.id = next_id_++;
    clone.restored_from.clear();
    vdis_[new_name] = clone;
    return clone;
  }
  Result<VdiSummary> rollback_vdi(const std::string& snapshot) override {
    std::lock_guard lock(mutex_);
    Result<VdiSummary*> source = snapshot_locked(snapshot);
    if (!source) return source.status();
    VdiSummary& head = vdis_[snapshot.substr(0, snapshot.find('@'))];
    if (head.attached_connections > 0) {
      return Status::error(EBUSY, "VDI '" + head.name + "' is attached");
    }
    head.size_bytes = (*source)->size_bytes;
    head.parent_id = (*source)->id;
    head.id = next_id_++;
    return head;
  }
  Result<BackupPlan> backup_plan(const std::string& to_snapshot,
                                 const std::string& from_snapshot) override {
    std::lock_guard lock(mutex_);
    Result<VdiSummary*> to = snapshot_locked(to_snapshot);
    if (!to) return to.status();
    BackupPlan plan{.to_identity = "u:" + std::to_string((*to)->id),
                    .size_bytes = (*to)->size_bytes,
                    .object_size_bytes = (*to)->object_size_bytes,
                    .extents = extents_[(*to)->id]};
    if (!from_snapshot.empty()) {
      Result<VdiSummary*> from = snapshot_locked(from_snapshot);
      if (!from) return from.status();
      plan.from_identity = "u:" + std::to_string((*from)->id);
      // The difference: what `to` holds that `from` does not.
      std::erase_if(plan.extents, [&](const auto& extent) {
        return std::ranges::find(extents_[(*from)->id], extent) != extents_[(*from)->id].end();
      });
    }
    return plan;
  }
  Status set_restored_from(const std::string& name, const std::string& identity) override {
    std::lock_guard lock(mutex_);
    Result<VdiSummary*> vdi = writable_locked(name);
    if (!vdi) return vdi.status();
    (*vdi)->restored_from = identity;
    return Status::ok();
  }
  // Cluster calls: this fake is a node started without --cluster.
  Result<ClusterSummary> format_cluster(uint32_t, uint32_t) override { return unsupported(); }
  Result<ClusterSummary> cluster_info() override { return unsupported(); }
  Result<std::vector<MemberSummary>> list_nodes() override { return unsupported(); }
  Result<std::vector<RecoverySummary>> recovery_status() override { return unsupported(); }
  Status kill_node(const std::string&) override { return unsupported(); }
  Status shutdown_cluster() override { return unsupported(); }
  Status recover_force() override { return unsupported(); }
  Result<CheckReport> check(const std::string&, bool) override { return unsupported(); }
  static Status unsupported() { return Status::error(ENOTSUP, "not a cluster"); }

  // The extents a backup of the VDI or snapshot with this id lists.
  void set_extents(uint32_t id, std::vector<std::pair<uint64_t, uint64_t>> extents) {
    std::lock_guard lock(mutex_);
    extents_[id] = std::move(extents);
  }
  void set_attached(const std::string& name, uint32_t connections) {
    std::lock_guard lock(mutex_);
    vdis_.at(name).attached_connections = connections;
  }

 private:
  Result<VdiSummary*> writable_locked(const std::string& name) {
    if (name.find('@') != std::string::npos) {
      return Status::error(EINVAL, "'" + name + "' is a snapshot");
    }
    auto it = vdis_.find(name);
    if (it == vdis_.end()) return Status::error(ENOENT, "VDI '" + name + "' not found");
    return &it->second;
  }
  Result<VdiSummary*> snapshot_locked(const std::string& name) {
    if (name.find('@') == std::string::npos) {
      return Status::error(EINVAL, "'" + name + "' is not a snapshot");
    }
    auto it = vdis_.find(name);
    if (it == vdis_.end()) return Status::error(ENOENT, "snapshot '" + name + "' not found");
    return &it->second;
  }

  std::mutex mutex_;
  std::map<std::string, VdiSummary> vdis_;
  std::map<uint32_t, std::vector<std::pair<uint64_t, uint64_t>>> extents_;
  uint32_t next_id_ = 1;
};

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
    std::string name = "v" + std::to_string(i);
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

}  // namespace
}  // namespace kelpie
