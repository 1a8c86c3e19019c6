#include "engine/vdi_directory.h"

#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/log.h"
#include "common/size_parse.h"
#include "engine/superblock.h"

namespace kelpie {
namespace {
constexpr char kFileName[] = "vdis.json";
constexpr int kDirectoryVersion = 1;
constexpr size_t kReclaimBatch = 64;

Status not_found(const std::string& name) { return Status::error(ENOENT, "VDI '" + name + "' not found"); }
}  // namespace

std::pair<std::string, std::string> split_snapshot_name(const std::string& text) {
  size_t at = text.find('@');
  if (at == std::string::npos) return {text, ""};
  return {text.substr(0, at), text.substr(at + 1)};
}

VdiDirectory::VdiDirectory(std::string data_dir, ObjectStore& store, const ReactorPool& reactors)
    : VdiDirectory(make_file_directory_backing(data_dir, kFileName, false), store, reactors) {}

VdiDirectory::VdiDirectory(std::unique_ptr<DirectoryBacking> backing, ObjectStore& store,
                           const ReactorPool& reactors)
    : backing_(std::move(backing)), store_(store), reactors_(reactors) {}

VdiDirectory::Control::Control(VdiDirectory& directory)
    : directory_(directory), control_(directory.control_mutex_) {
  status_ = directory_.backing_->lock();
  if (!status_) return;
  locked_ = true;
  Result<std::string> text = directory_.backing_->read();
  if (!text) {
    status_ = text.status();
    return;
  }
  directory_.publish_writers(*text);
  if (*text != directory_.loaded_text_) status_ = directory_.reconcile(*text);
}

VdiDirectory::Control::~Control() {
  if (locked_) directory_.backing_->unlock();
}

Result<uint64_t> VdiDirectory::next_generation() {
  Control control(*this);
  if (!control.status()) return control.status();
  std::lock_guard lock(mutex_);
  ++generation_;
  if (Status st = save_locked(); !st) return st;
  return generation_;
}

void VdiDirectory::set_cluster_identity(std::string self,
                                        std::function<bool(const std::string&)> alive) {
  std::lock_guard lock(mutex_);
  self_node_ = std::move(self);
  alive_ = std::move(alive);
}

Status VdiDirectory::check_not_written_elsewhere(const std::string& name, const Entry& entry) const {
  if (entry.writer.empty() || entry.writer == self_node_ || entry.writer_unsettled) return Status::ok();
  if (alive_ && !alive_(entry.writer)) return Status::ok();
  return Status::error(EBUSY, "VDI '" + name + "' is attached for writing through node " +
                                  entry.writer + "; detach it there first");
}

Result<uint64_t> VdiDirectory::lock_writer(const std::string& name, bool* took_over) {
  Control control(*this);
  if (!control.status()) return control.status();
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return not_found(name);
  if (Status st = check_not_written_elsewhere(name, it->second); !st) return st;
  // Called only when this process holds no attach of NAME: any writer recorded is one
  // that never detached (another node that died, or this node before a crash), and its
  // last writes may have reached only some replicas.
  if (took_over) *took_over = !it->second.writer.empty();
  it->second.writer = self_node_;
  it->second.writer_unsettled = false;
  it->second.writer_generation = ++generation_;
  if (Status st = save_locked(); !st) return st;
  return generation_;
}

Result<VdiDirectory::Raised> VdiDirectory::next_generation(const std::string& name, uint64_t held) {
  Control control(*this);
  if (!control.status()) return control.status();
  std::lock_guard lock(mutex_);
  Raised raised{++generation_, false};
  auto it = entries_.find(name);
  if (it != entries_.end() && it->second.writer == self_node_ && it->second.writer_generation == held) {
    it->second.writer_generation = generation_;
    raised.regranted = true;
  }
  if (Status st = save_locked(); !st) return st;
  return raised;
}

Result<bool> VdiDirectory::writer_holds(VdiId head, uint64_t generation) {
  Control control(*this);
  if (!control.status()) return control.status();
  std::lock_guard lock(mutex_);
  for (const auto& [name, entry] : entries_) {
    if (entry.head->id() != head) continue;
    return entry.writer == self_node_ && entry.writer_generation == generation;
  }
  return false;
}

Result<std::shared_ptr<Vdi>> VdiDirectory::reload_locked(const std::string& text) {
  std::shared_ptr<Vdi> current;
  {
    std::lock_guard lock(mutex_);
    current = find_locked(text);
  }
  if (!current) return not_found(text);
  if (current->attached.load() > 0) return current;
  auto fresh = load_vdi(current->id(), current->family(), current->read_only());
  if (!fresh) return fresh.status();
  std::lock_guard lock(mutex_);
  auto [name, tag] = split_snapshot_name(text);
  Entry& entry = entries_.at(name);
  if (entry.head == current) entry.head = *fresh;
  for (auto& snap : entry.snapshots)
    if (snap == current) snap = *fresh;
  return *fresh;
}

Result<std::shared_ptr<Vdi>> VdiDirectory::attach_local(const std::string& text, bool fresh) {
  Control control(*this);
  if (!control.status()) return control.status();
  Result<std::shared_ptr<Vdi>> vdi = Status::error(ENOENT, "no VDI named '" + text + "'");
  if (fresh) {
    vdi = reload_locked(text);
  } else {
    std::lock_guard lock(mutex_);
    if (std::shared_ptr<Vdi> cached = find_locked(text)) vdi = cached;
  }
  if (vdi) (*vdi)->attached.fetch_add(1);
  return vdi;
}

std::vector<std::pair<std::string, std::string>> VdiDirectory::live_writers() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, entry] : entries_) {
    if (entry.writer.empty() || entry.writer_unsettled || (alive_ && !alive_(entry.writer))) continue;
    out.emplace_back(name, entry.writer);
  }
  return out;
}

Status VdiDirectory::unlock_writer(const std::string& name, bool unsettled) {
  Control control(*this);
  if (!control.status()) return control.status();
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end() || it->second.writer != self_node_) return Status::ok();
  if (unsettled) {
    it->second.writer_unsettled = true;
  } else {
    it->second.writer.clear();
  }
  return save_locked();
}

Status VdiDirectory::refresh() {
  Control control(*this);
  return control.status();
}

// ---- persistence -------------------------------------------------------------

Result<std::shared_ptr<Vdi>> VdiDirectory::load_vdi(VdiId id, VdiId family, bool read_only) {
  std::vector<uint8_t> image(kInodeObjectSize);
  Status st = reactors_.at(0).block_on(store_.read(ObjectId::inode(id, family), 0, image));
  if (!st.is_ok()) return Status::error(EIO, "inode " + std::to_string(id) + " unreadable: " + st.to_string());
  auto inode = decode_inode(image);
  if (!inode) return Status::error(EIO, "inode " + std::to_string(id) + ": " + inode.status().message());
  auto vdi = std::make_shared<Vdi>(std::move(*inode), read_only, store_, reactors_);
  st = reactors_.at(0).block_on(vdi->load());
  if (!st.is_ok()) return st;
  return vdi;
}

Status VdiDirectory::open() {
  {
    Control control(*this);
    if (!control.status()) return control.status();
  }
  KELPIE_LOG_INFO("loaded {} VDIs", entries_.size());
  bool pending;
  {
    std::lock_guard lock(mutex_);
    pending = !reclaims_.empty();
  }
  if (pending) {
    Control control(*this);
    if (!control.status()) return control.status();
    KELPIE_LOG_INFO("resuming reclaim of {} deleted VDIs/snapshots", reclaims_.size());
    return reclaim_pending();
  }
  return Status::ok();
}

Status VdiDirectory::reconcile(const std::string& text) {
  if (text.empty()) {
    loaded_text_ = text;
    return Status::ok();
  }
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || doc.value("version", 0) != kDirectoryVersion) {
    return Status::error(EINVAL, "the VDI directory is damaged or of an unknown version");
  }
  std::map<std::string, Entry> entries;
  std::vector<Reclaim> reclaims;
  std::vector<Reclaim> retained;
  for (const auto& item : doc.value("reclaim", nlohmann::json::array())) {
    reclaims.push_back({item.value("id", 0u), item.value("family", 0u)});
  }
  for (const auto& item : doc.value("retained", nlohmann::json::array())) {
    retained.push_back({item.value("id", 0u), item.value("family", 0u)});
  }
  // Keep the VDI objects this node already has for ids that did not change and are
  // attached here (their gateway is this node: nobody else changed them); load the
  // others afresh, so a resize or a new head made elsewhere is seen.
  // A head is kept only while attached here; a snapshot (frozen) always. An id that
  // was a head here and is a snapshot now must be loaded again (frozen, tagged).
  auto known = [&](VdiId id, bool snapshot) -> std::shared_ptr<Vdi> {
    std::lock_guard lock(mutex_);
    for (const auto& [name, entry] : entries_) {
      if (!snapshot && entry.head->id() == id && entry.head->attached.load() > 0) {
        return entry.head;
      }
      if (!snapshot) continue;
      for (const auto& snap : entry.snapshots)
        if (snap->id() == id) return snap;
    }
    return nullptr;
  };
  for (const auto& item : doc.value("vdis", nlohmann::json::array())) {
    std::string name = item.value("name", "");
    VdiId family = item.value("family", 0u);
    VdiId head_id = item.value("id", 0u);
    std::shared_ptr<Vdi> head = known(head_id, false);
    if (!head) {
      auto loaded = load_vdi(head_id, family, false);
      if (!loaded) return Status::error(EIO, "VDI '" + name + "': " + loaded.status().message());
      head = *loaded;
    }
    Entry entry{head, {}, item.value("restored_from", ""), item.value("writer", ""),
                item.value("writer_generation", uint64_t{0}), item.value("writer_unsettled", false)};
    for (const auto& snap : item.value("snapshots", nlohmann::json::array())) {
      VdiId snap_id = snap.value("id", 0u);
      std::shared_ptr<Vdi> vdi = known(snap_id, true);
      if (!vdi) {
        auto loaded = load_vdi(snap_id, family, true);
        if (!loaded) return Status::error(EIO, "snapshot of '" + name + "': " + loaded.status().message());
        vdi = *loaded;
      }
      entry.snapshots.push_back(vdi);
    }
    entries[name] = std::move(entry);
  }
  std::lock_guard lock(mutex_);
  next_id_ = doc.value("next_id", 1u);
  serial_ = doc.value("serial", uint64_t{0});
  generation_ = doc.value("generation", uint64_t{0});
  entries_ = std::move(entries);
  reclaims_ = std::move(reclaims);
  retained_ = std::move(retained);
  loaded_text_ = text;
  return Status::ok();
}

Status VdiDirectory::save_locked() {
  nlohmann::json doc;
  doc["version"] = kDirectoryVersion;
  doc["next_id"] = next_id_;
  doc["serial"] = ++serial_;
  doc["generation"] = generation_;
  doc["vdis"] = nlohmann::json::array();
  for (const auto& [name, entry] : entries_) {
    nlohmann::json item = {{"name", name}, {"id", entry.head->id()}, {"family", entry.head->family()}};
    if (!entry.restored_from.empty()) item["restored_from"] = entry.restored_from;
    if (!entry.writer.empty()) item["writer"] = entry.writer;
    if (entry.writer_generation != 0) item["writer_generation"] = entry.writer_generation;
    if (entry.writer_unsettled) item["writer_unsettled"] = true;
    item["snapshots"] = nlohmann::json::array();
    for (const auto& snap : entry.snapshots) {
      item["snapshots"].push_back({{"tag", snap->tag()}, {"id", snap->id()}});
    }
    doc["vdis"].push_back(std::move(item));
  }
  doc["reclaim"] = nlohmann::json::array();
  for (const Reclaim& r : reclaims_) doc["reclaim"].push_back({{"id", r.id}, {"family", r.family}});
  doc["retained"] = nlohmann::json::array();
  for (const Reclaim& r : retained_) doc["retained"].push_back({{"id", r.id}, {"family", r.family}});
  std::string text = doc.dump(1) + "\n";
  Status st = backing_->write(text);
  if (st) {
    publish_writers(text);
    loaded_text_ = std::move(text);
  }
  return st;
}

void VdiDirectory::publish_writers(const std::string& text) {
  // From the document itself, not from what reconcile() loaded: a node learns the
  // grants as soon as it can read the document, even while an inode is unreadable.
  if (!writers_listener_ || (writers_published_ && text == published_text_)) return;
  std::vector<std::pair<VdiId, uint64_t>> grants;
  if (!text.empty()) {
    nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) return;  // reconcile() reports it
    for (const auto& item : doc.value("vdis", nlohmann::json::array())) {
      uint64_t generation = item.value("writer_generation", uint64_t{0});
      if (generation != 0) grants.emplace_back(item.value("id", 0u), generation);
    }
  }
  writers_listener_(grants);
  writers_published_ = true;
  published_text_ = text;
}

// ---- lookups -----------------------------------------------------------------

std::shared_ptr<Vdi> VdiDirectory::find_locked(const std::string& text) const {
  auto [name, tag] = split_snapshot_name(text);
  auto it = entries_.find(name);
  if (it == entries_.end()) return nullptr;
  if (text.find('@') == std::string::npos) return it->second.head;
  for (const auto& snap : it->second.snapshots)
    if (snap->tag() == tag) return snap;
  return nullptr;
}

std::shared_ptr<Vdi> VdiDirectory::find(const std::string& name) const {
  std::lock_guard lock(mutex_);
  return find_locked(name);
}

Result<VdiDirectory::Listed> VdiDirectory::lookup(const std::string& text) const {
  std::lock_guard lock(mutex_);
  auto vdi = find_locked(text);
  if (!vdi) {
    if (text.find('@') != std::string::npos) return Status::error(ENOENT, "snapshot '" + text + "' not found");
    return not_found(text);
  }
  std::string restored;
  if (!vdi->read_only()) restored = entries_.at(text).restored_from;
  return Listed{text, vdi, restored};
}

std::vector<VdiDirectory::Listed> VdiDirectory::list() const {
  std::lock_guard lock(mutex_);
  std::vector<Listed> out;
  for (const auto& [name, entry] : entries_) {
    out.push_back({name, entry.head, entry.restored_from});
    for (const auto& snap : entry.snapshots) out.push_back({name + "@" + snap->tag(), snap, ""});
  }
  return out;
}

size_t VdiDirectory::pending_reclaims() const {
  std::lock_guard lock(mutex_);
  return reclaims_.size();
}

// ---- create, resize ------------------------------------------------------------

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
  Control control(*this);
  if (!control.status()) return control.status();
  if (Status st = validate_vdi_name(name); !st.is_ok()) return st;
  if (Status st = validate_size(size_bytes, object_shift); !st.is_ok()) return st;
  VdiId id;
  {
    std::lock_guard lock(mutex_);
    if (entries_.contains(name)) return Status::error(EEXIST, "VDI '" + name + "' already exists");
    id = next_id_++;
  }
  Inode inode;
  inode.id = id;
  inode.family = id;
  inode.object_shift = object_shift;
  inode.size_bytes = size_bytes;
  inode.created_unix_s = std::time(nullptr);
  inode.name = name;
  auto vdi = std::make_shared<Vdi>(std::move(inode), false, store_, reactors_);
  Status st = reactors_.at(0).block_on(vdi->create());
  if (!st.is_ok()) return st;
  std::lock_guard lock(mutex_);
  entries_[name] = Entry{vdi, {}, ""};
  st = save_locked();
  if (!st.is_ok()) {
    entries_.erase(name);
    return st;
  }
  KELPIE_LOG_INFO("created VDI '{}' id {} size {} object size {}", name, id, format_size(size_bytes),
                  format_size(uint64_t{1} << object_shift));
  return vdi;
}

Status VdiDirectory::resize(const std::string& name, uint64_t size_bytes) {
  Control control(*this);
  if (!control.status()) return control.status();
  if (name.find('@') != std::string::npos) return Status::error(EINVAL, "a snapshot cannot be resized");
  std::shared_ptr<Vdi> vdi = find(name);
  if (!vdi) return not_found(name);
  bool needs_reload;
  {
    std::lock_guard lock(mutex_);
    const Entry& entry = entries_.at(name);
    if (Status st = check_not_written_elsewhere(name, entry); !st) return st;
    needs_reload = !entry.writer.empty() && entry.writer != self_node_;
  }
  if (needs_reload) {
    auto fresh = reload_locked(name);
    if (!fresh) return fresh.status();
    vdi = *fresh;
  }
  if (Status st = validate_size(size_bytes, vdi->object_shift()); !st.is_ok()) return st;
  if (size_bytes < vdi->size() && vdi->attached.load() > 0) {
    return Status::error(EBUSY, "VDI '" + name + "' is attached; shrinking needs it detached");
  }
  Status st = reactors_.at(0).block_on(vdi->resize(size_bytes));
  if (!st) return st;
  std::lock_guard lock(mutex_);
  return save_locked();  // a new serial: other nodes reload the inode
}

Status VdiDirectory::set_restored_from(const std::string& name, const std::string& identity) {
  Control control(*this);
  if (!control.status()) return control.status();
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return not_found(name);
  it->second.restored_from = identity;
  return save_locked();
}

// ---- snapshots, clones, rollback ------------------------------------------------

Result<VdiDirectory::Listed> VdiDirectory::snapshot(const std::string& name, const std::string& requested_tag) {
  Control control(*this);
  if (!control.status()) return control.status();
  if (name.find('@') != std::string::npos) {
    return Status::error(EINVAL, "'" + name + "' is a snapshot; snapshot its VDI instead");
  }
  std::shared_ptr<Vdi> head;
  bool needs_reload = false;
  std::string tag = requested_tag;
  VdiId new_id;
  uint32_t snapshot_number;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return not_found(name);
    if (Status st = check_not_written_elsewhere(name, it->second); !st) return st;
    head = it->second.head;
    needs_reload = !it->second.writer.empty() && it->second.writer != self_node_;
    snapshot_number = static_cast<uint32_t>(it->second.snapshots.size()) + 1;
    for (const auto& snap : it->second.snapshots)
      snapshot_number = std::max(snapshot_number, snap->inode().snapshot_id + 1);
    if (tag.empty()) tag = std::to_string(snapshot_number);
    if (Status st = validate_tag(tag); !st.is_ok()) return st;
    if (find_locked(name + "@" + tag)) {
      return Status::error(EEXIST, "snapshot '" + name + "@" + tag + "' already exists");
    }
    new_id = next_id_++;
  }
  if (needs_reload) {
    // Its last writer was another node (now dead): what this node cached of the
    // head may miss that writer's map entries.
    auto fresh = reload_locked(name);
    if (!fresh) return fresh.status();
    head = *fresh;
  }
  // Stop and drain the writers; the head goes on under new_id, old id frozen.
  head->gate().close_and_drain();
  VdiId frozen_id = head->id();
  Status st = reactors_.at(0).block_on(
      head->freeze_and_continue(new_id, snapshot_number, tag, std::time(nullptr)));
  Result<std::shared_ptr<Vdi>> frozen = st.is_ok() ? load_vdi(frozen_id, head->family(), true) : st;
  if (!frozen) {
    head->gate().open();
    return frozen.status();
  }
  head->switch_to_new_head();
  {
    std::lock_guard lock(mutex_);
    entries_[name].snapshots.push_back(*frozen);
    st = save_locked();
  }
  head->gate().open();
  if (!st.is_ok()) {
    KELPIE_LOG_CRITICAL("snapshot {}@{} taken but the directory could not be saved: {}", name, tag,
                        st.to_string());
    return st;
  }
  KELPIE_LOG_INFO("snapshot {}@{}: frozen id {}, VDI continues as id {}", name, tag, frozen_id, new_id);
  return Listed{name + "@" + tag, *frozen, ""};
}

Result<std::shared_ptr<Vdi>> VdiDirectory::make_head_from(const Vdi& snapshot, const std::string& name) {
  Inode inode = snapshot.inode();
  {
    std::lock_guard lock(mutex_);
    inode.id = next_id_++;
  }
  inode.parent = snapshot.id();
  inode.snapshot_id = 0;
  inode.tag.clear();
  inode.name = name;
  inode.created_unix_s = std::time(nullptr);
  auto vdi = std::make_shared<Vdi>(std::move(inode), false, store_, reactors_);
  Status st = reactors_.at(0).block_on(vdi->create());
  if (st.is_ok()) st = reactors_.at(0).block_on(vdi->load());
  if (!st.is_ok()) return st;
  return vdi;
}

Result<VdiDirectory::Listed> VdiDirectory::clone(const std::string& snapshot, const std::string& new_name) {
  Control control(*this);
  if (!control.status()) return control.status();
  if (snapshot.find('@') == std::string::npos) {
    return Status::error(EINVAL, "'" + snapshot + "' is not a snapshot (expected NAME@TAG)");
  }
  if (Status st = validate_vdi_name(new_name); !st.is_ok()) return st;
  std::shared_ptr<Vdi> source = find(snapshot);
  if (!source) return Status::error(ENOENT, "snapshot '" + snapshot + "' not found");
  if (find(new_name)) return Status::error(EEXIST, "VDI '" + new_name + "' already exists");
  auto vdi = make_head_from(*source, new_name);
  if (!vdi) return vdi.status();
  std::lock_guard lock(mutex_);
  entries_[new_name] = Entry{*vdi, {}, ""};
  if (Status st = save_locked(); !st.is_ok()) {
    entries_.erase(new_name);
    return st;
  }
  KELPIE_LOG_INFO("cloned {} as '{}' (id {})", snapshot, new_name, (*vdi)->id());
  return Listed{new_name, *vdi, ""};
}

Result<VdiDirectory::Listed> VdiDirectory::rollback(const std::string& snapshot) {
  Control control(*this);
  if (!control.status()) return control.status();
  auto [name, tag] = split_snapshot_name(snapshot);
  if (snapshot.find('@') == std::string::npos) {
    return Status::error(EINVAL, "'" + snapshot + "' is not a snapshot (expected NAME@TAG)");
  }
  std::shared_ptr<Vdi> source = find(snapshot);
  if (!source) return Status::error(ENOENT, "snapshot '" + snapshot + "' not found");
  std::shared_ptr<Vdi> old_head = find(name);
  {
    std::lock_guard lock(mutex_);
    if (Status st = check_not_written_elsewhere(name, entries_.at(name)); !st) return st;
  }
  if (old_head->attached.load() > 0) {
    return Status::error(EBUSY, "VDI '" + name + "' is attached; rollback needs it detached");
  }
  auto vdi = make_head_from(*source, name);
  if (!vdi) return vdi.status();
  {
    std::lock_guard lock(mutex_);
    entries_[name].head = *vdi;
    entries_[name].restored_from.clear();
    reclaims_.push_back({old_head->id(), old_head->family()});
    requeue_retained_locked(old_head->family());
    if (Status st = save_locked(); !st.is_ok()) {
      entries_[name].head = old_head;
      reclaims_.pop_back();
      return st;
    }
  }
  KELPIE_LOG_INFO("rolled '{}' back to {} (new id {})", name, snapshot, (*vdi)->id());
  if (Status st = reclaim_pending(); !st.is_ok()) return st;
  return Listed{name, *vdi, ""};
}

// ---- delete and reclaim ---------------------------------------------------------

Status VdiDirectory::remove(const std::string& text) {
  Control control(*this);
  if (!control.status()) return control.status();
  auto [name, tag] = split_snapshot_name(text);
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return not_found(name);
    Entry& entry = it->second;
    if (Status st = check_not_written_elsewhere(name, entry); !st) return st;
    auto busy = [](const std::shared_ptr<Vdi>& v) { return v->attached.load() > 0; };
    if (text.find('@') != std::string::npos) {
      auto snap = std::find_if(entry.snapshots.begin(), entry.snapshots.end(),
                               [&](const auto& s) { return s->tag() == tag; });
      if (snap == entry.snapshots.end()) return Status::error(ENOENT, "snapshot '" + text + "' not found");
      if (busy(*snap)) return Status::error(EBUSY, "snapshot '" + text + "' is attached");
      reclaims_.push_back({(*snap)->id(), (*snap)->family()});
      requeue_retained_locked((*snap)->family());
      entry.snapshots.erase(snap);
    } else {
      if (busy(entry.head)) {
        return Status::error(EBUSY, "VDI '" + name + "' is attached by " +
                                        std::to_string(entry.head->attached.load()) + " NBD connection(s)");
      }
      for (const auto& snap : entry.snapshots)
        if (busy(snap)) return Status::error(EBUSY, "snapshot '" + name + "@" + snap->tag() + "' is attached");
      reclaims_.push_back({entry.head->id(), entry.head->family()});
      for (const auto& snap : entry.snapshots) reclaims_.push_back({snap->id(), snap->family()});
      requeue_retained_locked(entry.head->family());
      entries_.erase(it);
    }
    if (Status st = save_locked(); !st.is_ok()) return st;
  }
  KELPIE_LOG_INFO("deleted '{}'", text);
  return reclaim_pending();
}

void VdiDirectory::requeue_retained_locked(VdiId family) {
  for (auto it = retained_.begin(); it != retained_.end();) {
    if (it->family == family) {
      reclaims_.push_back(*it);
      it = retained_.erase(it);
    } else {
      ++it;
    }
  }
}

Status VdiDirectory::reclaim_pending() {
  while (true) {
    Reclaim target;
    std::vector<std::shared_ptr<Vdi>> live;
    {
      std::lock_guard lock(mutex_);
      if (reclaims_.empty()) return Status::ok();
      target = reclaims_.front();
      // Rule 9: the family's members are read afresh for every reclaim, under the
      // control mutex, so a clone made before this point keeps what it shares.
      for (const auto& [name, entry] : entries_) {
        if (entry.head->family() == target.family) live.push_back(entry.head);
        for (const auto& snap : entry.snapshots)
          if (snap->family() == target.family) live.push_back(snap);
      }
    }
    auto kept = reactors_.at(0).block_on(reclaim_one(target, std::move(live)));
    if (!kept) {
      KELPIE_LOG_ERROR("reclaim of id {} failed: {}; it resumes at the next start", target.id,
                       kept.status().to_string());
      return kept.status();
    }
    std::lock_guard lock(mutex_);
    reclaims_.erase(reclaims_.begin());
    if (*kept > 0) retained_.push_back(target);
    if (Status saved = save_locked(); !saved.is_ok()) return saved;
  }
}

Task<Result<size_t>> VdiDirectory::reclaim_one(Reclaim target, std::vector<std::shared_ptr<Vdi>> live) {
  auto objects = co_await store_.list_objects(target.id);
  if (!objects) co_return objects.status();
  std::set<uint32_t> referenced_maps;
  for (const auto& vdi : live) {
    Inode inode = vdi->inode();
    for (uint32_t k = 0; k < kMaxMapObjects; ++k)
      if (inode.map_table[k] == target.id) referenced_maps.insert(k);
  }
  std::vector<Task<Status>> batch;
  Status st;
  size_t freed = 0;
  size_t kept = 0;
  std::optional<ObjectId> inode_object;
  for (const ObjectId& id : *objects) {
    bool referenced = false;
    if (id.type == ObjectType::kData) {
      for (const auto& vdi : live) referenced = referenced || vdi->map_owner(id.index) == target.id;
    } else if (id.type == ObjectType::kMap) {
      referenced = referenced_maps.contains(id.index);
    } else if (id.type == ObjectType::kInode) {
      inode_object = id;  // last: while it exists the reclaim can be found again
      continue;
    }
    if (referenced) {
      ++kept;
      continue;
    }
    batch.push_back(store_.remove(id));
    ++freed;
    if (batch.size() == kReclaimBatch) {
      st = co_await when_all(std::move(batch));
      batch.clear();
      if (!st.is_ok()) co_return st;
      co_await yield_now();  // let client I/O on this reactor through between batches
    }
  }
  st = co_await when_all(std::move(batch));
  if (st.is_ok()) st = co_await store_.flush();
  // The inode goes last, once nothing of this id is shared any more.
  bool drop_inode = kept == 0 && inode_object.has_value();
  if (st.is_ok() && drop_inode) st = co_await store_.remove(*inode_object);
  if (st.is_ok()) st = co_await store_.flush();
  if (!st.is_ok()) co_return st;
  KELPIE_LOG_INFO("reclaimed id {}: freed {} objects, {} still shared", target.id,
                  freed + (drop_inode ? 1 : 0), kept);
  co_return kept;
}

// ---- backup support ----------------------------------------------------------

Result<std::vector<std::pair<uint64_t, uint64_t>>> VdiDirectory::changed_extents(const std::string& to,
                                                                                 const std::string& from) {
  Control control(*this);
  if (!control.status()) return control.status();
  if (to.find('@') == std::string::npos) return Status::error(EINVAL, "'" + to + "' is not a snapshot (expected NAME@TAG)");
  std::shared_ptr<Vdi> target = find(to);
  if (!target) return Status::error(ENOENT, "snapshot '" + to + "' not found");
  std::shared_ptr<Vdi> base;
  if (!from.empty()) {
    if (from.find('@') == std::string::npos) return Status::error(EINVAL, "'" + from + "' is not a snapshot (expected NAME@TAG)");
    base = find(from);
    if (!base) return Status::error(ENOENT, "snapshot '" + from + "' not found");
    if (base->family() != target->family() || base->object_shift() != target->object_shift()) {
      return Status::error(EINVAL, "'" + from + "' and '" + to + "' are not snapshots of one VDI family");
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> extents;
  uint64_t size = target->size();
  uint64_t objects = (size + target->object_size() - 1) >> target->object_shift();
  uint64_t base_objects = base ? (base->size() + base->object_size() - 1) >> base->object_shift() : 0;
  for (uint64_t i = 0; i < objects; ++i) {
    auto index = static_cast<uint32_t>(i);
    VdiId now = target->map_owner(index);
    VdiId before = base && i < base_objects ? base->map_owner(index) : kNoVdi;
    bool changed = base ? now != before : now != kNoVdi;
    if (!changed) continue;
    uint64_t start = i << target->object_shift();
    uint64_t length = std::min(size, start + target->object_size()) - start;
    if (!extents.empty() && extents.back().first + extents.back().second == start) {
      extents.back().second += length;
    } else {
      extents.emplace_back(start, length);
    }
  }
  return extents;
}

}  // namespace kelpie
