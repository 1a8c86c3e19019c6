#include "cluster/full_ratio.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstdio>

#include "common/log.h"

namespace kelpie {

namespace {

std::string percent(double fraction) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f%%", fraction * 100);
  return text;
}

}  // namespace

FullRatio::FullRatio(std::string data_dir, std::string node_name, double ratio, Measure measure)
    : data_dir_(std::move(data_dir)),
      node_name_(std::move(node_name)),
      ratio_(ratio),
      measure_(std::move(measure)) {}

Result<FullRatio::Usage> FullRatio::measure() const {
  if (measure_) return measure_();
  struct statvfs fs {};
  if (::statvfs(data_dir_.c_str(), &fs) != 0 || fs.f_blocks == 0) {
    return Status::error(errno == 0 ? EIO : errno, "statvfs " + data_dir_);
  }
  return Usage{double(fs.f_blocks) * double(fs.f_frsize),
               double(fs.f_bavail) * double(fs.f_frsize)};
}

Result<FullRatio::Reservation> FullRatio::reserve(uint64_t bytes) const {
  if (ratio_ >= 1.0) return Reservation();
  Result<Usage> usage = measure();
  if (!usage) return usage.status();
  if (usage->total_bytes <= 0) {
    return Status::error(EIO, "data filesystem of " + data_dir_ + " has no size");
  }
  const double total = usage->total_bytes;
  const double available = usage->available_bytes;
  if ((total - available + double(bytes)) / total > ratio_) {
    std::string message = "node " + node_name_ + " is full: data filesystem " +
                          percent((total - available) / total) +
                          " used, a new object would take it above the full ratio " + percent(ratio_);
    if (!refusing_.exchange(true)) {
      KELPIE_LOG_ERROR("{}; new objects are refused (ENOSPC), overwrites go on", message);
    }
    return Status::error(ENOSPC, message);
  }
  uint64_t pending = pending_bytes_.fetch_add(bytes) + bytes;
  double used = (total - available + double(pending)) / total;
  if (used <= ratio_) {
    if (refusing_.exchange(false)) {
      KELPIE_LOG_INFO("node {}: data filesystem below the full ratio {} again; new objects admitted",
                      node_name_, percent(ratio_));
    }
    return Reservation(this, bytes);
  }
  // It fits alone but not with the creates in flight: ask again once they are done.
  pending_bytes_.fetch_sub(bytes);
  return Status::error(EAGAIN, "creates in flight fill the space below the full ratio");
}

}  // namespace kelpie
