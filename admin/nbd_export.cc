#include "admin/nbd_export.h"

#include <libnbd.h>
#include <sys/stat.h>

#include <algorithm>

#include "common/admin_wire.h"

namespace kelpie::cli {

Status nbd_status(const std::string& what) {
  int error_number = nbd_get_errno();
  std::string detail = nbd_get_error() != nullptr ? nbd_get_error() : "unknown libnbd error";
  // libnbd's text usually names the call already ("nbd_pread: ...").
  std::string message = detail.starts_with(what + ":") ? detail : what + ": " + detail;
  std::replace(message.begin(), message.end(), '\n', ' ');
  return Status::error(error_number != 0 ? error_number : EIO, message);
}

NbdExport::~NbdExport() {
  if (handle_ != nullptr) {
    (void)nbd_shutdown(handle_, 0);
    nbd_close(handle_);
  }
}

bool NbdExport::read_only() const { return nbd_is_read_only(handle_) == 1; }

Status NbdExport::fresh_handle(const std::string& name) {
  if (handle_ != nullptr) nbd_close(handle_);
  handle_ = nbd_create();
  if (handle_ == nullptr) return nbd_status("nbd_create");
  if (nbd_set_export_name(handle_, name.c_str()) < 0) return nbd_status("nbd_set_export_name");
  return Status::ok();
}

Status NbdExport::open(const std::string& admin_address, const std::string& name) {
  Result<AdminClient> client = AdminClient::connect(admin_address);
  if (!client) return client.status();
  if (Result<nlohmann::json> vdi = client->call("vdi.info", {{"name", name}}); !vdi) {
    return vdi.status();
  }
  return connect(*client, name);
}

Status NbdExport::connect(AdminClient& client, const std::string& name) {
  const std::string& admin_address = client.address();
  Result<nlohmann::json> reply = client.call("node.info");
  if (!reply) return reply.status();
  Result<NodeSummary> node = node_from_json(*reply);
  if (!node) return Status::error(EBADMSG, "malformed node.info reply from " + admin_address);

  bool connected = false;
  struct stat socket_stat {};
  if (!node->nbd_unix.empty() && ::stat(node->nbd_unix.c_str(), &socket_stat) == 0 &&
      S_ISSOCK(socket_stat.st_mode)) {
    if (Status status = fresh_handle(name); !status) return status;
    connected = nbd_connect_unix(handle_, node->nbd_unix.c_str()) == 0;
  }
  if (!connected && !node->nbd_tcp.empty()) {
    Result<HostPort> nbd_address = parse_host_port(node->nbd_tcp);
    Result<HostPort> admin_host = parse_host_port(admin_address);
    if (!nbd_address || !admin_host) {
      return Status::error(EBADMSG, "kelpied reports a bad NBD address '" + node->nbd_tcp + "'");
    }
    if (Status status = fresh_handle(name); !status) return status;
    std::string port = std::to_string(nbd_address->port);
    if (nbd_connect_tcp(handle_, admin_host->host.c_str(), port.c_str()) < 0) {
      return nbd_status("cannot open NBD export '" + name + "'");
    }
    connected = true;
  }
  if (!connected) {
    if (handle_ != nullptr) return nbd_status("cannot open NBD export '" + name + "'");
    return Status::error(ENOTCONN, "kelpied at " + admin_address + " serves no NBD endpoint");
  }
  int64_t size = nbd_get_size(handle_);
  if (size < 0) return nbd_status("nbd_get_size");
  size_bytes_ = static_cast<uint64_t>(size);
  int64_t minimum = nbd_get_block_size(handle_, LIBNBD_SIZE_MINIMUM);
  int64_t maximum = nbd_get_block_size(handle_, LIBNBD_SIZE_MAXIMUM);
  if (minimum > 1) block_bytes_ = static_cast<uint64_t>(minimum);
  if (maximum > 0) chunk_bytes_ = std::min<uint64_t>(chunk_bytes_, static_cast<uint64_t>(maximum));
  chunk_bytes_ = std::max(chunk_bytes_ / block_bytes_ * block_bytes_, block_bytes_);
  return Status::ok();
}

}  // namespace kelpie::cli
