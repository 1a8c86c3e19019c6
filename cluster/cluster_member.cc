#include "cluster/cluster_member.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <thread>

#include "cluster/membership.h"
#include "cluster/replica_resync.h"
#include "common/log.h"
#include "engine/offload.h"

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
  reachability_ = std::make_unique<PeerReachability>(options_.unreachable_timeout);
  PeerClientOptions peer_options;
  peer_options.reachability = reachability_.get();
  peers_ = std::make_unique<PeerClient>(reactors_, superblock_.cluster_uuid, self_.id, peer_options);
  if (local_ != nullptr) {
    recovery_ = std::make_unique<Recovery>(*local_, *epochs_, *peers_, *driver_, reactors_, self_.id);
  }
  if (local_ != nullptr) {
    full_ratio_ = std::make_unique<FullRatio>(options_.data_dir, uuid_to_string(self_.id),
                                              options_.full_ratio);
  }
  service_ = std::make_unique<ReplicaService>(local_, recovery_.get(), *epochs_, self_.id, [this] {
    std::lock_guard lock(cluster_mutex_);
    return cluster_;
  }, full_ratio_.get());
  service_->set_fences(&fences_);
  replicated_ = std::make_unique<ReplicatedStore>(*epochs_, *peers_, *service_, reactors_);
  if (!options_.gateway) {
    server_ = std::make_unique<PeerServer>(self_.peer_address, *service_, reactors_);
    if (!options_.test_refuse_peers_file.empty()) server_->refuse_peers_while(options_.test_refuse_peers_file);
    if (Status st = server_->start(); !st) return st;
  }

  MembershipDriver::Events events;
  events.on_epoch = [this](const EpochRecord& record) { on_epoch(record); };
  events.on_shared_changed = [this](const std::string& name) {
    if (name == kDirectoryName) directory_changes_.fetch_add(1, std::memory_order_relaxed);
  };
  events.on_shutdown = std::move(on_shutdown);
  events.may_rejoin = [this] { return may_rejoin(); };
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
  {
    std::vector<Uuid> nodes;
    for (const MemberInfo& node : record.nodes) nodes.push_back(node.id);
    reachability_->set_epoch(record.epoch, nodes);
  }
  epochs_->publish(*view);
  // Calls in flight to a node this epoch dropped fail now (their writes retry on the
  // new replica set) instead of waiting out the call timeout on a dead link.
  if (previous) {
    for (const MemberInfo& member : previous->members) {
      if (!(*view)->ring.find(member.id)) peers_->drop(member.id);
    }
  }
  if (recovery_ && (*view)->self) recovery_->start(*view);
  if (local_ != nullptr && (*view)->self && !local_->unclean_objects().empty() &&
      !unclean_started_.exchange(true)) {
    background_.fetch_add(1);
    spawn(resync_unclean(local_->unclean_objects()));
  }
}

namespace {
constexpr int kUncleanResyncRounds = 8;
}  // namespace

Task<void> ClusterMember::resync_unclean(std::vector<ObjectId> ids) {
  // Rule 4: these objects had writes in flight when this node stopped uncleanly; its
  // copies of them may differ from the others' in ways versions do not show.
  co_await switch_to(reactors_.at(0));
  const size_t total = ids.size();
  size_t resynced = 0;
  size_t rewritten = 0;
  size_t not_held = 0;
  uint64_t seen_epoch = 0;
  ReplicaResync resync(*peers_, *service_);
  for (int round = 0; round < kUncleanResyncRounds && !ids.empty() && !stopping_.load(); ++round) {
    if (round > 0) {
      auto wait = std::chrono::milliseconds(2000) * (1 << std::min(round - 1, 4));
      auto deadline = std::chrono::steady_clock::now() + std::min(wait, std::chrono::milliseconds(30000));
      while (!stopping_.load() && std::chrono::steady_clock::now() < deadline) {
        bool newer = co_await epochs_->wait_newer(
            seen_epoch, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)));
        if (newer) break;
      }
    }
    auto serving = co_await epochs_->wait_serving(std::chrono::steady_clock::now() + std::chrono::seconds(5));
    std::shared_ptr<const EpochView> view = epochs_->current();
    if (!serving || !view || !view->self) continue;
    seen_epoch = view->epoch();
    std::vector<ObjectId> left;
    for (const ObjectId& id : ids) {
      if (stopping_.load()) {
        left.push_back(id);
        continue;
      }
      if (!view->holds(id)) {
        ++not_held;  // another node holds it now; recovery moved the newest copy there
        continue;
      }
      // A named vector: GCC 12 miscompiles a braced list inside a co_await.
      std::vector<NodeIndex> suspects(1, *view->self);
      // Outside the gateway's object lock: hold the replicas' writes (replica_resync.h).
      ResyncOutcome outcome =
          co_await resync.run(*view, id, true, std::move(suspects), ResyncHold::kHoldWrites);
      for (const ResyncIssue& issue : outcome.issues) rewritten += issue.repaired ? 1 : 0;
      if (outcome.complete) {
        ++resynced;
      } else {
        left.push_back(id);
      }
    }
    ids = std::move(left);
  }
  // What is left stays recorded (LocalStore::kUncleanFile) for the next start: a crash
  // or stop before this point forgets nothing.
  std::function<Status()> record = [this, ids] { return local_->settle_unclean(ids); };
  if (Status recorded = co_await offload<Status>(std::move(record)); !recorded.is_ok()) {
    KELPIE_LOG_ERROR("unclean stop: recording which objects still need a resync failed: {}",
                     recorded.to_string());
  }
  if (ids.empty()) {
    KELPIE_LOG_INFO("unclean stop: {} objects had writes in flight; {} resynced cluster-wide ({} "
                    "copies rewritten), {} no longer held here",
                    total, resynced, rewritten, not_held);
  } else {
    std::string why = stopping_.load() ? std::string("stopping")
                                       : "after " + std::to_string(kUncleanResyncRounds) + " rounds";
    std::string first = ids.front().to_hex();
    KELPIE_LOG_ERROR("unclean stop: {} objects had writes in flight; {} resynced cluster-wide ({} "
                     "copies rewritten), {} no longer held here, {} not resynced ({}; first: {}); "
                     "run `kelpie cluster check --repair`",
                     total, resynced, rewritten, not_held, ids.size(), why, first);
  }
  background_.fetch_sub(1);
}

void ClusterMember::close(bool leave) {
  if (!driver_) return;
  stopping_.store(true);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (background_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (replicated_) replicated_->stop();
  if (recovery_) recovery_->stop();
  if (leave && !options_.gateway) {
    driver_->leave();
  } else {
    driver_->stop();
  }
  if (server_) server_->stop();
  if (peers_) peers_->close_all();
  // Probes end once close_all() broke their connections.
  while (background_.load() > 0 && std::chrono::steady_clock::now() < deadline + std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  driver_.reset();
}

void ClusterMember::refresh_status() {
  check_reachability();
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

// ---- unreachable peers (cluster/peer_reachability.h) ------------------------------

namespace {
std::string id_list(const std::vector<Uuid>& ids) {
  std::string text;
  for (const Uuid& id : ids) text += (text.empty() ? "" : ", ") + uuid_to_string(id);
  return text;
}
}  // namespace

void ClusterMember::check_reachability() {
  if (!reachability_ || stopping_.load()) return;
  const auto now = std::chrono::steady_clock::now();
  const auto threshold_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(reachability_->threshold()).count();
  for (const PeerReachability::Crossed& crossed : reachability_->newly_unreachable(now)) {
    KELPIE_LOG_WARN("reachability: reporting storage node {} unreachable: every call to it failed for {} ms "
                    "(threshold {} ms; last: {})",
                    uuid_to_string(crossed.node),
                    std::chrono::duration_cast<std::chrono::milliseconds>(crossed.failing_for).count(),
                    threshold_ms, crossed.last_error);
  }
  const ReachabilityReport report = reachability_->report(now);
  driver_->publish_status_field(kReachabilityStatusKey, reachability_report_json(report));

  std::optional<EpochRecord> epoch = driver_->current_epoch();
  if (!epoch) return;
  EvictionInput input;
  input.self = self_.id;
  input.self_serving = driver_->lease_until() > std::chrono::steady_clock::now();  // its lease
  input.epoch = *epoch;
  input.live = driver_->live_members();
  input.statuses = driver_->member_statuses();
  const EvictionDecision decision = decide_eviction(input);

  // Where each node is: the epoch's storage nodes and the live ones out of it (an
  // evicted node is probed on, so that it rejoins only once it is reachable).
  std::map<Uuid, std::string> addresses;
  for (const MemberInfo& m : epoch->nodes) addresses[m.id] = m.peer_address;
  for (const MemberInfo& m : input.live) {
    if (!m.gateway) addresses.emplace(m.id, m.peer_address);
  }
  {
    std::vector<Uuid> keep;
    for (const auto& [id, address] : addresses) keep.push_back(id);
    reachability_->retain(keep);
  }
  // Probe what anyone finds failing, this node included: a probe that is answered
  // clears this node's record, one that fails keeps it (and starts it).
  std::set<Uuid> probe(decision.probe.begin(), decision.probe.end());
  probe.insert(report.failing.begin(), report.failing.end());
  for (const Uuid& id : probe) {
    if (id == self_.id) continue;
    auto node = addresses.find(id);
    if (node == addresses.end()) continue;
    {
      std::lock_guard lock(probes_mutex_);
      if (stopping_.load() || !probes_.insert(id).second) continue;  // one in flight per peer
    }
    background_.fetch_add(1);
    spawn(probe_peer(id, node->second));
  }

  log_uncorroborated(*epoch, decision);
  if (!decision.evict || evicted_in_epoch_ == epoch->epoch) return;
  evicted_in_epoch_ = epoch->epoch;
  const Uuid target = *decision.evict;
  KELPIE_ASSERT(target != self_.id);
  std::vector<Uuid> reporters;
  for (const EvictionDecision::Suspect& suspect : decision.suspects) {
    if (suspect.node == target) reporters = suspect.reporters;
  }
  KELPIE_LOG_WARN("reachability: evicting storage node {} from epoch {}: unreachable for >= {} ms as "
                  "reported by {} members ({})",
                  uuid_to_string(target), epoch->epoch, threshold_ms, reporters.size(), id_list(reporters));
  Status evicted = driver_->evict(target);
  if (!evicted && evicted.code() != ENOENT) {
    KELPIE_LOG_ERROR("reachability: evicting {} failed: {}", uuid_to_string(target), evicted.to_string());
  }
}

void ClusterMember::log_uncorroborated(const EpochRecord& epoch, const EvictionDecision& decision) {
  if (uncorroborated_epoch_ != epoch.epoch) {
    uncorroborated_epoch_ = epoch.epoch;
    uncorroborated_logged_.clear();
  }
  for (const EvictionDecision::Suspect& suspect : decision.suspects) {
    if (suspect.decider != self_.id || suspect.reporters.size() >= kMinReporters) continue;
    size_t& logged = uncorroborated_logged_[suspect.node];
    if (logged == suspect.reporters.size()) continue;
    logged = suspect.reporters.size();
    KELPIE_LOG_WARN("reachability: storage node {} is reported unreachable in epoch {} by {} member(s) "
                    "({}); not evicted: that needs {}",
                    uuid_to_string(suspect.node), epoch.epoch, suspect.reporters.size(),
                    id_list(suspect.reporters), kMinReporters);
  }
}

bool ClusterMember::may_rejoin() {
  std::vector<Uuid> reporters;
  const bool held = rejoin_held(self_.id, driver_->live_members(), driver_->member_statuses(), &reporters);
  if (held != rejoin_held_.exchange(held)) {
    if (held) {
      KELPIE_LOG_WARN("reachability: out of the epoch, and {} member(s) still can not reach this node "
                      "({}): not rejoining until they can",
                      reporters.size(), id_list(reporters));
    } else {
      KELPIE_LOG_INFO("reachability: every member reaches this node again: rejoining");
    }
  }
  return !held;
}

Task<void> ClusterMember::probe_peer(Uuid node, std::string address) {
  co_await switch_to(reactors_.at(0));
  // Epoch 0 is no epoch: every node answers kEpochMismatch at once and does nothing
  // (peer_protocol.h). Any answer proves the peer reachable; the peer client records
  // the outcome in reachability_.
  PeerRequest request;
  request.op = PeerOp::kObjectVersion;
  request.epoch = 0;
  (void)co_await peers_->call(node, address, request);
  {
    std::lock_guard lock(probes_mutex_);
    probes_.erase(node);
  }
  background_.fetch_sub(1);
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
    ReplicaResync resync(*self->peers_, *self->service_);
    for (const ObjectId& id : ids) {
      ++result.objects;
      // A repair runs beside the attached gateway's writes: it holds them
      // (replica_resync.h). A check alone changes nothing and takes no hold.
      std::vector<NodeIndex> suspects;
      const ResyncHold hold = repair ? ResyncHold::kHoldWrites : ResyncHold::kNone;
      ResyncOutcome outcome = co_await resync.run(*view, id, repair, std::move(suspects), hold);
      result.copies += outcome.copies;
      if (!outcome.readable) {
        result.issues.push_back({id, "", "no readable copy", false});
        continue;
      }
      for (const ResyncIssue& issue : outcome.issues) {
        result.issues.push_back(
            {id, uuid_to_string(view->member(issue.node).id), issue.problem, issue.repaired});
      }
    }
    co_return result;
  }(this, view, vdis, repair));
}

}  // namespace kelpie
