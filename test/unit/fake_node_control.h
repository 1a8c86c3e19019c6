// FakeNodeControl: an in-memory NodeControl for driving AdminServer in tests, and the
// canned cluster answers it gives (canned_cluster, canned_members, canned_report), which
// the wire-format tests also use as sample data.
//
// Contract: thread-safe (AdminServer calls it from its connection threads). VDIs and
// snapshots ("NAME@TAG") follow the real node's id and parent bookkeeping and answer
// its errors: ENOENT, EEXIST, EINVAL (a snapshot named where a VDI is expected, or
// the reverse), EBUSY (rollback of an attached VDI). vdi_info("explode") throws, so a
// test can check that an exception becomes an error reply. Cluster calls return the
// canned answers, are recorded in cluster_calls(), and answer ENOTSUP after
// set_clustered(false); check() takes the delay given to set_check_report().
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "daemon/node_control.h"

namespace kelpie {

inline ClusterSummary canned_cluster() {
  return {.driver = "local:/var/lib/kelpie/cluster",
          .status = "running",
          .cluster_uuid = "c0ffee00-0000-4000-8000-000000000000",
          .epoch = 4,
          .copies = 3,
          .min_copies = 2,
          .zones = 2,
          .storage_nodes = 3,
          .gateways = 1,
          .warnings = {"only 2 zones: objects keep 2 of 3 copies"},
          .history = {{.epoch = 1,
                       .created_unix_ms = 1700000000123,
                       .reason = "format",
                       .nodes = {"n1", "n2"}},
                      {.epoch = 4,
                       .created_unix_ms = 1700000100000,
                       .reason = "join n3",
                       .nodes = {"n1", "n2", "n3"}}}};
}

inline std::vector<MemberSummary> canned_members() {
  return {{.id = "0f1e2d3c-0000-4000-8000-000000000001",
           .address = "10.0.0.1:7100",
           .nbd_address = "10.0.0.1:10809",
           .admin_address = "10.0.0.1:7000",
           .zone = "rack-a",
           .vnodes = 128,
           .status = "up",
           .capacity_bytes = uint64_t{1} << 40,
           .used_bytes = uint64_t{3} << 30,
           .objects = 768},
          {.id = "9a8b7c6d-0000-4000-8000-000000000002",
           .address = "10.0.0.2:7100",
           .gateway = true,
           .status = "gateway"}};
}

inline CheckReport canned_report() {
  return {.objects_checked = 10,
          .copies_checked = 30,
          .repaired = 0,
          .issues = {{.object = "00000001000000a0",
                      .vdi = "disk",
                      .node = "0f1e2d3c-0000-4000-8000-000000000001",
                      .problem = "missing copy"},
                     {.object = "00000001000000a1", .vdi = "disk", .problem = "differs"}}};
}

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
  // Cluster calls: canned answers, each call recorded in cluster_calls(). After
  // set_clustered(false) they answer like a node started without --cluster.
  Result<ClusterSummary> format_cluster(uint32_t copies, uint32_t min_copies) override {
    std::lock_guard lock(mutex_);
    record_locked("format " + std::to_string(copies) + " " + std::to_string(min_copies));
    if (!clustered_) return unsupported();
    if (copies < 1 || copies > 8 || min_copies < 1 || min_copies > copies) {
      return Status::error(EINVAL, "invalid copies");
    }
    ClusterSummary cluster = cluster_;
    cluster.copies = copies;
    cluster.min_copies = min_copies;
    return cluster;
  }
  Result<ClusterSummary> cluster_info() override {
    std::lock_guard lock(mutex_);
    record_locked("info");
    if (!clustered_) return unsupported();
    return cluster_;
  }
  Result<std::vector<MemberSummary>> list_nodes() override {
    std::lock_guard lock(mutex_);
    record_locked("list");
    if (!clustered_) return unsupported();
    return members_;
  }
  Result<std::vector<RecoverySummary>> recovery_status() override {
    std::lock_guard lock(mutex_);
    record_locked("recovery");
    if (!clustered_) return unsupported();
    return recoveries_;
  }
  Status kill_node(const std::string& id) override {
    std::lock_guard lock(mutex_);
    record_locked("kill " + id);
    if (!clustered_) return unsupported();
    if (id != "0f1e2d3c") return Status::error(ENOENT, "node '" + id + "' not found");
    return Status::ok();
  }
  Status shutdown_cluster() override {
    std::lock_guard lock(mutex_);
    record_locked("shutdown");
    return clustered_ ? Status::ok() : unsupported();
  }
  Status recover_force() override {
    std::lock_guard lock(mutex_);
    record_locked("recover_force");
    return clustered_ ? Status::ok() : unsupported();
  }
  Result<CheckReport> check(const std::string& vdi, bool repair) override {
    int delay_ms;
    {
      std::lock_guard lock(mutex_);
      record_locked("check '" + vdi + "'" + (repair ? " repair" : ""));
      if (!clustered_) return unsupported();
      if (!vdi.empty() && !vdis_.contains(vdi)) {
        return Status::error(ENOENT, "VDI '" + vdi + "' not found");
      }
      delay_ms = check_delay_ms_;
    }
    ::usleep(static_cast<useconds_t>(delay_ms) * 1000);
    std::lock_guard lock(mutex_);
    CheckReport report = report_;
    if (repair) {
      for (CheckIssue& issue : report.issues) issue.repaired = true;
      report.repaired = report.issues.size();
    }
    return report;
  }
  static Status unsupported() {
    return Status::error(ENOTSUP, "this node is not part of a cluster (started without --cluster)");
  }

  void set_clustered(bool clustered) {
    std::lock_guard lock(mutex_);
    clustered_ = clustered;
  }
  std::vector<std::string> cluster_calls() {
    std::lock_guard lock(mutex_);
    return cluster_calls_;
  }
  void set_cluster(ClusterSummary cluster) {
    std::lock_guard lock(mutex_);
    cluster_ = std::move(cluster);
  }
  void set_check_report(CheckReport report, int delay_ms = 0) {
    std::lock_guard lock(mutex_);
    report_ = std::move(report);
    check_delay_ms_ = delay_ms;
  }

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

  void record_locked(std::string call) { cluster_calls_.push_back(std::move(call)); }

  std::mutex mutex_;
  bool clustered_ = true;
  std::vector<std::string> cluster_calls_;
  ClusterSummary cluster_ = canned_cluster();
  std::vector<MemberSummary> members_ = canned_members();
  std::vector<RecoverySummary> recoveries_ = {
      {.node = "0f1e2d3c-0000-4000-8000-000000000001",
       .epoch = 4,
       .state = "recovering",
       .to_recover = 120,
       .done = 30,
       .rate_mib_s = 12.5}};
  CheckReport report_ = canned_report();
  int check_delay_ms_ = 0;
  std::map<std::string, VdiSummary> vdis_;
  std::map<uint32_t, std::vector<std::pair<uint64_t, uint64_t>>> extents_;
  uint32_t next_id_ = 1;
};

}  // namespace kelpie
