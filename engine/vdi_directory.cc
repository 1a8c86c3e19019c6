#include "engine/vdi_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/log.h"
#include "common/size_parse.h"
#include "engine/superblock.h"

namespace kelpie {
namespace {
constexpr char kFileName[] = "vdis.json";
constexpr int kDirectoryVersion = 1;
}  // namespace

VdiDirectory::VdiDirectory(std::string data_dir, ObjectStore& store, const ReactorPool& reactors)
    : data_dir_(std::move(data_dir)), store_(store), reactors_(reactors) {}

Status VdiDirectory::open() {
  std::string path = data_dir_ + "/" + kFileName;
  std::ifstream in(path);
  if (!in) return Status::ok();  // a new node: no VDIs yet
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || doc.value("version", 0) != kDirectoryVersion) {
    return Status::error(EINVAL, path + " is damaged or of an unknown version");
  }
  next_id_ = doc.value("next_id", 1u);
  for (const auto& entry : doc["vdis"]) {
    VdiId id = entry.value("id", 0u);
    VdiId family = entry.value("family", 0u);
    std::string name = entry.value("name", "");
    std::vector<uint8_t> image(kInodeObjectSize);
    Status st = reactors_.at(0).block_on(store_.read(ObjectId::inode(id, family), 0, image));
    if (!st.is_ok()) return Status::error(EIO, "inode of VDI '" + name + "' unreadable: " + st.to_string());
    auto inode = decode_inode(image);
    if (!inode) return Status::error(EIO, "inode of VDI '" + name + "': " + inode.status().message());
    auto vdi = std::make_shared<Vdi>(std::move(*inode), store_, reactors_);
    st = reactors_.at(0).block_on(vdi->load());
    if (!st.is_ok()) return st;
    vdis_[name] = std::move(vdi);
  }
  KELPIE_LOG_INFO("loaded {} VDIs", vdis_.size());
  return Status::ok();
}

Status VdiDirectory::save_locked() {
  nlohmann::json doc;
  doc["version"] = kDirectoryVersion;
  doc["next_id"] = next_id_;
  doc["vdis"] = nlohmann::json::array();
  for (const auto& [name, vdi] : vdis_) {
    doc["vdis"].push_back({{"name", name}, {"id", vdi->id()}, {"family", vdi->id()}});
  }
  std::string text = doc.dump(1) + "\n";
  return write_file_atomically(data_dir_, kFileName, text.data(), text.size());
}

Status VdiDirectory::validate_size(uint64_t size_bytes, uint32_t object_shift) {
  if (object_shift < kMinObjectShift || object_shift > kMaxObjectShift) {
    return Status::error(EINVAL, "object size must be a power of two from 1 MiB to 64 MiB");
  }
  if (size_bytes == 0) return Status::error(EINVAL, "size must be greater than zero");
  if (size_bytes % 512 != 0) return Status::error(EINVAL, "size must be a multiple of 512 bytes");
  if (size_bytes > max_vdi_size(object_shift)) {
    return Status::error(EINVAL, "size exceeds the maximum of " + format_size(max_vdi_size(object_shift)) +
                                     " for this object size");
  }
  return Status::ok();
}

Result<std::shared_ptr<Vdi>> VdiDirectory::create(const std::string& name, uint64_t size_bytes,
                                                  uint32_t object_shift) {
  std::lock_guard control(control_mutex_);
  if (Status st = validate_vdi_name(name); !st.is_ok()) return st;
  if (Status st = validate_size(size_bytes, object_shift); !st.is_ok()) return st;
  VdiId id;
  {
    std::lock_guard lock(mutex_);
    if (vdis_.contains(name)) return Status::error(EEXIST, "VDI '" + name + "' already exists");
    id = next_id_++;
  }
  Inode inode;
  inode.id = id;
  inode.family = id;
  inode.object_shift = object_shift;
  inode.size_bytes = size_bytes;
  inode.created_unix_s = std::time(nullptr);
  inode.name = name;
  auto vdi = std::make_shared<Vdi>(std::move(inode), store_, reactors_);
  Status st = reactors_.at(0).block_on(vdi->create());
  if (!st.is_ok()) return st;
  std::lock_guard lock(mutex_);
  vdis_[name] = vdi;
  st = save_locked();
  if (!st.is_ok()) {
    vdis_.erase(name);
    return st;
  }
  KELPIE_LOG_INFO("created VDI '{}' id {} size {} object size {}", name, id, format_size(size_bytes),
                  format_size(uint64_t{1} << object_shift));
  return vdi;
}

Status VdiDirectory::remove(const std::string& name) {
  std::lock_guard control(control_mutex_);
  std::shared_ptr<Vdi> vdi;
  {
    std::lock_guard lock(mutex_);
    auto it = vdis_.find(name);
    if (it == vdis_.end()) return Status::error(ENOENT, "VDI '" + name + "' not found");
    if (it->second->attached.load() > 0) {
      return Status::error(EBUSY, "VDI '" + name + "' is attached by " +
                                      std::to_string(it->second->attached.load()) + " NBD connection(s)");
    }
    vdi = it->second;
    vdis_.erase(it);
    Status st = save_locked();
    if (!st.is_ok()) {
      vdis_[name] = vdi;
      return st;
    }
  }
  Status st = reactors_.at(0).block_on(vdi->destroy());
  if (!st.is_ok()) {
    KELPIE_LOG_ERROR("VDI '{}' removed from the directory, but reclaiming its objects failed: {}",
                     name, st.to_string());
    return st;
  }
  KELPIE_LOG_INFO("deleted VDI '{}'", name);
  return Status::ok();
}

Status VdiDirectory::resize(const std::string& name, uint64_t size_bytes) {
  std::lock_guard control(control_mutex_);
  std::shared_ptr<Vdi> vdi = find(name);
  if (!vdi) return Status::error(ENOENT, "VDI '" + name + "' not found");
  if (Status st = validate_size(size_bytes, vdi->object_shift()); !st.is_ok()) return st;
  if (size_bytes < vdi->size() && vdi->attached.load() > 0) {
    return Status::error(EBUSY, "VDI '" + name + "' is attached; shrinking needs it detached");
  }
  return reactors_.at(0).block_on(vdi->resize(size_bytes));
}

std::shared_ptr<Vdi> VdiDirectory::find(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto it = vdis_.find(name);
  return it == vdis_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Vdi>> VdiDirectory::list() const {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Vdi>> out;
  for (const auto& [name, vdi] : vdis_) out.push_back(vdi);
  return out;
}

}  // namespace kelpie
