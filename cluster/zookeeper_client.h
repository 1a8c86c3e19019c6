// ZookeeperClient: a small synchronous wrapper over one ZooKeeper C client handle
// (libzookeeper-mt) for the zookeeper membership driver (cluster/zookeeper_membership.h).
//
// Contract:
//  - open() makes a new session (closing any old handle) and waits, bounded, until it
//    is connected: ETIMEDOUT "zookeeper HOSTS: no connection within N ms", EINVAL when
//    the host list does not resolve. The host names are resolved again at most once a
//    minute while connected (and on every reconnection), not on every request.
//  - Every call is synchronous and thread-safe (the handle is shared; open/close take
//    it exclusively). Errors are Status values: ZNONODE -> ENOENT, ZNODEEXISTS ->
//    EEXIST, ZBADVERSION -> ESTALE, ZNOTEMPTY -> ENOTEMPTY, connection loss, timeouts
//    and an expired or closed session -> ENOTCONN, anything else -> EIO; the message
//    names the operation, the path and ZooKeeper's error text.
//  - The watcher given to the constructor runs on the client's completion thread for
//    session events and for the watches the calls set (watch = true).
//  - Never call it from a reactor: a call blocks for a round trip to the ensemble.
#pragma once

#include <zookeeper/zookeeper.h>

#include <chrono>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common/status.h"

namespace kelpie {

class ZookeeperClient {
 public:
  struct Data {
    std::string bytes;
    Stat stat{};
  };
  struct Op {
    enum class Kind { kCreate, kSet, kDelete } kind;
    std::string path;
    std::string data;
    int mode = 0;      // kCreate: ZOO_PERSISTENT, ZOO_EPHEMERAL, ...
    int version = -1;  // kSet, kDelete: -1 matches any
  };

  ZookeeperClient(std::string hosts, std::chrono::milliseconds session_timeout,
                  watcher_fn watcher, void* context);
  ~ZookeeperClient();  // close()
  ZookeeperClient(const ZookeeperClient&) = delete;
  ZookeeperClient& operator=(const ZookeeperClient&) = delete;

  Status open(std::chrono::milliseconds connect_timeout);
  // Ends the session: ZooKeeper deletes its ephemeral znodes at once.
  void close();

  // ZOO_CONNECTED_STATE, ZOO_CONNECTING_STATE, ZOO_EXPIRED_SESSION_STATE, ...; 0
  // without a handle.
  int state() const;
  bool connected() const { return state() == ZOO_CONNECTED_STATE; }
  bool expired() const;
  // "connected", "connecting", "expired", "closed", ...
  std::string state_name() const;
  int64_t session_id() const;  // 0 without a session
  // What the server negotiated (0 before the first connection).
  std::chrono::milliseconds negotiated_timeout() const;
  const std::string& hosts() const { return hosts_; }

  Result<Data> get(const std::string& path, bool watch) const;
  // nullopt when the znode does not exist (with watch, a watch for its creation).
  Result<std::optional<Stat>> exists(const std::string& path, bool watch) const;
  Result<std::vector<std::string>> children(const std::string& path, bool watch) const;
  // Returns the path created (with its sequence number for *_SEQUENTIAL modes).
  Result<std::string> create(const std::string& path, const std::string& data, int mode) const;
  // Creates `path` and its missing parents as persistent empty znodes.
  Status create_path(const std::string& path) const;
  Result<Stat> set(const std::string& path, const std::string& data, int version) const;
  Status remove(const std::string& path, int version = -1) const;
  // All or nothing; on failure the Status is that of the first failing op.
  Status multi(const std::vector<Op>& ops) const;

 private:
  template <typename Call>
  int with_handle(Call call) const;

  const std::string hosts_;
  const std::chrono::milliseconds session_timeout_;
  watcher_fn watcher_;
  void* context_;
  mutable std::shared_mutex mutex_;  // shared by calls; exclusive to replace the handle
  zhandle_t* handle_ = nullptr;
};

// Sorts sequential znode names ("...-0000000012") by their 10-digit suffix.
void sort_by_sequence(std::vector<std::string>& names);

}  // namespace kelpie
