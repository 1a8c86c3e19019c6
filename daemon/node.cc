#include "daemon/node.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "admin/admin_client.h"
#include "common/log.h"
#include "common/size_parse.h"
#include "engine/inode.h"
#include "engine/offload.h"

namespace kelpie {

unsigned default_thread_count() {
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  unsigned daemons = 0;
  if (DIR* proc = ::opendir("/proc")) {
    while (dirent* entry = ::readdir(proc)) {
      std::ifstream comm(std::string("/proc/") + entry->d_name + "/comm");
      std::string name;
      if (comm && std::getline(comm, name) && name == "kelpied") ++daemons;
    }
    ::closedir(proc);
  }
  return std::max(1u, cores / std::max(1u, daemons));
}

Node::Node(NodeOptions options) : options_(std::move(options)) {
  if (options_.nbd_unix.empty()) options_.nbd_unix = options_.data_dir + "/nbd.sock";
  if (options_.nbd_unix == "none") options_.nbd_unix.clear();
  if (options_.nbd_tcp == "none") options_.nbd_tcp.clear();
  if (options_.threads == 0) options_.threads = default_thread_count();
}

Node::~Node() { close(); }

Status Node::open() {
  started_ = std::chrono::steady_clock::now();
  if (::mkdir(options_.data_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::error(errno, "cannot create data directory " + options_.data_dir);
  }
  std::string lock_path = options_.data_dir + "/lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) return Status::error(errno, "cannot open " + lock_path);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::error(EBUSY, "data directory " + options_.data_dir + " is in use by another kelpied");
  }
  auto sb = load_or_create_superblock(options_.data_dir);
  if (!sb) return sb.status();
  superblock_ = *sb;
  dir_fd_ = ::open(options_.data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return Status::error(errno, "open " + options_.data_dir);

  std::vector<Reactor*> raw;
  for (unsigned i = 0; i < options_.threads; ++i) {
    reactors_.push_back(std::make_unique<Reactor>(i, 256, options_.poll_us));
    raw.push_back(reactors_.back().get());
  }
  for (auto& reactor : reactors_) {
    Reactor* r = reactor.get();
    threads_.emplace_back([r] { r->run(); });
  }
  pool_ = std::make_unique<ReactorPool>(raw);
  io_ = std::make_unique<UringIoBackend>(dir_fd_);
  if (!options_.gateway) {
    store_ = std::make_unique<LocalStore>(raw, *io_, options_.data_dir);
    if (Status st = store_->open(); !st.is_ok()) return st;
  }
  if (!options_.cluster.empty()) return open_cluster();
  if (options_.gateway) return Status::error(EINVAL, "--gateway needs --cluster");
  // One copy: the replay of the dirty logs settled the unclean objects already.
  if (!store_->unclean_objects().empty()) {
    if (Status st = store_->settle_unclean({}); !st.is_ok()) return st;
  }
  directory_ = std::make_unique<VdiDirectory>(options_.data_dir, *store_, *pool_);
  if (Status st = directory_->open(); !st.is_ok()) return st;
  nbd_ = std::make_unique<nbd::NbdServer>(nbd::ServerOptions{options_.nbd_tcp, options_.nbd_unix},
                                          *directory_, *pool_);
  if (Status st = nbd_->start(); !st.is_ok()) return st;
  ready_ = true;
  KELPIE_LOG_INFO("kelpied {} node {} serving {} with {} reactor(s); NBD on {} {}", KELPIE_VERSION,
                  uuid_to_string(superblock_.node_uuid), options_.data_dir, options_.threads,
                  options_.nbd_tcp.empty() ? "-" : options_.nbd_tcp,
                  options_.nbd_unix.empty() ? "-" : options_.nbd_unix);
  return Status::ok();
}

void Node::close() {
  closing_ = true;
  if (startup_.joinable()) startup_.join();
  if (watcher_.joinable()) watcher_.join();
  if (nbd_) nbd_->stop();
  if (writer_policy_) writer_policy_->drain();
  // No cluster-wide flush here: what this gateway wrote is in its replicas' page
  // caches (a process stop loses nothing) and each node flushes its own store when it
  // stops; during `cluster shutdown` the other nodes may already be gone.
  if (cluster_) cluster_->close(!cluster_shutdown_.load());
  if (store_ && !reactors_.empty()) {
    Status st = store_->close();
    if (!st.is_ok()) KELPIE_LOG_ERROR("final flush failed: {}", st.to_string());
  }
  for (auto& r : reactors_) r->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  nbd_.reset();
  directory_.reset();
  cluster_.reset();
  store_.reset();
  reactors_.clear();
  if (dir_fd_ >= 0) ::close(dir_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
  dir_fd_ = lock_fd_ = -1;
}

VdiSummary Node::summarize(const VdiDirectory::Listed& listed) const {
  const Vdi& vdi = *listed.vdi;
  VdiSummary s;
  s.name = listed.name;
  s.id = vdi.id();
  s.size_bytes = vdi.size();
  s.object_size_bytes = static_cast<uint32_t>(vdi.object_size());
  s.allocated_objects = vdi.allocated_objects();
  s.used_bytes = s.allocated_objects * vdi.object_size();
  s.created_unix_s = vdi.created_unix_s();
  s.attached_connections = vdi.attached.load();
  s.read_only = vdi.read_only();
  if (s.read_only) s.tag = split_snapshot_name(listed.name).second;
  s.family_id = vdi.family();
  s.own_bytes = vdi.owned_objects() * vdi.object_size();
  s.shared_bytes = s.used_bytes - s.own_bytes;
  s.restored_from = listed.restored_from;
  s.object_count = static_cast<uint32_t>((vdi.size() + vdi.object_size() - 1) >> vdi.object_shift());
  s.parent_id = vdi.parent();
  return s;
}

Result<VdiSummary> Node::create_vdi(const std::string& name, uint64_t size_bytes, uint32_t object_shift) {
  if (Status st = ready(); !st) return st;
  if (auto raised = raise_generation(); !raised) return raised.status();
  auto vdi = directory_->create(name, size_bytes, object_shift);
  if (!vdi) return vdi.status();
  return summarize({name, *vdi, ""});
}

Status Node::delete_vdi(const std::string& name) {
  if (Status st = ready(); !st) return st;
  if (auto raised = raise_generation(); !raised) return raised.status();
  return directory_->remove(name);
}

Status Node::resize_vdi(const std::string& name, uint64_t size_bytes) {
  if (Status st = ready(); !st) return st;
  if (auto raised = raise_generation(name); !raised) return raised.status();
  return directory_->resize(name, size_bytes);
}

Result<VdiSummary> Node::vdi_info(const std::string& name) {
  if (Status st = ready(); !st) return st;
  auto listed = directory_->lookup(name);
  if (!listed) return listed.status();
  return summarize(*listed);
}

std::vector<VdiSummary> Node::list_vdis() {
  std::vector<VdiSummary> out;
  if (!ready()) return out;
  for (const auto& listed : directory_->list()) out.push_back(summarize(listed));
  return out;
}

Result<VdiSummary> Node::snapshot_vdi(const std::string& name, const std::string& tag) {
  if (Status st = ready(); !st) return st;
  auto raised = raise_generation(name);
  if (!raised) return raised.status();
  std::shared_ptr<Vdi> head = directory_->find(name);
  const VdiId before = head ? head->id() : kNoVdi;
  auto listed = directory_->snapshot(name, tag);
  if (!listed) return listed.status();
  if (cluster_ && head && head->id() != before) {
    // The head goes on under a new id: a write attach held here follows it.
    WriteGrants& grants = cluster_->replicated().grants();
    if (auto held = grants.find(before); held && !held->revoked) {
      grants.grant(head->id(), held->generation, held->lease_breaks);
      grants.release(before);
    }
  }
  return summarize(*listed);
}

Result<VdiSummary> Node::clone_vdi(const std::string& snapshot, const std::string& new_name) {
  if (Status st = ready(); !st) return st;
  if (auto raised = raise_generation(); !raised) return raised.status();
  auto listed = directory_->clone(snapshot, new_name);
  if (!listed) return listed.status();
  return summarize(*listed);
}

Result<VdiSummary> Node::rollback_vdi(const std::string& snapshot) {
  if (Status st = ready(); !st) return st;
  if (auto raised = raise_generation(); !raised) return raised.status();
  auto listed = directory_->rollback(snapshot);
  if (!listed) return listed.status();
  return summarize(*listed);
}

Result<BackupPlan> Node::backup_plan(const std::string& to_snapshot, const std::string& from_snapshot) {
  if (Status st = ready(); !st) return st;
  auto extents = directory_->changed_extents(to_snapshot, from_snapshot);
  if (!extents) return extents.status();
  auto to = directory_->find(to_snapshot);
  BackupPlan plan;
  std::string node = uuid_to_string(superblock_.node_uuid);
  plan.to_identity = node + ":" + std::to_string(to->id());
  if (!from_snapshot.empty()) plan.from_identity = node + ":" + std::to_string(directory_->find(from_snapshot)->id());
  plan.size_bytes = to->size();
  plan.object_size_bytes = static_cast<uint32_t>(to->object_size());
  plan.extents = std::move(*extents);
  return plan;
}

Status Node::set_restored_from(const std::string& name, const std::string& identity) {
  if (Status st = ready(); !st) return st;
  if (auto raised = raise_generation(); !raised) return raised.status();
  return directory_->set_restored_from(name, identity);
}

NodeSummary Node::node_info() {
  NodeSummary s;
  s.version = KELPIE_VERSION;
  s.node_uuid = uuid_to_string(superblock_.node_uuid);
  s.data_dir = options_.data_dir;
  s.nbd_tcp = options_.nbd_tcp;
  s.nbd_unix = options_.nbd_unix;
  s.admin_address = options_.admin_address;
  s.threads = options_.threads;
  s.format_version = superblock_.format_version;
  struct statvfs fs{};
  if (::statvfs(options_.data_dir.c_str(), &fs) == 0) {
    s.capacity_bytes = uint64_t{fs.f_blocks} * fs.f_frsize;
    s.free_bytes = uint64_t{fs.f_bavail} * fs.f_frsize;
  }
  s.objects = store_ ? store_->object_count() : 0;
  s.vdi_count = directory_ && ready_ ? static_cast<uint32_t>(directory_->list().size()) : 0;
  s.nbd_connections = nbd_ && ready_ ? nbd_->connection_count() : 0;
  s.uptime_s = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::steady_clock::now() - started_).count());
  return s;
}

namespace {
Status not_a_cluster() {
  return Status::error(ENOTSUP, "this node is not part of a cluster (started without --cluster)");
}

// "" when no node reports unavailable objects in `epoch`; else a warning with each
// node's count (an object is counted on every node that must hold it).
std::string unavailable_objects(const MembershipDriver& driver, uint64_t epoch) {
  std::string per_node;
  for (const auto& [id, text] : driver.member_statuses()) {
    auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded() || json.value("epoch", uint64_t{0}) != epoch) continue;
    uint64_t count = json.value("unavailable", uint64_t{0});
    if (count == 0) continue;
    if (!per_node.empty()) per_node += ", ";
    per_node += std::to_string(count) + " on " + id.substr(0, 8);
  }
  if (per_node.empty()) return "";
  return "objects unavailable (their newest copies may be only on nodes not in this epoch; "
         "they recover when those return): " + per_node;
}
}  // namespace

// ---- cluster mode -------------------------------------------------------------

Status Node::open_cluster() {
  ClusterMemberOptions options;
  options.spec = options_.cluster;
  options.listen = options_.listen;
  options.data_dir = options_.data_dir;
  options.admin_address = options_.admin_address;
  options.nbd_address = options_.nbd_tcp;
  options.zone = options_.zone;
  options.vnodes = options_.vnodes;
  options.gateway = options_.gateway;
  options.full_ratio = options_.full_ratio;
  options.unreachable_timeout = options_.unreachable_timeout;
  options.test_refuse_peers_file = options_.test_refuse_peers_file;
  cluster_ = std::make_unique<ClusterMember>(options, superblock_, *pool_, store_.get());
  Status st = cluster_->open([this] {
    // `kelpie cluster shutdown`: stop like SIGTERM, without leaving (no new epoch).
    cluster_shutdown_ = true;
    ::kill(::getpid(), SIGTERM);
  });
  if (!st) return st;
  startup_ = std::thread([this] { serve_when_running(); });
  return Status::ok();
}

void Node::serve_when_running() {
  // The directory lives in the cluster: it can be read once an epoch exists.
  while (!closing_ && !cluster_->epochs().latest()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (closing_) return;
  directory_ = std::make_unique<VdiDirectory>(cluster_->make_directory_backing(), cluster_->store(),
                                              *pool_);
  directory_->set_writers_listener(
      [this](const std::vector<std::pair<VdiId, uint64_t>>& grants) { cluster_->fences().learn(grants); });
  for (;;) {
    Status st = directory_->open();
    if (st) break;
    KELPIE_LOG_WARN("VDI directory not readable yet: {}; retrying", st.to_string());
    for (int i = 0; i < 20 && !closing_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (closing_) return;
  }
  std::string self = uuid_to_string(superblock_.node_uuid);
  directory_->set_cluster_identity(self, [this](const std::string& id) {
    for (const MemberInfo& m : cluster_->driver().live_members()) {
      if (uuid_to_string(m.id) == id) return true;
    }
    return false;
  });
  writer_policy_ = std::make_unique<WriterPolicy>(*this);
  directory_->set_attach_policy(writer_policy_.get());
  cluster_->replicated().set_attach_validator([this](VdiId head, uint64_t generation) {
    return directory_->writer_holds(head, generation);
  });
  auto generation = directory_->next_generation();
  if (generation) cluster_->replicated().set_generation(*generation);
  nbd_ = std::make_unique<nbd::NbdServer>(nbd::ServerOptions{options_.nbd_tcp, options_.nbd_unix},
                                          *directory_, *pool_);
  if (Status st = nbd_->start(); !st) {
    KELPIE_LOG_CRITICAL("cannot serve NBD: {}", st.to_string());
    cluster_shutdown_ = false;
    ::kill(::getpid(), SIGTERM);
    return;
  }
  ready_ = true;
  KELPIE_LOG_INFO("serving NBD on {} {} (cluster {})", options_.nbd_tcp.empty() ? "-" : options_.nbd_tcp,
                  options_.nbd_unix.empty() ? "-" : options_.nbd_unix, cluster_->driver().describe());
  watch_directory();
}

void Node::watch_directory() {
  // Other nodes' directory changes (create, snapshot, delete): reload when the
  // cluster says it changed. Cheap: a stat or a counter per tick.
  std::string last = cluster_->directory_stamp();
  auto published = std::chrono::steady_clock::now();
  while (!closing_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (std::chrono::steady_clock::now() - published > std::chrono::seconds(1)) {
      published = std::chrono::steady_clock::now();
      cluster_->refresh_status();
    }
    std::string now = cluster_->directory_stamp();
    if (now == last) continue;
    last = now;
    if (Status st = directory_->refresh(); !st) {
      KELPIE_LOG_WARN("VDI directory refresh failed: {}", st.to_string());
    }
  }
}

Task<Result<std::shared_ptr<Vdi>>> Node::WriterPolicy::attach(const std::string& name,
                                                               std::shared_ptr<Vdi> found) {
  InFlight counted(in_flight_);
  bool writable = !found->read_only();
  auto* self = this;
  // Off the reactor: the directory's cluster-wide lock, and maybe inode/map reads.
  // A named function, not a temporary lambda in the co_await: GCC 12 destroys such
  // temporaries' captures twice.
  std::function<Result<std::shared_ptr<Vdi>>()> work = [self, name, writable, found_id = found->id()]()
      -> Result<std::shared_ptr<Vdi>> {
    std::lock_guard lock(self->mutex_);
    VdiDirectory& directory = *self->node_.directory_;
    // The writer lock first: the VDI is then loaded after its previous writer
    // (wherever it ran) stopped, so this node sees that writer's map.
    ReplicatedStore& store = self->node_.cluster_->replicated();
    // A new write attach when none is held here, or when the one held was revoked
    // (this node was failed out and the VDI taken over meanwhile).
    bool lock_needed = writable && self->writers_[name] == 0;
    if (writable && !lock_needed) {
      auto held = store.grants().find(found_id);
      lock_needed = !held || held->revoked;
    }
    const uint64_t lease_breaks = self->node_.cluster_->epochs().lease_breaks();
    std::optional<uint64_t> granted;
    if (lock_needed) {
      // A client that just closed its connection through another node may still be
      // detaching there: give that a moment before refusing.
      bool took_over = false;
      auto generation = directory.lock_writer(name, &took_over);
      for (int i = 0; i < 20 && !generation && generation.status().code() == EBUSY; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        generation = directory.lock_writer(name, &took_over);
      }
      if (generation && took_over) {
        // Rule 4: the dead writer's last writes may have reached only some replicas.
        // Make every replica of the VDI's objects equal (newest version wins) before
        // anyone reads or writes through here.
        if (std::shared_ptr<Vdi> head = directory.find(name)) {
          // A takeover comes right after the epoch that failed the old writer out:
          // a resync begun on the view before it meets that node's dropped
          // connection. Try again (bounded) once the new epoch is in.
          auto resync = self->node_.cluster_->check({head->id()}, true);
          for (int attempt = 1; attempt < 5 && !resync; ++attempt) {
            KELPIE_LOG_INFO("VDI '{}': resync after its writer died: {}; trying again", name,
                            resync.status().message());
            std::this_thread::sleep_for(std::chrono::milliseconds(200) * attempt);
            resync = self->node_.cluster_->check({head->id()}, true);
          }
          if (!resync) {
            (void)directory.unlock_writer(name);
            self->writers_.erase(name);
            return Status::error(EIO, "VDI '" + name + "': resync after its writer died failed: " +
                                          resync.status().message());
          }
          size_t repaired = 0;
          for (const auto& issue : resync->issues) repaired += issue.repaired ? 1 : 0;
          KELPIE_LOG_INFO("VDI '{}': took over from a writer that never detached; {} objects checked, {} copies repaired",
                          name, resync->objects, repaired);
        }
      }
      if (!generation) {
        if (self->writers_[name] == 0) self->writers_.erase(name);
        return generation.status();
      }
      granted = *generation;
    }
    // The first connection of this node loads the VDI afresh; it comes back pinned.
    Result<std::shared_ptr<Vdi>> vdi = directory.attach_local(name, self->attached_[name] == 0);
    if (!vdi) {
      if (self->attached_[name] == 0) self->attached_.erase(name);
      if (writable && self->writers_[name] == 0) {
        self->writers_.erase(name);
        (void)directory.unlock_writer(name);
      }
      return vdi.status();
    }
    // The VDI's writes carry its own attach generation from now on (per VDI, never
    // raised by other attaches or operations on this node).
    if (granted) store.grants().grant((*vdi)->id(), *granted, lease_breaks);
    if (writable) self->writers_[name]++;
    self->attached_[name]++;
    return vdi;
  };
  Result<std::shared_ptr<Vdi>> vdi = co_await offload<Result<std::shared_ptr<Vdi>>>(std::move(work));
  if (!vdi) KELPIE_LOG_INFO("nbd: attach of '{}' refused: {}", name, vdi.status().message());
  co_return vdi;
}

Task<void> Node::WriterPolicy::detach(const std::string& name, std::shared_ptr<Vdi> vdi) {
  InFlight counted(in_flight_);
  bool writable = !vdi->read_only();
  auto* self = this;
  std::function<Status()> work = [self, name, writable, head = vdi->id()] {
    std::lock_guard lock(self->mutex_);
    if (--self->attached_[name] == 0) self->attached_.erase(name);
    if (!writable) return Status::ok();
    if (--self->writers_[name] > 0) return Status::ok();
    self->writers_.erase(name);
    ReplicatedStore& store = self->node_.cluster_->replicated();
    auto held = store.grants().find(head);
    store.grants().release(head);
    // A revoked attach is another node's now: its directory entry is not ours to clear.
    if (held && held->revoked) return Status::ok();
    // Writes that failed on some replica and are not settled yet: whoever attaches
    // next (here or elsewhere) resyncs the VDI first (rule 4).
    const bool unsettled = store.has_unsettled(head);
    if (unsettled) {
      KELPIE_LOG_WARN("VDI '{}' detached with objects whose replicas may differ; the next "
                      "write attach resyncs it", name);
    }
    return self->node_.directory_->unlock_writer(name, unsettled);
  };
  Status st = co_await offload<Status>(std::move(work));
  if (!st) KELPIE_LOG_WARN("releasing the write attach of '{}' failed: {}", name, st.to_string());
}

Task<Status> Node::WriterPolicy::sync() {
  InFlight counted(in_flight_);
  auto* self = this;
  // refresh() takes the directory's cluster-wide lock: every control operation that
  // returned anywhere saved its document before releasing it, so the document read
  // under the lock holds them all. A named function, as in attach().
  std::function<Status()> work = [self] { return self->node_.directory_->refresh(); };
  Status st = co_await offload<Status>(std::move(work));
  if (!st) KELPIE_LOG_WARN("nbd: VDI directory refresh for an export lookup failed: {}", st.to_string());
  co_return st;
}

void Node::WriterPolicy::drain() {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (in_flight_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Result<uint64_t> Node::raise_generation(const std::string& name) {
  // Directory operations write inodes and maps: their versions must be above those of
  // every earlier writer of those objects, wherever it ran.
  if (!cluster_) return uint64_t{0};
  ReplicatedStore& store = cluster_->replicated();
  std::shared_ptr<Vdi> head = name.empty() ? nullptr : directory_->find(name);
  std::optional<WriteGrants::Grant> held;
  if (head) held = store.grants().find(head->id());
  uint64_t generation = 0;
  if (held && !held->revoked) {
    // NAME is written through this node: its attach moves to the new generation with
    // the operation, so the objects the operation writes and the attach's later writes
    // agree (a copy refuses a generation below its own).
    const uint64_t lease_breaks = cluster_->epochs().lease_breaks();
    auto raised = directory_->next_generation(name, held->generation);
    if (!raised) return raised.status();
    generation = raised->generation;
    if (raised->regranted) {
      store.grants().grant(head->id(), generation, lease_breaks);
    } else {
      store.grants().revoke(head->id());  // the directory names another attach now
    }
  } else {
    auto raised = directory_->next_generation();
    if (!raised) return raised.status();
    generation = *raised;
  }
  store.set_generation(std::max(store.generation(), generation));
  return generation;
}

Status Node::ready() const {
  if (ready_) {
    if (cluster_) return directory_->refresh();
    return Status::ok();
  }
  if (!cluster_) return Status::error(EAGAIN, "the node is starting");
  switch (cluster_->driver().status()) {
    case ClusterStatus::kUnformatted:
      return Status::error(EAGAIN, "the cluster is not formatted yet (run: kelpie cluster format)");
    case ClusterStatus::kWaiting:
      return Status::error(EAGAIN,
                           "the cluster is waiting for the nodes of its last epoch "
                           "(see kelpie cluster info; kelpie cluster recover force)");
    case ClusterStatus::kShutdown:
      return Status::error(EAGAIN, "the cluster is shutting down");
    default:
      return Status::error(EAGAIN, "the node is starting");
  }
}

Result<ClusterSummary> Node::summarize_cluster() const {
  MembershipDriver& driver = cluster_->driver();
  ClusterSummary s;
  s.driver = driver.describe();
  s.status = cluster_status_name(driver.status());
  // The epoch this node works in (published to its reactors), not the newest one in
  // the log: an epoch appended a moment ago may not have reached the data path yet,
  // and a caller who waits for "epoch N" must find requests served in epoch N.
  std::optional<EpochRecord> epoch;
  if (std::shared_ptr<const EpochView> view = cluster_->epochs().latest()) epoch = view->record;
  if (!epoch) epoch = driver.current_epoch();
  if (epoch) {
    s.cluster_uuid = uuid_to_string(epoch->cluster);
    s.epoch = epoch->epoch;
    s.copies = epoch->copies;
    s.min_copies = epoch->min_copies;
    s.storage_nodes = static_cast<uint32_t>(epoch->nodes.size());
    auto view = make_epoch_view(*epoch, superblock_.node_uuid);
    if (view) s.zones = static_cast<uint32_t>((*view)->ring.zone_count());
    if (s.zones < s.copies) {
      s.warnings.push_back("only " + std::to_string(s.zones) + " zone(s): objects keep " +
                           std::to_string(s.zones) + " of " + std::to_string(s.copies) + " copies");
    }
    if (s.zones < s.min_copies) {
      s.warnings.push_back("fewer zones than min-copies (" + std::to_string(s.min_copies) +
                           "): writes fail until nodes return");
    }
    if (std::string unavailable = unavailable_objects(driver, epoch->epoch); !unavailable.empty()) {
      s.warnings.push_back(unavailable);
    }
  }
  for (const MemberInfo& m : driver.live_members()) {
    if (m.gateway) ++s.gateways;
  }
  for (const EpochRecord& record : driver.epoch_history()) {
    EpochSummary e;
    e.epoch = record.epoch;
    e.created_unix_ms = record.created_unix_ms;
    e.reason = record.reason;
    for (const MemberInfo& m : record.nodes) e.nodes.push_back(uuid_to_string(m.id));
    s.history.push_back(std::move(e));
  }
  return s;
}

Result<ClusterSummary> Node::format_cluster(uint32_t copies, uint32_t min_copies) {
  if (!cluster_) return not_a_cluster();
  if (copies < 1 || copies > kMaxCopies) return Status::error(EINVAL, "copies must be from 1 to 8");
  if (min_copies < 1 || min_copies > copies) {
    return Status::error(EINVAL, "min-copies must be from 1 to copies");
  }
  auto record = cluster_->driver().format(copies, min_copies);
  if (!record) return record.status();
  return summarize_cluster();
}

Result<ClusterSummary> Node::cluster_info() {
  if (!cluster_) return not_a_cluster();
  return summarize_cluster();
}

Result<std::vector<MemberSummary>> Node::list_nodes() {
  if (!cluster_) return not_a_cluster();
  MembershipDriver& driver = cluster_->driver();
  std::vector<MemberInfo> live = driver.live_members();
  auto statuses = driver.member_statuses();
  std::vector<MemberSummary> out;
  auto add = [&](const MemberInfo& m, const std::string& status) {
    MemberSummary s;
    s.id = uuid_to_string(m.id);
    s.address = m.peer_address;
    s.nbd_address = m.nbd_address;
    s.admin_address = m.admin_address;
    s.zone = m.zone;
    s.vnodes = m.vnodes;
    s.gateway = m.gateway;
    s.status = status;
    s.capacity_bytes = m.capacity_bytes;
    auto it = statuses.find(s.id);
    if (it != statuses.end()) {
      auto json = nlohmann::json::parse(it->second, nullptr, false);
      if (!json.is_discarded()) {
        s.objects = json.value("objects", uint64_t{0});
        s.used_bytes = json.value("used_bytes", uint64_t{0});
      }
    }
    out.push_back(std::move(s));
  };
  auto is_live = [&](const Uuid& id) {
    return std::any_of(live.begin(), live.end(), [&](const MemberInfo& m) { return m.id == id; });
  };
  if (auto epoch = driver.current_epoch()) {
    for (const MemberInfo& m : epoch->nodes) add(m, is_live(m.id) ? "up" : "down");
  }
  for (const MemberInfo& m : live) {
    bool listed = std::any_of(out.begin(), out.end(),
                              [&](const MemberSummary& s) { return s.id == uuid_to_string(m.id); });
    if (!listed) add(m, m.gateway ? "gateway" : "joining");
  }
  return out;
}

Result<std::vector<RecoverySummary>> Node::recovery_status() {
  if (!cluster_) return not_a_cluster();
  std::vector<RecoverySummary> out;
  for (const auto& [id, text] : cluster_->driver().member_statuses()) {
    auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded() || !json.contains("state")) continue;
    RecoverySummary r;
    r.node = id;
    r.epoch = json.value("epoch", uint64_t{0});
    r.state = json.value("state", std::string());
    r.to_recover = json.value("to_recover", uint64_t{0});
    r.done = json.value("done", uint64_t{0});
    r.unavailable = json.value("unavailable", uint64_t{0});
    r.rate_mib_s = json.value("rate_mib_s", 0.0);
    out.push_back(std::move(r));
  }
  return out;
}

Status Node::kill_node(const std::string& id) {
  if (!cluster_) return not_a_cluster();
  std::vector<MemberInfo> matches;
  for (const MemberInfo& m : cluster_->driver().live_members()) {
    if (uuid_to_string(m.id).rfind(id, 0) == 0) matches.push_back(m);
  }
  if (matches.empty()) return Status::error(ENOENT, "no live node " + id);
  if (matches.size() > 1) return Status::error(EINVAL, "node id " + id + " is ambiguous");
  const MemberInfo& target = matches.front();
  if (target.id == superblock_.node_uuid) {
    KELPIE_LOG_INFO("stopping at the request of kelpie node kill");
    // After the reply has gone out: the admin server answers before the signal lands.
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ::kill(::getpid(), SIGTERM);
    }).detach();
    return Status::ok();
  }
  auto client = AdminClient::connect(target.admin_address);
  if (!client) return client.status();
  auto reply = client->call("node.kill", {{"id", uuid_to_string(target.id)}});
  if (!reply) return reply.status();
  return Status::ok();
}

Status Node::shutdown_cluster() {
  if (!cluster_) return not_a_cluster();
  return cluster_->driver().request_shutdown();
}

Status Node::recover_force() {
  if (!cluster_) return not_a_cluster();
  auto record = cluster_->driver().force_recover();
  return record ? Status::ok() : record.status();
}

Result<CheckReport> Node::check(const std::string& vdi, bool repair) {
  if (!cluster_) return not_a_cluster();
  if (Status st = ready(); !st) return st;
  std::set<VdiId> ids;
  std::map<VdiId, std::string> names;
  for (const auto& listed : directory_->list()) names[listed.vdi->id()] = listed.name;
  if (!vdi.empty()) {
    auto [name, tag] = split_snapshot_name(vdi);
    bool found = false;
    for (const auto& listed : directory_->list()) {
      if (listed.name == vdi || (tag.empty() && split_snapshot_name(listed.name).first == name)) {
        ids.insert(listed.vdi->id());
        found = true;
      }
    }
    if (!found) return Status::error(ENOENT, "VDI '" + vdi + "' not found");
  }
  if (repair) {
    // A repair rewrites whole copies: not while a gateway writes them (it could roll
    // back a write that landed after the check read the copies). A client that just
    // closed its connection may still be detaching on its node: give that a moment
    // (as an attach does) before refusing.
    auto writing = [&]() -> std::optional<std::pair<std::string, std::string>> {
      for (const auto& [name, writer] : directory_->live_writers()) {
        if (vdi.empty() || split_snapshot_name(vdi).first == name) return std::make_pair(name, writer);
      }
      return std::nullopt;
    };
    auto busy = writing();
    for (int i = 0; i < 20 && busy; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (Status st = directory_->refresh(); !st) return st;
      busy = writing();
    }
    if (busy) {
      return Status::error(EBUSY, "VDI '" + busy->first + "' is attached for writing through node " +
                                      busy->second + "; repair needs it detached");
    }
  }
  // Flush first, so copies are compared after everything acknowledged has landed.
  (void)pool_->at(0).block_on(cluster_->store().flush());
  auto result = cluster_->check(ids, repair);
  if (!result) return result.status();
  CheckReport report;
  report.objects_checked = result->objects;
  report.copies_checked = result->copies;
  for (const ReplicaCheck& c : result->issues) {
    CheckIssue issue;
    issue.object = c.id.to_hex();
    auto it = names.find(c.id.vdi);
    if (it != names.end()) issue.vdi = it->second;
    issue.node = c.node;
    issue.problem = c.problem;
    issue.repaired = c.repaired;
    if (c.repaired) ++report.repaired;
    report.issues.push_back(std::move(issue));
  }
  return report;
}

}  // namespace kelpie
