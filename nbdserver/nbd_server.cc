#include "nbdserver/nbd_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "common/log.h"
#include "engine/socket_stream.h"
#include "engine/vdi_directory.h"
#include "nbdserver/connection.h"

namespace kelpie::nbd {

Result<std::pair<std::string, uint16_t>> parse_host_port(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return Status::error(EINVAL, "address '" + text + "' is not HOST:PORT");
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string port_text = text.substr(colon + 1);
  char* end = nullptr;
  unsigned long port = std::strtoul(port_text.c_str(), &end, 10);
  if (*end != '\0' || port == 0 || port > 65535) {
    return Status::error(EINVAL, "address '" + text + "' has an invalid port");
  }
  return std::make_pair(host, static_cast<uint16_t>(port));
}

namespace {

Result<int> listen_tcp(const std::string& address) {
  auto parsed = parse_host_port(address);
  if (!parsed) return parsed.status();
  auto [host, port] = *parsed;
  sockaddr_storage storage{};
  socklen_t length;
  int family;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof(*v6);
  } else {
    return Status::error(EINVAL, "address '" + address + "': host must be a numeric IP address");
  }
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::error(errno, "socket");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (int err = bind_and_listen(fd, reinterpret_cast<sockaddr*>(&storage), length, 128); err != 0) {
    ::close(fd);
    return Status::error(err, "cannot listen on " + address);
  }
  return fd;
}

Result<int> listen_unix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return Status::error(ENAMETOOLONG, "socket path too long: " + path);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());  // a stale socket from an earlier run
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::error(errno, "socket");
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0) {
    int err = errno;
    ::close(fd);
    return Status::error(err, "cannot listen on " + path);
  }
  return fd;
}

}  // namespace

NbdServer::NbdServer(ServerOptions options, VdiDirectory& directory, const ReactorPool& reactors)
    : options_(std::move(options)), directory_(directory), reactors_(reactors) {}

NbdServer::~NbdServer() {
  for (int fd : listen_fds_) ::close(fd);
  if (!options_.unix_path.empty()) ::unlink(options_.unix_path.c_str());
}

Status NbdServer::start() {
  if (!options_.tcp_address.empty()) {
    auto fd = listen_tcp(options_.tcp_address);
    if (!fd) return fd.status();
    listen_fds_.push_back(*fd);
  }
  if (!options_.unix_path.empty()) {
    auto fd = listen_unix(options_.unix_path);
    if (!fd) return fd.status();
    listen_fds_.push_back(*fd);
  }
  for (int fd : listen_fds_) {
    accept_loops_.fetch_add(1);
    spawn([](NbdServer* self, int listen_fd) -> Task<void> {
      co_await switch_to(self->reactors_.at(0));
      co_await self->accept_loop(listen_fd);
    }(this, fd));
  }
  return Status::ok();
}

Task<void> NbdServer::accept_loop(int listen_fd) {
  while (!stopping_.load()) {
    int fd = co_await async_accept(listen_fd);
    if (fd < 0) {
      if (stopping_.load()) break;
      if (fd == -EMFILE || fd == -ENFILE) {
        KELPIE_LOG_ERROR("nbd: accept: {}", std::strerror(-fd));
        co_await yield_now();
      }
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // fails harmlessly on Unix sockets
    {
      std::lock_guard lock(fds_mutex_);
      open_fds_.insert(fd);
    }
    connections_.fetch_add(1);
    Reactor& target = reactors_.at(next_reactor_++ % reactors_.size());
    spawn(run_connection(target, fd));
  }
  accept_loops_.fetch_sub(1);
}

Task<void> NbdServer::run_connection(Reactor& reactor, int fd) {
  co_await switch_to(reactor);
  {
    Connection connection(fd, directory_, reactors_);
    co_await connection.run();
  }
  {
    std::lock_guard lock(fds_mutex_);
    open_fds_.erase(fd);
  }
  connections_.fetch_sub(1);
}

void NbdServer::stop() {
  stopping_.store(true);
  for (int fd : listen_fds_) ::shutdown(fd, SHUT_RDWR);
  {
    std::lock_guard lock(fds_mutex_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((connections_.load() > 0 || accept_loops_.load() > 0) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace kelpie::nbd
