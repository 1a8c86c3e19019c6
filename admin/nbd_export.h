// NbdExport: the `kelpie` CLI's libnbd connection to one export of a kelpied.
//
// Contract:
//  - open() asks the daemon (through the admin API) for vdi.info of the export first,
//    so an unknown VDI fails with the daemon's own message; connect() skips that
//    check for callers that already made it. Both then find the NBD endpoint through
//    node.info (the Unix socket when it exists on this host, else TCP to the admin
//    host on the NBD port) and read the export's size and block size limits.
//  - Every failure is a one-line Status naming what failed (libnbd's error text with
//    newlines removed).
//  - chunk_bytes() is at most kMaxChunkBytes, a multiple of block_bytes(), and within
//    the export's advertised maximum request size.
#pragma once

#include <cstdint>
#include <string>

#include "admin/admin_client.h"
#include "common/status.h"

struct nbd_handle;

namespace kelpie::cli {

class NbdExport {
 public:
  static constexpr uint64_t kMaxChunkBytes = 4 << 20;

  NbdExport() = default;
  NbdExport(const NbdExport&) = delete;
  NbdExport& operator=(const NbdExport&) = delete;
  ~NbdExport();

  Status open(const std::string& admin_address, const std::string& name);
  Status connect(AdminClient& client, const std::string& name);

  struct nbd_handle* handle() const {
    return handle_;
  }
  uint64_t size_bytes() const { return size_bytes_; }
  uint64_t block_bytes() const { return block_bytes_; }
  uint64_t chunk_bytes() const { return chunk_bytes_; }
  bool read_only() const;

 private:
  Status fresh_handle(const std::string& name);

  struct nbd_handle* handle_ = nullptr;
  uint64_t size_bytes_ = 0;
  uint64_t block_bytes_ = 1;
  uint64_t chunk_bytes_ = kMaxChunkBytes;
};

// The Status for the libnbd call that just failed: "what: <libnbd error>" (once, when
// libnbd's text already starts with "what:").
Status nbd_status(const std::string& what);

}  // namespace kelpie::cli
