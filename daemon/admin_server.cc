#include "daemon/admin_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <limits>

#include "common/admin_wire.h"
#include "common/log.h"

namespace kelpie {
namespace {

using nlohmann::json;

// Request fields are the client's input: a bad one is EINVAL, not a wire error.
template <typename T>
Result<T> request_field(Result<T> field) {
  if (!field) return Status::error(EINVAL, "invalid request: " + field.status().message());
  return field;
}

// A string field the request may leave out.
Result<std::string> optional_string_field(const json& request, const char* key,
                                          std::string fallback) {
  if (!request.contains(key)) return fallback;
  return request_field(json_string_field(request, key));
}

Result<json> ok_with(json payload) {
  payload["ok"] = true;
  return payload;
}

Result<json> do_create(NodeControl& control, const json& request) {
  Result<std::string> name = request_field(json_string_field(request, "name"));
  if (!name) return name.status();
  Result<uint64_t> size = request_field(json_u64_field(request, "size"));
  if (!size) return size.status();
  uint64_t object_shift = 22;
  if (request.contains("object_shift")) {
    Result<uint64_t> shift = request_field(json_u64_field(request, "object_shift"));
    if (!shift) return shift.status();
    object_shift = *shift;
  }
  if (object_shift > std::numeric_limits<uint32_t>::max()) {
    return Status::error(EINVAL, "invalid object_shift " + std::to_string(object_shift));
  }
  Result<VdiSummary> vdi = control.create_vdi(*name, *size, static_cast<uint32_t>(object_shift));
  if (!vdi) return vdi.status();
  KELPIE_LOG_INFO("admin: created VDI '{}' ({} bytes, object shift {})", *name, *size,
                  object_shift);
  return ok_with(vdi_to_json(*vdi));
}

Result<json> do_delete(NodeControl& control, const json& request) {
  Result<std::string> name = request_field(json_string_field(request, "name"));
  if (!name) return name.status();
  if (Status status = control.delete_vdi(*name); !status) return status;
  KELPIE_LOG_INFO("admin: deleted VDI '{}'", *name);
  return ok_with(json::object());
}

Result<json> do_resize(NodeControl& control, const json& request) {
  Result<std::string> name = request_field(json_string_field(request, "name"));
  if (!name) return name.status();
  Result<uint64_t> size = request_field(json_u64_field(request, "size"));
  if (!size) return size.status();
  if (Status status = control.resize_vdi(*name, *size); !status) return status;
  KELPIE_LOG_INFO("admin: resized VDI '{}' to {} bytes", *name, *size);
  return ok_with(json::object());
}

Result<json> do_info(NodeControl& control, const json& request) {
  Result<std::string> name = request_field(json_string_field(request, "name"));
  if (!name) return name.status();
  Result<VdiSummary> vdi = control.vdi_info(*name);
  if (!vdi) return vdi.status();
  return ok_with(vdi_to_json(*vdi));
}

Result<json> do_list(NodeControl& control, const json&) {
  json vdis = json::array();
  for (const VdiSummary& vdi : control.list_vdis()) vdis.push_back(vdi_to_json(vdi));
  return ok_with({{"vdis", std::move(vdis)}});
}

Result<json> do_snapshot(NodeControl& control, const json& request) {
  Result<std::string> name = request_field(json_string_field(request, "name"));
  if (!name) return name.status();
  Result<std::string> tag = optional_string_field(request, "tag", "");
  if (!tag) return tag.status();
  Result<VdiSummary> snapshot = control.snapshot_vdi(*name, *tag);
  if (!snapshot) return snapshot.status();
  KELPIE_LOG_INFO("admin: snapshot '{}' of VDI '{}'", snapshot->name, *name);
  return ok_with(vdi_to_json(*snapshot));
}

Result<json> do_clone(NodeControl& control, const json& request) {
  Result<std::string> snapshot = request_field(json_string_field(request, "snapshot"));
  if (!snapshot) return snapshot.status();
  Result<std::string> new_name = request_field(json_string_field(request, "new_name"));
  if (!new_name) return new_name.status();
  Result<VdiSummary> clone = control.clone_vdi(*snapshot, *new_name);
  if (!clone) return clone.status();
  KELPIE_LOG_INFO("admin: cloned snapshot '{}' as VDI '{}'", *snapshot, *new_name);
  return ok_with(vdi_to_json(*clone));
}

Result<json> do_rollback(NodeControl& control, const json& request) {
  Result<std::string> snapshot = request_field(json_string_field(request, "snapshot"));
  if (!snapshot) return snapshot.status();
  Result<VdiSummary> vdi = control.rollback_vdi(*snapshot);
  if (!vdi) return vdi.status();
  KELPIE_LOG_INFO("admin: rolled VDI '{}' back to snapshot '{}'", vdi->name, *snapshot);
  return ok_with(vdi_to_json(*vdi));
}

// Replies with the page of extents that starts at "first_extent" (default 0) and
// holds at most kMaxBackupPlanExtentsPerReply; "extent_count" is the plan's total.
// A plan between two snapshots never changes, so the pages fit together.
Result<json> do_backup_plan(NodeControl& control, const json& request) {
  Result<std::string> to = request_field(json_string_field(request, "to"));
  if (!to) return to.status();
  Result<std::string> from = optional_string_field(request, "from", "");
  if (!from) return from.status();
  uint64_t first_extent = 0;
  if (request.contains("first_extent")) {
    Result<uint64_t> first = request_field(json_u64_field(request, "first_extent"));
    if (!first) return first.status();
    first_extent = *first;
  }
  Result<BackupPlan> plan = control.backup_plan(*to, *from);
  if (!plan) return plan.status();
  const size_t extent_count = plan->extents.size();
  if (first_extent > extent_count) {
    return Status::error(EINVAL, "first_extent " + std::to_string(first_extent) +
                                     " is past the plan's " + std::to_string(extent_count) +
                                     " extents");
  }
  auto page_begin = plan->extents.begin() + static_cast<ptrdiff_t>(first_extent);
  size_t page_length = std::min(kMaxBackupPlanExtentsPerReply, extent_count - first_extent);
  plan->extents = {page_begin, page_begin + static_cast<ptrdiff_t>(page_length)};
  json reply = backup_plan_to_json(*plan);
  reply["first_extent"] = first_extent;
  reply["extent_count"] = extent_count;
  return ok_with(std::move(reply));
}

Result<json> do_set_restored_from(NodeControl& control, const json& request) {
  Result<std::string> name = request_field(json_string_field(request, "name"));
  if (!name) return name.status();
  Result<std::string> identity = request_field(json_string_field(request, "identity"));
  if (!identity) return identity.status();
  if (Status status = control.set_restored_from(*name, *identity); !status) return status;
  KELPIE_LOG_INFO("admin: VDI '{}' restored from backup '{}'", *name, *identity);
  return ok_with(json::object());
}

Result<json> do_node_info(NodeControl& control, const json&) {
  return ok_with(node_to_json(control.node_info()));
}

// --- Cluster (issue 3) ------------------------------------------------------------

// A request field that must fit in uint32_t.
Result<uint32_t> u32_request_field(const json& request, const char* key) {
  Result<uint64_t> value = request_field(json_u64_field(request, key));
  if (!value) return value.status();
  if (*value > std::numeric_limits<uint32_t>::max()) {
    return Status::error(EINVAL, std::string("invalid request: field '") + key +
                                     "' is out of range");
  }
  return static_cast<uint32_t>(*value);
}

// Drops entries of `array` (JSON values) from its front or back until their JSON
// fits kMaxAdminReplyListBytes; returns how many were dropped.
size_t trim_to_reply_budget(json& array, bool keep_newest) {
  size_t bytes = 0;
  size_t kept = 0;
  const size_t count = array.size();
  for (; kept < count; ++kept) {
    const json& element = keep_newest ? array[count - 1 - kept] : array[kept];
    bytes += dump_json(element).size() + 1;
    if (bytes > kMaxAdminReplyListBytes) break;
  }
  const size_t dropped = count - kept;
  if (dropped == 0) return 0;
  json trimmed = json::array();
  const size_t first = keep_newest ? dropped : 0;
  for (size_t i = first; i < first + kept; ++i) trimmed.push_back(std::move(array[i]));
  array = std::move(trimmed);
  return dropped;
}

json cluster_reply(const ClusterSummary& cluster) {
  json reply = cluster_to_json(cluster);
  reply["history_omitted"] = trim_to_reply_budget(reply["history"], /*keep_newest=*/true);
  return reply;
}

Result<json> do_cluster_format(NodeControl& control, const json& request) {
  Result<uint32_t> copies = u32_request_field(request, "copies");
  if (!copies) return copies.status();
  Result<uint32_t> min_copies = u32_request_field(request, "min_copies");
  if (!min_copies) return min_copies.status();
  Result<ClusterSummary> cluster = control.format_cluster(*copies, *min_copies);
  if (!cluster) return cluster.status();
  KELPIE_LOG_INFO("admin: formatted cluster {} ({} copies, at least {})", cluster->cluster_uuid,
                  *copies, *min_copies);
  return ok_with(cluster_reply(*cluster));
}

Result<json> do_cluster_info(NodeControl& control, const json&) {
  Result<ClusterSummary> cluster = control.cluster_info();
  if (!cluster) return cluster.status();
  return ok_with(cluster_reply(*cluster));
}

Result<json> do_node_list(NodeControl& control, const json&) {
  Result<std::vector<MemberSummary>> members = control.list_nodes();
  if (!members) return members.status();
  json nodes = json::array();
  for (const MemberSummary& member : *members) nodes.push_back(member_to_json(member));
  return ok_with({{"nodes", std::move(nodes)}});
}

Result<json> do_node_recovery(NodeControl& control, const json&) {
  Result<std::vector<RecoverySummary>> recoveries = control.recovery_status();
  if (!recoveries) return recoveries.status();
  json nodes = json::array();
  for (const RecoverySummary& recovery : *recoveries) nodes.push_back(recovery_to_json(recovery));
  return ok_with({{"nodes", std::move(nodes)}});
}

Result<json> do_node_kill(NodeControl& control, const json& request) {
  Result<std::string> id = request_field(json_string_field(request, "id"));
  if (!id) return id.status();
  if (Status status = control.kill_node(*id); !status) return status;
  KELPIE_LOG_INFO("admin: asked node {} to leave the cluster", *id);
  return ok_with(json::object());
}

Result<json> do_cluster_shutdown(NodeControl& control, const json&) {
  if (Status status = control.shutdown_cluster(); !status) return status;
  KELPIE_LOG_INFO("admin: cluster shutdown requested");
  return ok_with(json::object());
}

Result<json> do_cluster_recover_force(NodeControl& control, const json&) {
  if (Status status = control.recover_force(); !status) return status;
  KELPIE_LOG_INFO("admin: forced recovery with the nodes alive now");
  return ok_with(json::object());
}

// May run for many minutes: the connection's thread simply waits for it (socket
// timeouts only apply while reading a request or sending a reply).
Result<json> do_cluster_check(NodeControl& control, const json& request) {
  Result<std::string> vdi = request_field(json_string_field(request, "vdi"));
  if (!vdi) return vdi.status();
  Result<bool> repair = request_field(json_bool_field(request, "repair"));
  if (!repair) return repair.status();
  Result<CheckReport> report = control.check(*vdi, *repair);
  if (!report) return report.status();
  KELPIE_LOG_INFO("admin: check of {}{}: {} objects, {} issues, {} repaired",
                  vdi->empty() ? "the cluster" : "VDI '" + *vdi + "'",
                  *repair ? " with repair" : "", report->objects_checked, report->issues.size(),
                  report->repaired);
  json reply = check_report_to_json(*report);
  reply["issues_omitted"] = trim_to_reply_budget(reply["issues"], /*keep_newest=*/false);
  return ok_with(std::move(reply));
}

struct Operation {
  const char* name;
  Result<json> (*run)(NodeControl&, const json&);
};

constexpr Operation kOperations[] = {
    {"vdi.create", do_create},
    {"vdi.delete", do_delete},
    {"vdi.resize", do_resize},
    {"vdi.info", do_info},
    {"vdi.list", do_list},
    {"vdi.snapshot", do_snapshot},
    {"vdi.clone", do_clone},
    {"vdi.rollback", do_rollback},
    {"vdi.backup_plan", do_backup_plan},
    {"vdi.set_restored_from", do_set_restored_from},
    {"node.info", do_node_info},
    {"cluster.format", do_cluster_format},
    {"cluster.info", do_cluster_info},
    {"node.list", do_node_list},
    {"node.recovery", do_node_recovery},
    {"node.kill", do_node_kill},
    {"cluster.shutdown", do_cluster_shutdown},
    {"cluster.recover_force", do_cluster_recover_force},
    {"cluster.check", do_cluster_check},
};

Result<json> dispatch(NodeControl& control, const json& request) {
  Result<std::string> op = json_string_field(request, "op");
  if (!op) return Status::error(EINVAL, "request has no 'op' string");
  for (const Operation& operation : kOperations) {
    if (*op == operation.name) return operation.run(control, request);
  }
  return Status::error(EINVAL, "unknown operation '" + *op + "'");
}

void set_timeout(int fd, int option, int seconds) {
  timeval timeout{seconds, 0};
  (void)::setsockopt(fd, SOL_SOCKET, option, &timeout, sizeof(timeout));
}

// Closing a socket with unread input sends a RST, which can destroy the reply
// still queued for the peer. Half-close, then read and discard a bounded amount
// so the peer gets to read the reply first.
void drain_before_close(int fd) {
  (void)::shutdown(fd, SHUT_WR);
  set_timeout(fd, SO_RCVTIMEO, 1);
  char discard[64 * 1024];
  for (size_t drained = 0; drained < 2 * kMaxAdminMessageBytes;) {
    ssize_t n = ::recv(fd, discard, sizeof(discard), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    drained += static_cast<size_t>(n);
  }
}

}  // namespace

AdminServer::AdminServer(NodeControl& control, std::string listen_address)
    : control_(control), listen_address_(std::move(listen_address)) {}

AdminServer::~AdminServer() { stop(); }

json AdminServer::handle_request(NodeControl& control, const json& request) {
  try {
    Result<json> reply = dispatch(control, request);
    return reply ? std::move(*reply) : error_reply(reply.status());
  } catch (const std::exception& error) {
    // A bug below us must not take the daemon down through an admin thread.
    KELPIE_LOG_ERROR("admin: request failed with exception: {}", error.what());
    return error_reply(Status::error(EIO, std::string("internal error: ") + error.what()));
  }
}

Status AdminServer::start() {
  KELPIE_ASSERT(listen_fd_ < 0);
  Result<HostPort> address = parse_host_port(listen_address_);
  if (!address) return address.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  std::string port_text = std::to_string(address->port);
  if (int rc = ::getaddrinfo(address->host.c_str(), port_text.c_str(), &hints, &addresses)) {
    return Status::error(
        EINVAL, "cannot resolve admin address '" + listen_address_ + "': " + ::gai_strerror(rc));
  }
  int error_number = EADDRNOTAVAIL;
  for (addrinfo* ai = addresses; ai != nullptr && listen_fd_ < 0; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error_number = errno;
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 64) == 0) {
      listen_fd_ = fd;
    } else {
      error_number = errno;
      ::close(fd);
    }
  }
  ::freeaddrinfo(addresses);
  if (listen_fd_ < 0) {
    return Status::error(error_number, "cannot listen on admin address " + listen_address_ + ": " +
                                           std::strerror(error_number));
  }
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof(bound);
  KELPIE_ASSERT(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &bound_length) == 0);
  bound_port_ =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    int saved = errno;
    ::close(listen_fd_);
    listen_fd_ = -1;
    return Status::error(saved, std::string("admin server eventfd: ") + std::strerror(saved));
  }
  stopping_ = false;
  accept_thread_ = std::thread([this] { accept_loop(); });
  KELPIE_LOG_INFO("admin: listening on {} (port {})", listen_address_, bound_port_);
  return Status::ok();
}

void AdminServer::stop() {
  if (listen_fd_ < 0) return;
  stopping_ = true;
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  accept_thread_.join();
  {
    std::lock_guard lock(mutex_);
    // Wakes every serving thread out of recv/send; each then closes its own fd.
    for (Connection& connection : connections_) {
      if (connection.fd >= 0) ::shutdown(connection.fd, SHUT_RDWR);
    }
  }
  for (Connection& connection : connections_) connection.thread.join();
  connections_.clear();
  ::close(listen_fd_);
  ::close(wake_fd_);
  listen_fd_ = -1;
  wake_fd_ = -1;
}

void AdminServer::accept_loop() {
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno != EINTR) KELPIE_LOG_WARN("admin: poll failed: {}", std::strerror(errno));
      continue;
    }
    if (fds[1].revents != 0) break;
    if (fds[0].revents == 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      // Out of fds or memory: back off instead of spinning on a ready listener.
      KELPIE_LOG_WARN("admin: accept failed: {}", std::strerror(errno));
      pollfd wake = {wake_fd_, POLLIN, 0};
      (void)::poll(&wake, 1, 100);
      continue;
    }
    set_timeout(fd, SO_RCVTIMEO, kIdleTimeoutS);
    set_timeout(fd, SO_SNDTIMEO, kSendTimeoutS);
    std::lock_guard lock(mutex_);
    reap_finished_locked();
    if (connections_.size() >= kMaxConnections) {
      KELPIE_LOG_WARN("admin: refusing connection, {} already open", connections_.size());
      (void)send_admin_message(fd, error_reply(Status::error(EBUSY, "too many admin connections")));
      ::close(fd);
      continue;
    }
    Connection& connection = connections_.emplace_back();
    connection.fd = fd;
    connection.thread = std::thread([this, &connection] { serve(&connection); });
  }
}

void AdminServer::reap_finished_locked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (it->done) {
      it->thread.join();  // already returned or about to: it only unlocks mutex_ and exits
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void AdminServer::serve(Connection* connection) {
  int fd = connection->fd;  // only this thread closes it, so no lock is needed to read
  while (!stopping_) {
    Result<json> request = recv_admin_message(fd);
    json reply;
    if (request) {
      reply = handle_request(control_, *request);
    } else if (request.status().code() == EBADMSG || request.status().code() == EMSGSIZE) {
      reply = error_reply(request.status());
    } else {
      if (request.status().code() != EPIPE) {
        KELPIE_LOG_DEBUG("admin: connection ends: {}", request.status().to_string());
      }
      break;
    }
    Status sent = send_admin_message(fd, reply);
    if (!sent && sent.code() == EMSGSIZE) {
      sent = send_admin_message(fd, error_reply(Status::error(EMSGSIZE, "reply too large")));
    }
    if (!sent) {
      KELPIE_LOG_DEBUG("admin: reply not sent: {}", sent.to_string());
      break;
    }
    // After an oversized frame the unread body makes the stream unusable.
    if (!request && request.status().code() == EMSGSIZE) {
      drain_before_close(fd);
      break;
    }
  }
  std::lock_guard lock(mutex_);
  ::close(fd);
  connection->fd = -1;
  connection->done = true;
}

}  // namespace kelpie
