// The peer transport: PeerServer serves peer requests, PeerClient sends them
// (frames in peer_wire.h, rules in docs/protocol.md).
//
// Contract:
//  - Addresses are "HOST:PORT" (numeric IP) or "unix:/path".
//  - PeerServer accepts on reactor 0 and hands each connection to a reactor in
//    turn; the connection lives there. It expects HELLO first and asks the
//    handler; a refusal is answered (status and message) and the connection
//    closed. Then each request runs as its own handler task on that reactor (at
//    most kMaxPeerRequestsInFlight per connection; beyond that it stops reading)
//    and replies leave as they complete, in any order. A malformed frame closes
//    that connection only.
//  - PeerClient keeps one lazily opened connection per (reactor, peer node), used
//    only by that reactor: no locks on the data path. call() completes on the
//    caller's reactor. Transport failures (connect, send, receive, a refused hello,
//    a timeout) are Result errors whose code is an errno (ECONNREFUSED,
//    ECONNRESET, ETIMEDOUT, EPROTO, EINVAL, ...) and whose message names the peer;
//    a broken connection fails every call in flight on it and the next call
//    reconnects. A reply with a non-zero status (ENOENT, kEpochMismatch, ...) is a
//    successful call: look at PeerReply::status.
//  - With PeerClientOptions::reachability, every call's outcome is recorded there
//    per node (cluster/peer_reachability.h): a transport failure (not one this
//    client caused itself: drop(), close_all()) as a failure, any reply as a success.
//  - Test-only fault hook: PeerServer::refuse_peers_while(FILE) (kelpied reads
//    KELPIE_TEST_REFUSE_PEERS_FILE at start-up). While FILE exists, the server
//    closes every connection from the peers it names (node UUIDs separated by white
//    space; empty or "*": every peer) at the hello or at its next request, without a
//    reply: to those peers this node is unreachable while its heartbeat goes on.
//    Never set in production; costs nothing unset.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cluster/peer_protocol.h"
#include "engine/reactor_pool.h"

namespace kelpie {

class PeerReachability;
class PeerRefusal;

constexpr uint32_t kMaxPeerRequestsInFlight = 256;

class PeerHandler {
 public:
  virtual ~PeerHandler() = default;
  // Ok to accept; otherwise EPROTO (version) or EINVAL (cluster, node) with a
  // message, which is sent to the peer before the connection closes.
  virtual Status accept_hello(const PeerHello& hello) = 0;
  // Serves one request on the connection's reactor. request.data stays valid
  // until the task completes; the reply's data must stay valid until then too.
  virtual Task<PeerReply> handle(const PeerRequest& request) = 0;
};

class PeerServer {
 public:
  PeerServer(std::string address, PeerHandler& handler, const ReactorPool& reactors);
  ~PeerServer();
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  // Test-only (see the contract above). Before start().
  void refuse_peers_while(const std::string& file);
  // Binds and starts accepting; an error names the address.
  Status start();
  // Closes the listener and every connection and waits (bounded, 30 s) for their
  // handlers to finish. From a non-reactor thread.
  void stop();
  // The address actually bound (port 0 resolved), valid after start().
  const std::string& bound() const { return bound_; }
  uint32_t connection_count() const { return connections_.load(); }

 private:
  Task<void> accept_loop();
  Task<void> run_connection(Reactor& reactor, int fd);

  std::string address_;
  std::string bound_;
  PeerHandler& handler_;
  const ReactorPool& reactors_;
  int listen_fd_ = -1;
  std::atomic<uint32_t> connections_{0};
  std::atomic<bool> accepting_{false};
  std::atomic<bool> stopping_{false};
  std::mutex fds_mutex_;
  std::set<int> open_fds_;
  size_t next_reactor_ = 0;
  std::shared_ptr<PeerRefusal> refusal_;  // test-only fault hook; null unless set
};

struct PeerClientOptions {
  std::chrono::milliseconds call_timeout{10000};
  std::chrono::milliseconds connect_timeout{2000};
  PeerReachability* reachability = nullptr;  // must outlive the client; may be null
};

class PeerClient {
 public:
  // `cluster` may be all zeros until the cluster is formatted (set_cluster()).
  PeerClient(const ReactorPool& reactors, const Uuid& cluster, const Uuid& self, PeerClientOptions options = {});
  ~PeerClient();
  PeerClient(const PeerClient&) = delete;
  PeerClient& operator=(const PeerClient&) = delete;

  // Used by connections opened from now on. Safe from any thread.
  void set_cluster(const Uuid& cluster);

  // Sends `request` to `node` at `address` and waits for its reply. From a reactor
  // of the pool; completes there. For kRead with a non-empty `read_into`
  // (REQUIRES: size == request.length) the bytes land there and reply.data stays
  // empty. request.data and read_into must stay valid until the call completes.
  Task<Result<PeerReply>> call(const Uuid& node, const std::string& address, const PeerRequest& request,
                               std::span<uint8_t> read_into = {});

  // Closes every connection to `node` (calls in flight on them fail). Safe from
  // any thread; takes effect on each reactor shortly after.
  void drop(const Uuid& node);
  // Closes every connection and waits (bounded) until they are gone. From a
  // non-reactor thread, before the reactors stop.
  void close_all();

  class Connection;
  struct Local;

 private:
  friend class Connection;
  Local& local();
  Uuid cluster();
  Task<Result<std::shared_ptr<Connection>>> connection_to(const Uuid& node, const std::string& address);
  void note_outcome(const Uuid& node, const Status& status);

  const ReactorPool& reactors_;
  Uuid self_;
  PeerClientOptions options_;
  std::mutex cluster_mutex_;
  Uuid cluster_;
  std::vector<std::unique_ptr<Local>> locals_;  // one per reactor of the pool
  std::atomic<int> live_connections_{0};
  std::atomic<int> pending_hops_{0};
};

}  // namespace kelpie
