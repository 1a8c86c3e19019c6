// AdminServer: kelpied's control plane over TCP (framing: common/admin_wire.h).
//
// Contract:
//  - start() resolves and binds the "HOST:PORT" given at construction (port 0 picks
//    a free port, see bound_port()) and starts an accept thread. It returns EINVAL
//    for a malformed address, the bind/listen errno (EADDRINUSE, ...) otherwise,
//    each with a one-line message naming the address.
//  - Each connection is served by its own thread with blocking sockets; at most
//    kMaxConnections at once (the next one gets an EBUSY reply and is closed).
//    A connection may carry many requests, answered in order.
//  - Requests: vdi.create {name, size, object_shift (default 22)}, vdi.delete {name},
//    vdi.resize {name, size}, vdi.info {name}, vdi.list, node.info, and the lifecycle:
//    vdi.snapshot {name, tag (default "": automatic)}, vdi.clone {snapshot, new_name},
//    vdi.rollback {snapshot}, vdi.backup_plan {to, from (default "": full),
//    first_extent (default 0)}, vdi.set_restored_from {name, identity}. Replies:
//      vdi.create, vdi.info, vdi.snapshot, vdi.clone, vdi.rollback
//                            {"ok": true, ...VdiSummary fields}
//      vdi.list              {"ok": true, "vdis": [VdiSummary...]}
//      vdi.backup_plan       {"ok": true, ...BackupPlan fields, "first_extent": F,
//                             "extent_count": N}: the extents F.. of the N in the plan,
//                            at most kMaxBackupPlanExtentsPerReply of them
//      node.info             {"ok": true, ...NodeSummary fields}
//      vdi.delete, vdi.resize, vdi.set_restored_from {"ok": true}
//    The cluster (issue 3; NodeControl answers ENOTSUP on a node without --cluster):
//    cluster.format {copies, min_copies}, cluster.info, node.list, node.recovery,
//    node.kill {id}, cluster.shutdown, cluster.recover_force,
//    cluster.check {vdi ("" = every object), repair (bool)}; every field is required.
//      cluster.format, cluster.info
//                            {"ok": true, ...ClusterSummary fields, "history_omitted": N}
//      node.list             {"ok": true, "nodes": [MemberSummary...]}
//      node.recovery         {"ok": true, "nodes": [RecoverySummary...]}
//      cluster.check         {"ok": true, ...CheckReport fields, "issues_omitted": N}
//      node.kill, cluster.shutdown, cluster.recover_force {"ok": true}
//    History (newest kept) and issues (first kept) are cut to kMaxAdminReplyListBytes
//    of JSON; N says how many were left out. cluster.check may take many minutes: the
//    connection waits for it (the timeouts below apply to reading a request and
//    sending a reply, not to executing one), and stop() waits for it too.
//    and on failure {"ok": false, "errno": N, "error": "..."} carrying NodeControl's
//    Status as is. An unknown op is EINVAL "unknown operation 'x'"; malformed JSON
//    gets an EBADMSG reply and the connection stays usable; an oversized frame gets
//    an EMSGSIZE reply and the connection is closed. A bad client only ever ends
//    its own connection.
//  - stop() (also run by the destructor) closes the listener and every connection
//    and joins all threads; it returns once no thread touches NodeControl any more.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"
#include "daemon/node_control.h"

namespace kelpie {

class AdminServer {
 public:
  static constexpr size_t kMaxConnections = 64;
  // A connection idle this long is closed so it cannot hold a slot forever.
  static constexpr int kIdleTimeoutS = 300;
  // A client that does not read its reply for this long is dropped.
  static constexpr int kSendTimeoutS = 30;

  AdminServer(NodeControl& control, std::string listen_address);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  [[nodiscard]] Status start();
  void stop();
  // The port actually bound; valid after a successful start().
  uint16_t bound_port() const { return bound_port_; }

  // Executes one decoded request against `control`; never throws. Exposed so the
  // dispatch can be tested without sockets.
  static nlohmann::json handle_request(NodeControl& control, const nlohmann::json& request);

 private:
  struct Connection {
    int fd = -1;  // -1 once the serving thread closed it (guarded by mutex_)
    bool done = false;
    std::thread thread;
  };

  void accept_loop();
  void serve(Connection* connection);
  void reap_finished_locked();

  NodeControl& control_;
  const std::string listen_address_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd that tells accept_loop to exit
  uint16_t bound_port_ = 0;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::list<Connection> connections_;  // list: Connection* stays valid across inserts
};

}  // namespace kelpie
