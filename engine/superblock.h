// Superblock: the identity and format of a data directory (docs/format.md).
//
// One 4 KiB file, "superblock", written once when a data directory is first used
// (write to a temporary name, fsync, rename, fsync the directory). It carries the
// magic, the format version, feature bits (compatible / read-only compatible /
// incompatible), the node UUID and the cluster UUID (zero until a cluster format).
// A directory whose incompatible features this build does not know is refused.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "common/uuid.h"

namespace kelpie {

constexpr uint32_t kFormatVersion = 1;
constexpr uint64_t kKnownIncompatFeatures = 0;

struct Superblock {
  uint32_t format_version = kFormatVersion;
  uint64_t compat_features = 0;
  uint64_t ro_compat_features = 0;
  uint64_t incompat_features = 0;
  Uuid node_uuid{};
  Uuid cluster_uuid{};
  int64_t created_unix_s = 0;
};

// Reads DIR/superblock, or creates it (with a new node UUID) if DIR has none.
// EINVAL with a clear message for a damaged or foreign file; ENOTSUP for a newer format.
Result<Superblock> load_or_create_superblock(const std::string& data_dir);

// Rewrites DIR/superblock (e.g. to record the cluster UUID after a format).
Status save_superblock(const std::string& data_dir, const Superblock& superblock);

// Writes `path` atomically: temporary file, fsync, rename, fsync of the directory.
Status write_file_atomically(const std::string& dir, const std::string& name, const void* data,
                             size_t size);

}  // namespace kelpie
