// NodeControl: the control-plane face of a running kelpied, used by the admin server.
//
// Contract:
//  - Every method is synchronous and may be called from any non-reactor thread
//    (the admin server's); implementations hop onto a reactor internally.
//  - Failures are Status values whose code is an errno and whose message is one
//    line fit for a user ("VDI 'x' not found", "VDI 'x' already exists", ...):
//      ENOENT  unknown VDI            EEXIST  VDI exists
//      EINVAL  bad name/size/object size (message says which)
//      EBUSY   VDI attached (delete/shrink refused)   ENOSPC  out of space
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace kelpie {

struct VdiSummary {
  std::string name;
  uint32_t id = 0;
  uint64_t size_bytes = 0;
  uint32_t object_size_bytes = 0;
  uint64_t allocated_objects = 0;  // objects the map references
  uint64_t used_bytes = 0;         // allocated_objects * object size
  int64_t created_unix_s = 0;
  uint32_t attached_connections = 0;  // open NBD connections to this VDI
};

struct NodeSummary {
  std::string version;       // kelpied version string
  std::string node_uuid;
  std::string data_dir;
  std::string nbd_tcp;       // "127.0.0.1:10809", empty if disabled
  std::string nbd_unix;      // socket path, empty if disabled
  std::string admin_address; // "127.0.0.1:7000"
  unsigned threads = 0;      // reactor threads
  uint32_t format_version = 0;
  uint64_t capacity_bytes = 0;  // of the data directory's filesystem
  uint64_t free_bytes = 0;
  uint64_t objects = 0;         // object files held (object list cache)
  uint32_t vdi_count = 0;
  uint32_t nbd_connections = 0;
  uint64_t uptime_s = 0;
};

class NodeControl {
 public:
  virtual ~NodeControl() = default;
  // object_shift: log2 of the object size, 20..26 (1..64 MiB).
  virtual Result<VdiSummary> create_vdi(const std::string& name, uint64_t size_bytes,
                                        uint32_t object_shift) = 0;
  virtual Status delete_vdi(const std::string& name) = 0;
  virtual Status resize_vdi(const std::string& name, uint64_t size_bytes) = 0;
  virtual Result<VdiSummary> vdi_info(const std::string& name) = 0;
  virtual std::vector<VdiSummary> list_vdis() = 0;
  virtual NodeSummary node_info() = 0;
};

}  // namespace kelpie
