#include "cluster/cluster_member.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "cluster/membership.h"
#include "common/crc32c.h"
#include "common/log.h"

namespace kelpie {

ClusterMember::ClusterMember(ClusterMemberOptions options, Superblock& superblock,
                             const ReactorPool& reactors, LocalStore* store)
    : options_(std::move(options)), superblock_(superblock), reactors_(reactors), local_(store) {}

ClusterMember::~ClusterMember() { close(false); }

namespace {

Result<uint32_t> parse_vnodes(const std::string& text, uint64_t capacity,
                              const std::vector<MemberInfo>& others) {
  if (text == "auto") {
    uint64_t total = 0;
    uint64_t count = 0;
    for (const MemberInfo& m : others) {
      if (m.gateway || m.capacity_bytes == 0) continue;
      total += m.capacity_bytes;
      ++count;
    }
    return auto_vnodes(capacity, count == 0 ? 0 : total / count);
  }
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 ||
      value > kMaxVnodesPerNode) {
    return Status::error(EINVAL, "--vnodes must be 'auto' or a number from 1 to " +
                                     std::to_string(kMaxVnodesPerNode));
  }
  return value;
}

}  // namespace

Status ClusterMember::open(std::function<void()> on_shutdown) {
  if (options_.spec.rfind("local:", 0) == 0) state_dir_ = options_.spec.substr(6);
  auto driver = open_membership(options_.spec);
  if (!driver) return driver.status();
  driver_ = std::move(*driver);

  // A data directory formatted into another cluster is refused before anything else:
  // its copies are of that cluster's VDIs, and its epochs would be ignored here.
  if (superblock_.cluster_uuid != Uuid{}) {
    auto epoch = driver_->current_epoch();
    if (!epoch) {
      return Status::error(EINVAL, "data directory " + options_.data_dir + " belongs to cluster " +
                                       uuid_to_string(superblock_.cluster_uuid) + ", but " +
                                       options_.spec + " holds no formatted cluster");
    }
    if (superblock_.cluster_uuid != epoch->cluster) {
      return Status::error(EINVAL, "data directory " + options_.data_dir + " belongs to cluster " +
                                       uuid_to_string(superblock_.cluster_uuid) + ", but " +
                                       options_.spec + " holds cluster " +
                                       uuid_to_string(epoch->cluster));
    }
  }

  self_.id = superblock_.node_uuid;
  self_.peer_address = options_.listen.empty() ? "unix:" + options_.data_dir + "/peer.sock"
                                               : options_.listen;
  self_.admin_address = options_.admin_address;
  self_.nbd_address = options_.nbd_address;
  self_.zone = options_.zone;
  self_.gateway = options_.gateway;
  self_.pid = static_cast<int>(::getpid());
  if (!options_.gateway) {
    struct statvfs fs {};
    if (::statvfs(options_.data_dir.c_str(), &fs) == 0) {
      self_.capacity_bytes = uint64_t(fs.f_blocks) * fs.f_frsize;
    }
    auto vnodes = parse_vnodes(options_.vnodes, self_.capacity_bytes, driver_->live_members());
    if (!vnodes) return vnodes.status();
    self_.vnodes = *vnodes;
  }

  {
    std::lock_guard lock(cluster_mutex_);
    cluster_ = superblock_.cluster_uuid;
  }
  epochs_ = std::make_unique<EpochState>(reactors_);
  peers_ = std::make_unique<PeerClient>(reactors_, superblock_.cluster_uuid, self_.id);
  if (local_ != nullptr) {
    recovery_ = std::make_unique<Recovery>(*local_, *epochs_, *peers_, *driver_, reactors_, self_.id);
  }
  service_ = std::make_unique<ReplicaService>(local_, recovery_.get(), *epochs_, self_.id, [this] {
    std::lock_guard lock(cluster_mutex_);
    return cluster_;
  });
  replicated_ = std::make_unique<ReplicatedStore>(*epochs_, *peers_, *service_, reactors_);
  if (!options_.gateway) {
    server_ = std::make_unique<PeerServer>(self_.peer_address, *service_, reactors_);
    if (Status st = server_->start(); !st) return st;
  }

  MembershipDriver::Events events;
  events.on_epoch = [this](const EpochRecord& record) { on_epoch(record); };
  events.on_shared_changed = [this](const std::string& name) {
    if (name == kDirectoryName) directory_changes_.fetch_add(1, std::memory_order_relaxed);
  };
  events.on_shutdown = std::move(on_shutdown);
  epochs_->set_lease(driver_.get());
  if (Status st = driver_->join(self_, std::move(events)); !st) return st;
  KELPIE_LOG_INFO("joined cluster {} as {} node {} (peer {}, zone {}, {} vnodes)", driver_->describe(),
                  options_.gateway ? "gateway" : "storage", uuid_to_string(self_.id),
                  self_.peer_address, self_.zone.empty() ? "own" : self_.zone, self_.vnodes);
  return Status::ok();
}

void ClusterMember::on_epoch(const EpochRecord& record) {
  {
    std::lock_guard lock(cluster_mutex_);
    if (cluster_ == Uuid{}) {
      cluster_ = record.cluster;
      superblock_.cluster_uuid = record.cluster;
      if (local_ != nullptr || options_.gateway) {
        Status st = save_superblock(options_.data_dir, superblock_);
        if (!st) KELPIE_LOG_ERROR("cannot record the cluster in the superblock: {}", st.to_string());
      }
      peers_->set_cluster(record.cluster);
    } else if (cluster_ != record.cluster) {
      // open() refused a data directory of another cluster; this is a log replaced
      // under a running node (its state wiped and formatted again): never served.
      KELPIE_LOG_CRITICAL("epoch {} is of cluster {}, this node belongs to {}; ignored",
                          record.epoch, uuid_to_string(record.cluster), uuid_to_string(cluster_));
      return;
    }
  }
  auto view = make_epoch_view(record, self_.id);
  if (!view) {
    KELPIE_LOG_CRITICAL("epoch {}: cannot build the ring: {}", record.epoch,
                        view.status().to_string());
    return;
  }
  KELPIE_LOG_INFO("epoch {} ({}): {} storage nodes, {} zones, copies {} min {}", record.epoch,
                  record.reason, record.nodes.size(), (*view)->ring.zone_count(), record.copies,
                  record.min_copies);
  std::shared_ptr<const EpochView> previous = epochs_->latest();
  epochs_->publish(*view);
  // Calls in flight to a node this epoch dropped fail now (their writes retry on the
  // new replica set) instead of waiting out the call timeout on a dead link.
  if (previous) {
    for (const MemberInfo& member : previous->members) {
      if (!(*view)->ring.find(member.id)) peers_->drop(member.id);
    }
  }
  if (recovery_ && (*view)->self) recovery_->start(*view);
}

void ClusterMember::close(bool leave) {
  if (!driver_) return;
  if (recovery_) recovery_->stop();
  if (leave && !options_.gateway) {
    driver_->leave();
  } else {
    driver_->stop();
  }
  if (server_) server_->stop();
  if (peers_) peers_->close_all();
  driver_.reset();
}

void ClusterMember::refresh_status() {
  if (!recovery_ || !local_) return;
  if (local_->failed() && !left_after_failure_.exchange(true)) {
    // Rule 6: after a failed fdatasync the kernel may have dropped dirty pages; this
    // node's copies can not be trusted, so it leaves and the others re-replicate.
    KELPIE_LOG_CRITICAL("the local store failed an fdatasync; leaving the cluster");
    driver_->leave();
    return;
  }
  auto listed = reactors_.at(0).block_on(local_->list_all());
  if (listed) {
    uint64_t bytes = 0;
    for (const StoredObject& object : *listed) bytes += object.object_size;
    recovery_->set_used_bytes(bytes);
  }
  recovery_->publish_now();
}

std::unique_ptr<DirectoryBacking> ClusterMember::make_directory_backing() const {
  return driver_->directory_backing(kDirectoryName);
}

std::string ClusterMember::directory_stamp() const {
  if (state_dir_.empty()) {
    return "changes " + std::to_string(directory_changes_.load(std::memory_order_relaxed));
  }
  // The local driver keeps the directory in a file beside its state: its stat.
  struct stat now {};
  if (::stat((state_dir_ + "/" + kDirectoryName).c_str(), &now) != 0) return "missing";
  return std::to_string(now.st_ino) + " " + std::to_string(now.st_mtim.tv_sec) + "." +
         std::to_string(now.st_mtim.tv_nsec) + " " + std::to_string(now.st_size);
}

// ---- cluster check --------------------------------------------------------------

namespace {

struct Copy {
  NodeIndex node;
  Status status;
  ObjectVersion version;
  uint32_t object_size = 0;
  uint32_t crc = 0;
  Buffer data;
};

}  // namespace

Result<CheckResult> ClusterMember::check(const std::set<VdiId>& vdis, bool repair) {
  std::shared_ptr<const EpochView> view = epochs_->latest();
  if (!view) return Status::error(EAGAIN, "this node has no epoch yet");
  return reactors_.at(0).block_on([](ClusterMember* self, std::shared_ptr<const EpochView> view,
                                     std::set<VdiId> vdis, bool repair) -> Task<Result<CheckResult>> {
    auto send = [&](NodeIndex node, const PeerRequest& request) -> Task<Result<PeerReply>> {
      if (view->self && node == *view->self) {
        co_return Result<PeerReply>(co_await self->service_->apply(request, {}));
      }
      const MemberInfo& m = view->member(node);
      co_return co_await self->peers_->call(m.id, m.peer_address, request);
    };
    // Every object any node holds.
    std::unordered_map<ObjectId, uint32_t, ObjectIdHash> objects;
    for (NodeIndex node = 0; node < view->members.size(); ++node) {
      PeerRequest request;
      request.op = PeerOp::kListObjects;
      request.epoch = view->epoch();
      auto reply = co_await send(node, request);
      if (!reply) co_return reply.status();
      if (reply->status != 0) {
        co_return Status::error(EAGAIN, "node " + uuid_to_string(view->member(node).id) +
                                            " is not ready (epoch changing); try again");
      }
      for (const ListedObject& o : reply->objects) {
        if (!vdis.empty() && !vdis.contains(o.id.vdi)) continue;
        if (!view->replicas(o.id).contains(node)) continue;  // an old copy awaiting removal
        objects[o.id] = o.object_size;
      }
    }
    CheckResult result;
    std::vector<ObjectId> ids;
    for (const auto& [id, size] : objects) ids.push_back(id);
    std::sort(ids.begin(), ids.end(), [](const ObjectId& a, const ObjectId& b) {
      return a.to_hex() < b.to_hex();
    });
    for (const ObjectId& id : ids) {
      ++result.objects;
      ReplicaSet set = view->replicas(id);
      std::vector<Copy> copies;
      for (NodeIndex node : set) {
        PeerRequest request;
        request.op = PeerOp::kFetchObject;
        request.epoch = view->epoch();
        request.id = id;
        request.flags = kPeerFlagRecovery;
        Copy copy{node, Status::ok(), {}, 0, 0, {}};
        auto reply = co_await send(node, request);
        ++result.copies;
        if (!reply) {
          copy.status = reply.status();
        } else if (reply->status != 0) {
          copy.status = Status::error(reply->status == kEpochMismatch ? EAGAIN : reply->status,
                                      reply->message);
        } else {
          copy.version = reply->version;
          copy.object_size = reply->object_size;
          copy.crc = crc32c(reply->data.data(), reply->data.size());
          copy.data = std::move(reply->data);
        }
        copies.push_back(std::move(copy));
      }
      // The newest good copy; among copies of that version, the most common content.
      const Copy* best = nullptr;
      for (const Copy& c : copies) {
        if (!c.status) continue;
        if (!best || c.version > best->version) best = &c;
      }
      if (!best) {
        result.issues.push_back({id, "", "no readable copy", false});
        continue;
      }
      for (const Copy& c : copies) {
        std::string problem;
        if (!c.status) {
          problem = c.status.code() == ENOENT ? "missing copy"
                    : c.status.code() == EIO  ? "bad checksum"
                                              : "unreachable (" + c.status.message() + ")";
        } else if (c.version < best->version) {
          problem = "stale version";
        } else if (c.crc != best->crc) {
          problem = "differs";
        }
        if (problem.empty()) continue;
        ReplicaCheck issue{id, uuid_to_string(view->member(c.node).id), problem, false};
        bool fixable = c.status || c.status.code() == ENOENT || c.status.code() == EIO;
        if (repair && fixable) {
          PeerRequest write;
          write.op = PeerOp::kWrite;
          write.epoch = view->epoch();
          write.id = id;
          write.offset = 0;
          write.length = best->data.size();
          write.object_size = best->object_size;
          write.flags = kPeerFlagCreate | kPeerFlagFua;
          write.version = best->version;
          write.data = std::span<const uint8_t>(best->data.data(), best->data.size());
          auto reply = co_await send(c.node, write);
          issue.repaired = reply && reply->status == 0;
          if (!issue.repaired) {
            KELPIE_LOG_ERROR("repair of {} on {} failed: {}", id.to_hex(), issue.node,
                             reply ? reply->message : reply.status().to_string());
          }
        }
        result.issues.push_back(std::move(issue));
      }
    }
    co_return result;
  }(this, view, vdis, repair));
}

}  // namespace kelpie
