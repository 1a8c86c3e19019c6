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

VdiSummary Node::summarize(const Vdi& vdi) const {
  VdiSummary s;
  s.name = vdi.name();
  s.id = vdi.id();
  s.size_bytes = vdi.size();
  s.object_size_bytes = static_cast<uint32_t>(vdi.object_size());
  s.allocated_objects = vdi.allocated_objects();
  s.used_bytes = s.allocated_objects * vdi.object_size();
  s.created_unix_s = vdi.created_unix_s();
  s.attached_connections = vdi.attached.load();
  return s;
}

Result<VdiSummary> Node::create_vdi(const std::string& name, uint64_t size_bytes, uint32_t object_shift) {
  auto vdi = directory_->create(name, size_bytes, object_shift);
  if (!vdi) return vdi.status();
  return summarize(**vdi);
}

Status Node::delete_vdi(const std::string& name) { return directory_->remove(name); }

Status Node::resize_vdi(const std::string& name, uint64_t size_bytes) {
  return directory_->resize(name, size_bytes);
}

Result<VdiSummary> Node::vdi_info(const std::string& name) {
  auto vdi = directory_->find(name);
  if (!vdi) return Status::error(ENOENT, "VDI '" + name + "' not found");
  return summarize(*vdi);
}

std::vector<VdiSummary> Node::list_vdis() {
  std::vector<VdiSummary> out;
  for (const auto& vdi : directory_->list()) out.push_back(summarize(*vdi));
  return out;
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

}  // namespace kelpie
