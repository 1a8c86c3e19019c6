// Helpers shared by `vdi backup` and `vdi restore`.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace kelpie::cli {

// "12" for whole MiB, else one decimal ("0.5").
std::string mib_text(uint64_t bytes);

// The backup stream library reports a failing file descriptor by errno code; this
// adds the errno's text to such a message ("cannot write backup stream: Broken pipe").
Status with_errno_text(Status status);

// A progress bar on stderr ("backup:  42%  123.4 / 456.7 MiB"), drawn only when stderr
// is a terminal and redrawn at most every kRedrawInterval; finish() replaces it by the
// summary line "VERB: N extents, M MiB", which is printed either way.
class Progress {
 public:
  static constexpr std::chrono::milliseconds kRedrawInterval{100};

  Progress(std::string verb, uint64_t total_bytes);
  ~Progress();  // erases a bar that is still drawn, so an error line starts clean
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add(uint64_t bytes);
  void finish(uint64_t extents, uint64_t bytes);

 private:
  void draw();
  void erase();

  const std::string verb_;
  const uint64_t total_bytes_;
  const bool on_terminal_;
  bool drawn_ = false;
  uint64_t done_bytes_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace kelpie::cli
