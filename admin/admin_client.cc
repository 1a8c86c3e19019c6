#include "admin/admin_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/admin_wire.h"

namespace kelpie {
namespace {

// Connects `fd` to `address` within `timeout_ms`; returns 0 or an errno.
int connect_with_timeout(int fd, const sockaddr* address, socklen_t length, int timeout_ms) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno;
  int error_number = 0;
  if (::connect(fd, address, length) < 0) {
    if (errno != EINPROGRESS) return errno;
    pollfd pfd{fd, POLLOUT, 0};
    int ready;
    do {
      ready = ::poll(&pfd, 1, timeout_ms);
    } while (ready < 0 && errno == EINTR);
    if (ready < 0) return errno;
    if (ready == 0) return ETIMEDOUT;
    socklen_t error_length = sizeof(error_number);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error_number, &error_length) < 0) return errno;
    if (error_number != 0) return error_number;
  }
  if (::fcntl(fd, F_SETFL, flags) < 0) return errno;
  return 0;
}

}  // namespace

Result<AdminClient> AdminClient::connect(const std::string& address) {
  Result<HostPort> host_port = parse_host_port(address);
  if (!host_port) return host_port.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  std::string port_text = std::to_string(host_port->port);
  if (int rc = ::getaddrinfo(host_port->host.c_str(), port_text.c_str(), &hints, &addresses)) {
    return Status::error(EHOSTUNREACH, "cannot reach kelpied at " + address + ": cannot resolve '" +
                                           host_port->host + "': " + ::gai_strerror(rc));
  }
  int error_number = EHOSTUNREACH;
  int connected_fd = -1;
  for (addrinfo* ai = addresses; ai != nullptr && connected_fd < 0; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error_number = errno;
      continue;
    }
    error_number = connect_with_timeout(fd, ai->ai_addr, ai->ai_addrlen, kConnectTimeoutMs);
    if (error_number == 0) {
      connected_fd = fd;
    } else {
      ::close(fd);
    }
  }
  ::freeaddrinfo(addresses);
  if (connected_fd < 0) {
    return Status::error(error_number,
                         "cannot reach kelpied at " + address + ": " + std::strerror(error_number));
  }
  int one = 1;
  (void)::setsockopt(connected_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  timeval timeout{kReplyTimeoutS, 0};
  (void)::setsockopt(connected_fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  (void)::setsockopt(connected_fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  return AdminClient(connected_fd, address);
}

void AdminClient::set_reply_timeout_s(int seconds) {
  KELPIE_ASSERT(seconds > 0);
  timeval timeout{seconds, 0};
  (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
}

AdminClient::AdminClient(AdminClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), address_(std::move(other.address_)) {}

AdminClient& AdminClient::operator=(AdminClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    address_ = std::move(other.address_);
  }
  return *this;
}

AdminClient::~AdminClient() {
  if (fd_ >= 0) ::close(fd_);
}

Result<nlohmann::json> AdminClient::call(std::string_view op, nlohmann::json arguments) {
  if (fd_ < 0) return Status::error(ENOTCONN, "not connected to kelpied at " + address_);
  if (!arguments.is_object()) arguments = nlohmann::json::object();
  arguments["op"] = std::string(op);
  auto lost = [&](const Status& status) {
    return Status::error(status.code(),
                         "lost connection to kelpied at " + address_ + ": " + status.message());
  };
  if (Status sent = send_admin_message(fd_, arguments); !sent) return lost(sent);
  Result<nlohmann::json> reply = recv_admin_message(fd_);
  if (!reply) return lost(reply.status());
  auto ok = reply->find("ok");
  if (ok == reply->end() || !ok->is_boolean()) {
    return Status::error(EBADMSG, "malformed reply from kelpied at " + address_);
  }
  if (ok->get<bool>()) return reply;
  Result<uint64_t> code = json_u64_field(*reply, "errno");
  Result<std::string> message = json_string_field(*reply, "error");
  int errno_code = code && *code > 0 && *code < 4096 ? static_cast<int>(*code) : EIO;
  return Status::error(errno_code, message ? *message : std::strerror(errno_code));
}

}  // namespace kelpie
