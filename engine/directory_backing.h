// DirectoryBacking: where the VDI directory's document lives and how its control
// operations are ordered (DESIGN.md: "the VDI directory ... a single node keeps it in
// its data directory, the cluster keeps it with the membership service").
//
// Contract:
//  - lock()/unlock() bracket one control operation; between them this process is the
//    only writer anywhere (one node: the caller's own mutex suffices; a cluster: a
//    cluster-wide lock), so control operations are totally ordered.
//  - read() returns the latest document ("" when there is none yet); write() replaces
//    it and is durable before it returns (a crash leaves the old or the new one).
//  - read() and write() are called only between lock() and unlock().
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace kelpie {

class DirectoryBacking {
 public:
  virtual ~DirectoryBacking() = default;
  virtual Status lock() = 0;
  virtual void unlock() = 0;
  virtual Result<std::string> read() = 0;
  virtual Status write(const std::string& document) = 0;
};

// A file in a directory, written atomically (temp file, fsync, rename, fsync dir).
// With cross_process, lock() takes an flock on "<name>.lock" in that directory, so
// several daemons sharing the directory are ordered.
std::unique_ptr<DirectoryBacking> make_file_directory_backing(std::string dir, std::string name,
                                                              bool cross_process);

}  // namespace kelpie
