// NbdServer: listens on TCP and/or a Unix socket and runs a Connection per client.
//
// Contract:
//  - start() binds every listener (a clear error if one can't be bound) and starts
//    accepting on reactor 0; each accepted connection is handed to a reactor in
//    turn and lives there until it ends.
//  - stop() stops accepting, shuts down every open connection's socket and waits
//    (bounded) until every connection has drained its requests. From a non-reactor thread.
#pragma once

#include <atomic>
#include <mutex>
#include <set>
#include <string>

#include "common/status.h"
#include "engine/reactor_pool.h"

namespace kelpie {
class VdiDirectory;
}

namespace kelpie::nbd {

struct ServerOptions {
  std::string tcp_address;  // "HOST:PORT", empty to disable
  std::string unix_path;    // empty to disable
};

class NbdServer {
 public:
  NbdServer(ServerOptions options, VdiDirectory& directory, const ReactorPool& reactors);
  ~NbdServer();

  Status start();
  void stop();
  uint32_t connection_count() const { return connections_.load(); }

 private:
  Task<void> accept_loop(int listen_fd);
  Task<void> run_connection(Reactor& reactor, int fd);

  ServerOptions options_;
  VdiDirectory& directory_;
  const ReactorPool& reactors_;
  std::vector<int> listen_fds_;
  std::atomic<uint32_t> connections_{0};
  std::atomic<uint32_t> accept_loops_{0};
  std::atomic<bool> stopping_{false};
  std::mutex fds_mutex_;
  std::set<int> open_fds_;
  size_t next_reactor_ = 0;
};

// Parses "HOST:PORT" (IPv4 or [IPv6]); EINVAL with a message otherwise.
Result<std::pair<std::string, uint16_t>> parse_host_port(const std::string& text);

}  // namespace kelpie::nbd
