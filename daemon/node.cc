#include "daemon/node.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fstream>

#include "common/log.h"
#include "common/size_parse.h"
#include "engine/inode.h"

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
    reactors_.push_back(std::make_unique<Reactor>(i, 256));
    raw.push_back(reactors_.back().get());
  }
  for (auto& reactor : reactors_) {
    Reactor* r = reactor.get();
    threads_.emplace_back([r] { r->run(); });
  }
  pool_ = std::make_unique<ReactorPool>(raw);
  io_ = std::make_unique<UringIoBackend>(dir_fd_);
  store_ = std::make_unique<LocalStore>(raw, *io_, options_.data_dir);
  if (Status st = store_->open(); !st.is_ok()) return st;
  directory_ = std::make_unique<VdiDirectory>(options_.data_dir, *store_, *pool_);
  if (Status st = directory_->open(); !st.is_ok()) return st;
  nbd_ = std::make_unique<nbd::NbdServer>(nbd::ServerOptions{options_.nbd_tcp, options_.nbd_unix},
                                          *directory_, *pool_);
  if (Status st = nbd_->start(); !st.is_ok()) return st;
  KELPIE_LOG_INFO("kelpied {} node {} serving {} with {} reactor(s); NBD on {} {}", KELPIE_VERSION,
                  uuid_to_string(superblock_.node_uuid), options_.data_dir, options_.threads,
                  options_.nbd_tcp.empty() ? "-" : options_.nbd_tcp,
                  options_.nbd_unix.empty() ? "-" : options_.nbd_unix);
  return Status::ok();
}

void Node::close() {
  if (nbd_) nbd_->stop();
  if (store_ && !reactors_.empty()) {
    Status st = store_->close();
    if (!st.is_ok()) KELPIE_LOG_ERROR("final flush failed: {}", st.to_string());
  }
  for (auto& r : reactors_) r->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  nbd_.reset();
  directory_.reset();
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
  auto vdi = directory_->create(name, size_bytes, object_shift);
  if (!vdi) return vdi.status();
  return summarize({name, *vdi, ""});
}

Status Node::delete_vdi(const std::string& name) { return directory_->remove(name); }

Status Node::resize_vdi(const std::string& name, uint64_t size_bytes) {
  return directory_->resize(name, size_bytes);
}

Result<VdiSummary> Node::vdi_info(const std::string& name) {
  auto listed = directory_->lookup(name);
  if (!listed) return listed.status();
  return summarize(*listed);
}

std::vector<VdiSummary> Node::list_vdis() {
  std::vector<VdiSummary> out;
  for (const auto& listed : directory_->list()) out.push_back(summarize(listed));
  return out;
}

Result<VdiSummary> Node::snapshot_vdi(const std::string& name, const std::string& tag) {
  auto listed = directory_->snapshot(name, tag);
  if (!listed) return listed.status();
  return summarize(*listed);
}

Result<VdiSummary> Node::clone_vdi(const std::string& snapshot, const std::string& new_name) {
  auto listed = directory_->clone(snapshot, new_name);
  if (!listed) return listed.status();
  return summarize(*listed);
}

Result<VdiSummary> Node::rollback_vdi(const std::string& snapshot) {
  auto listed = directory_->rollback(snapshot);
  if (!listed) return listed.status();
  return summarize(*listed);
}

Result<BackupPlan> Node::backup_plan(const std::string& to_snapshot, const std::string& from_snapshot) {
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
  s.objects = store_->object_count();
  s.vdi_count = static_cast<uint32_t>(directory_->list().size());
  s.nbd_connections = nbd_->connection_count();
  s.uptime_s = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::steady_clock::now() - started_).count());
  return s;
}

namespace {
Status not_a_cluster() {
  return Status::error(ENOTSUP, "this node is not part of a cluster (started without --cluster)");
}
}  // namespace

Result<ClusterSummary> Node::format_cluster(uint32_t, uint32_t) { return not_a_cluster(); }
Result<ClusterSummary> Node::cluster_info() { return not_a_cluster(); }
Result<std::vector<MemberSummary>> Node::list_nodes() { return not_a_cluster(); }
Result<std::vector<RecoverySummary>> Node::recovery_status() { return not_a_cluster(); }
Status Node::kill_node(const std::string&) { return not_a_cluster(); }
Status Node::shutdown_cluster() { return not_a_cluster(); }
Status Node::recover_force() { return not_a_cluster(); }
Result<CheckReport> Node::check(const std::string&, bool) { return not_a_cluster(); }

}  // namespace kelpie
