#include "admin/cli_transfer.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace kelpie::cli {
namespace {

constexpr uint64_t kMiB = 1 << 20;

}  // namespace

std::string mib_text(uint64_t bytes) {
  if (bytes % kMiB == 0) return std::to_string(bytes / kMiB);
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", static_cast<double>(bytes) / kMiB);
  return text;
}

Status with_errno_text(Status status) {
  if (status.is_ok() || status.code() == EBADMSG || status.code() == EINVAL ||
      status.code() == EPROTONOSUPPORT) {
    return status;
  }
  std::string text = std::strerror(status.code());
  if (status.message().ends_with(text)) return status;
  return Status::error(status.code(), status.message() + ": " + text);
}

Progress::Progress(std::string verb, uint64_t total_bytes)
    : verb_(std::move(verb)), total_bytes_(total_bytes), on_terminal_(::isatty(STDERR_FILENO)) {}

Progress::~Progress() { erase(); }

void Progress::add(uint64_t bytes) {
  done_bytes_ += bytes;
  if (!on_terminal_) return;
  auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_draw_ < kRedrawInterval) return;
  last_draw_ = now;
  draw();
}

void Progress::draw() {
  double fraction = total_bytes_ == 0 ? 1.0 : static_cast<double>(done_bytes_) / total_bytes_;
  unsigned percent = static_cast<unsigned>(fraction * 100);
  std::fprintf(stderr, "\r%s: %3u%%  %.1f / %.1f MiB\033[K", verb_.c_str(), percent,
               static_cast<double>(done_bytes_) / kMiB, static_cast<double>(total_bytes_) / kMiB);
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::erase() {
  if (!drawn_) return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
}

void Progress::finish(uint64_t extents, uint64_t bytes) {
  erase();
  std::fprintf(stderr, "%s: %llu extents, %s MiB\n", verb_.c_str(),
               static_cast<unsigned long long>(extents), mib_text(bytes).c_str());
}

}  // namespace kelpie::cli
