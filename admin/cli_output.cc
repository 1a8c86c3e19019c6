#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <tuple>

#include "admin/cli.h"
#include "common/size_parse.h"

namespace kelpie::cli {
namespace {

std::string bytes_with_count(uint64_t bytes) {
  return human_bytes(bytes) + " (" + std::to_string(bytes) + " bytes)";
}

std::string duration(uint64_t seconds) {
  char text[64];
  std::snprintf(text, sizeof(text), "%llud %02lluh %02llum %02llus",
                static_cast<unsigned long long>(seconds / 86400),
                static_cast<unsigned long long>(seconds / 3600 % 24),
                static_cast<unsigned long long>(seconds / 60 % 60),
                static_cast<unsigned long long>(seconds % 60));
  return text;
}

std::string or_disabled(const std::string& text) { return text.empty() ? "disabled" : text; }
std::string or_none(const std::string& text) { return text.empty() ? "none" : text; }
std::string id_or_none(uint32_t id) { return id == 0 ? "none" : std::to_string(id); }

}  // namespace

std::string utc_time(int64_t unix_s) {
  std::time_t time = static_cast<std::time_t>(unix_s);
  std::tm parts{};
  char text[40];
  if (gmtime_r(&time, &parts) == nullptr ||
      std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &parts) == 0) {
    return std::to_string(unix_s);
  }
  return text;
}

void print_key_values(std::initializer_list<KeyValue> lines) {
  size_t width = 0;
  for (const KeyValue& line : lines) width = std::max(width, std::strlen(line.key));
  for (const KeyValue& line : lines) {
    std::printf("%s:%*s %s\n", line.key, static_cast<int>(width - std::strlen(line.key)), "",
                line.value.c_str());
  }
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return;
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t column = 0; column < row.size() && column < widths.size(); ++column) {
      widths[column] = std::max(widths[column], row[column].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t column = 0; column < row.size(); ++column) {
      line += row[column];
      if (column + 1 < row.size() && column < widths.size()) {
        line.append(widths[column] - row[column].size() + 2, ' ');
      }
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string human_bytes(uint64_t bytes) {
  std::string exact = format_size(bytes);
  if (exact.find(' ') <= 4) return exact;
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f %s", value, kUnits[unit]);
  return text;
}

std::string display_name(const VdiSummary& vdi) {
  if (vdi.tag.empty() || vdi.name.ends_with("@" + vdi.tag)) return vdi.name;
  return vdi.name + "@" + vdi.tag;
}

std::string base_name(const VdiSummary& vdi) {
  std::string name = display_name(vdi);
  if (vdi.tag.empty()) return name;
  return name.substr(0, name.size() - vdi.tag.size() - 1);
}

void sort_vdis(std::vector<VdiSummary>& vdis) {
  std::sort(vdis.begin(), vdis.end(), [](const VdiSummary& a, const VdiSummary& b) {
    auto key = [](const VdiSummary& vdi) {
      return std::tuple(base_name(vdi), !vdi.tag.empty(), vdi.id, display_name(vdi));
    };
    return key(a) < key(b);
  });
}

void print_vdi_table(const std::vector<VdiSummary>& unsorted) {
  std::vector<VdiSummary> vdis = unsorted;
  sort_vdis(vdis);
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ID", "SIZE", "OBJECT SIZE", "USED", "SHARED", "ATTACHED"}};
  for (const VdiSummary& vdi : vdis) {
    rows.push_back({display_name(vdi), std::to_string(vdi.id), human_bytes(vdi.size_bytes),
                    human_bytes(vdi.object_size_bytes), human_bytes(vdi.own_bytes),
                    human_bytes(vdi.shared_bytes), std::to_string(vdi.attached_connections)});
  }
  print_table(rows);
}

void print_vdi_info(const VdiSummary& vdi) {
  print_key_values({
      {"name", display_name(vdi)},
      {"id", std::to_string(vdi.id)},
      {"kind", vdi.read_only ? "snapshot (read-only)" : "writable"},
      {"size", bytes_with_count(vdi.size_bytes)},
      {"object size", bytes_with_count(vdi.object_size_bytes)},
      {"objects", std::to_string(vdi.object_count)},
      {"allocated objects", std::to_string(vdi.allocated_objects)},
      {"used", bytes_with_count(vdi.used_bytes)},
      {"own", bytes_with_count(vdi.own_bytes)},
      {"shared", bytes_with_count(vdi.shared_bytes)},
      {"parent id", id_or_none(vdi.parent_id)},
      {"family id", std::to_string(vdi.family_id)},
      {"restored from", or_none(vdi.restored_from)},
      {"created", utc_time(vdi.created_unix_s)},
      {"attached connections", std::to_string(vdi.attached_connections)},
  });
}

void print_node_info(const NodeSummary& node) {
  print_key_values({
      {"version", node.version},
      {"node uuid", node.node_uuid},
      {"data dir", node.data_dir},
      {"nbd tcp", or_disabled(node.nbd_tcp)},
      {"nbd unix", or_disabled(node.nbd_unix)},
      {"admin address", node.admin_address},
      {"threads", std::to_string(node.threads)},
      {"format version", std::to_string(node.format_version)},
      {"capacity", bytes_with_count(node.capacity_bytes)},
      {"free", bytes_with_count(node.free_bytes)},
      {"objects", std::to_string(node.objects)},
      {"vdis", std::to_string(node.vdi_count)},
      {"nbd connections", std::to_string(node.nbd_connections)},
      {"uptime", duration(node.uptime_s)},
  });
}

Status flush_stdout() {
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    int error_number = errno != 0 ? errno : EIO;
    return Status::error(error_number,
                         std::string("write to stdout: ") + std::strerror(error_number));
  }
  return Status::ok();
}

Status write_stdout(const void* data, size_t length) {
  const char* bytes = static_cast<const char*>(data);
  while (length > 0) {
    ssize_t written = ::write(STDOUT_FILENO, bytes, length);
    if (written < 0) {
      if (errno == EINTR) continue;
      int error_number = errno;
      return Status::error(error_number,
                           std::string("write to stdout: ") + std::strerror(error_number));
    }
    bytes += written;
    length -= static_cast<size_t>(written);
  }
  return Status::ok();
}

}  // namespace kelpie::cli
