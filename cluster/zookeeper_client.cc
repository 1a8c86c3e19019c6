#include "cluster/zookeeper_client.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/log.h"

namespace kelpie {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kFirstGetBytes = 64 * 1024;
constexpr std::chrono::milliseconds kResolveDelay{60000};

Status zk_error(int rc, const std::string& what) {
  int code = EIO;
  if (rc == ZNONODE) {
    code = ENOENT;
  } else if (rc == ZNODEEXISTS) {
    code = EEXIST;
  } else if (rc == ZBADVERSION) {
    code = ESTALE;
  } else if (rc == ZNOTEMPTY) {
    code = ENOTEMPTY;
  } else if (rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT || rc == ZSESSIONEXPIRED ||
             rc == ZINVALIDSTATE || rc == ZCLOSING || rc == ZSESSIONMOVED) {
    code = ENOTCONN;
  }
  return Status::error(code, "zookeeper " + what + ": " + zerror(rc));
}

// The C client's own log lines (connection attempts and such) go to our debug log.
void client_log(const char* message) { KELPIE_LOG_DEBUG("zookeeper client: {}", message); }

}  // namespace

void sort_by_sequence(std::vector<std::string>& names) {
  auto suffix = [](const std::string& name) {
    return name.size() >= 10 ? name.substr(name.size() - 10) : name;
  };
  std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    return suffix(a) < suffix(b);
  });
}

ZookeeperClient::ZookeeperClient(std::string hosts, std::chrono::milliseconds session_timeout,
                                 watcher_fn watcher, void* context)
    : hosts_(std::move(hosts)),
      session_timeout_(session_timeout),
      watcher_(watcher),
      context_(context) {
  static std::once_flag quiet;
  std::call_once(quiet, [] { zoo_set_debug_level(ZOO_LOG_LEVEL_WARN); });
}

ZookeeperClient::~ZookeeperClient() { close(); }

Status ZookeeperClient::open(std::chrono::milliseconds connect_timeout) {
  std::unique_lock lock(mutex_);
  if (handle_ != nullptr) zookeeper_close(handle_);
  errno = 0;
  handle_ = zookeeper_init2(hosts_.c_str(), watcher_, static_cast<int>(session_timeout_.count()),
                            nullptr, context_, 0, client_log);
  if (handle_ == nullptr) {
    int error = errno == 0 ? EINVAL : errno;
    return Status::error(error, "zookeeper " + hosts_ + ": cannot use this host list (" +
                                    std::strerror(error) + ")");
  }
  // The C client re-resolves the host list every time its I/O thread wakes (a
  // getaddrinfo per request: ~60 % of an idle member's CPU at one round trip a
  // second). Once a minute is plenty; a lost connection still resolves again.
  (void)zoo_set_servers_resolution_delay(handle_, static_cast<int>(kResolveDelay.count()));
  auto deadline = Clock::now() + connect_timeout;
  while (zoo_state(handle_) != ZOO_CONNECTED_STATE) {
    if (Clock::now() >= deadline) {
      zookeeper_close(handle_);
      handle_ = nullptr;
      return Status::error(ETIMEDOUT, "zookeeper " + hosts_ + ": no connection within " +
                                          std::to_string(connect_timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Status::ok();
}

void ZookeeperClient::close() {
  std::unique_lock lock(mutex_);
  if (handle_ != nullptr) zookeeper_close(handle_);
  handle_ = nullptr;
}

int ZookeeperClient::state() const {
  std::shared_lock lock(mutex_);
  return handle_ == nullptr ? 0 : zoo_state(handle_);
}

bool ZookeeperClient::expired() const {
  int current = state();
  return current == ZOO_EXPIRED_SESSION_STATE || current == ZOO_AUTH_FAILED_STATE;
}

std::string ZookeeperClient::state_name() const {
  int current = state();
  if (current == 0) return "closed";
  if (current == ZOO_CONNECTED_STATE) return "connected";
  if (current == ZOO_CONNECTING_STATE || current == ZOO_ASSOCIATING_STATE) return "connecting";
  if (current == ZOO_EXPIRED_SESSION_STATE) return "expired";
  if (current == ZOO_AUTH_FAILED_STATE) return "auth-failed";
  if (current == ZOO_READONLY_STATE) return "read-only";
  return "not connected";
}

int64_t ZookeeperClient::session_id() const {
  std::shared_lock lock(mutex_);
  if (handle_ == nullptr) return 0;
  const clientid_t* id = zoo_client_id(handle_);
  return id == nullptr ? 0 : id->client_id;
}

std::chrono::milliseconds ZookeeperClient::negotiated_timeout() const {
  std::shared_lock lock(mutex_);
  return std::chrono::milliseconds(handle_ == nullptr ? 0 : zoo_recv_timeout(handle_));
}

template <typename Call>
int ZookeeperClient::with_handle(Call call) const {
  std::shared_lock lock(mutex_);
  if (handle_ == nullptr) return ZCLOSING;
  return call(handle_);
}

Result<ZookeeperClient::Data> ZookeeperClient::get(const std::string& path, bool watch) const {
  Data data;
  data.bytes.resize(kFirstGetBytes);
  for (int attempt = 0; attempt < 4; ++attempt) {
    int length = static_cast<int>(data.bytes.size());
    int rc = with_handle([&](zhandle_t* handle) {
      return zoo_get(handle, path.c_str(), watch ? 1 : 0, data.bytes.data(), &length, &data.stat);
    });
    if (rc != ZOK) return zk_error(rc, "get " + path);
    if (data.stat.dataLength <= static_cast<int>(data.bytes.size())) {
      data.bytes.resize(length < 0 ? 0 : static_cast<size_t>(length));
      return data;
    }
    data.bytes.resize(static_cast<size_t>(data.stat.dataLength));
  }
  return Status::error(EIO, "zookeeper get " + path + ": the data keeps growing");
}

Result<std::optional<Stat>> ZookeeperClient::exists(const std::string& path, bool watch) const {
  Stat stat{};
  int rc = with_handle(
      [&](zhandle_t* handle) { return zoo_exists(handle, path.c_str(), watch ? 1 : 0, &stat); });
  if (rc == ZNONODE) return std::optional<Stat>();
  if (rc != ZOK) return zk_error(rc, "exists " + path);
  return std::optional<Stat>(stat);
}

Result<std::vector<std::string>> ZookeeperClient::children(const std::string& path,
                                                           bool watch) const {
  String_vector names{};
  int rc = with_handle([&](zhandle_t* handle) {
    return zoo_get_children(handle, path.c_str(), watch ? 1 : 0, &names);
  });
  if (rc != ZOK) return zk_error(rc, "list " + path);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(names.count));
  for (int32_t i = 0; i < names.count; ++i) out.emplace_back(names.data[i]);
  deallocate_String_vector(&names);
  return out;
}

Result<std::string> ZookeeperClient::create(const std::string& path, const std::string& data,
                                            int mode) const {
  std::string created(path.size() + 32, '\0');
  int rc = with_handle([&](zhandle_t* handle) {
    return zoo_create(handle, path.c_str(), data.data(), static_cast<int>(data.size()),
                      &ZOO_OPEN_ACL_UNSAFE, mode, created.data(), static_cast<int>(created.size()));
  });
  if (rc != ZOK) return zk_error(rc, "create " + path);
  created.resize(std::strlen(created.c_str()));
  return created;
}

Status ZookeeperClient::create_path(const std::string& path) const {
  for (size_t at = 1; at <= path.size(); ++at) {
    if (at != path.size() && path[at] != '/') continue;
    Result<std::string> created = create(path.substr(0, at), "", ZOO_PERSISTENT);
    if (!created && created.status().code() != EEXIST) return created.status();
  }
  return Status::ok();
}

Result<Stat> ZookeeperClient::set(const std::string& path, const std::string& data,
                                  int version) const {
  Stat stat{};
  int rc = with_handle([&](zhandle_t* handle) {
    return zoo_set2(handle, path.c_str(), data.data(), static_cast<int>(data.size()), version,
                    &stat);
  });
  if (rc != ZOK) return zk_error(rc, "set " + path);
  return stat;
}

Status ZookeeperClient::remove(const std::string& path, int version) const {
  int rc = with_handle([&](zhandle_t* handle) { return zoo_delete(handle, path.c_str(), version); });
  if (rc != ZOK) return zk_error(rc, "delete " + path);
  return Status::ok();
}

Status ZookeeperClient::multi(const std::vector<Op>& ops) const {
  std::vector<zoo_op_t> zoo_ops(ops.size());
  std::vector<zoo_op_result_t> results(ops.size());
  std::vector<std::string> created(ops.size());
  std::vector<Stat> stats(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    switch (op.kind) {
      case Op::Kind::kCreate:
        created[i].assign(op.path.size() + 32, '\0');
        zoo_create_op_init(&zoo_ops[i], op.path.c_str(), op.data.data(),
                           static_cast<int>(op.data.size()), &ZOO_OPEN_ACL_UNSAFE, op.mode,
                           created[i].data(), static_cast<int>(created[i].size()));
        break;
      case Op::Kind::kSet:
        zoo_set_op_init(&zoo_ops[i], op.path.c_str(), op.data.data(),
                        static_cast<int>(op.data.size()), op.version, &stats[i]);
        break;
      case Op::Kind::kDelete:
        zoo_delete_op_init(&zoo_ops[i], op.path.c_str(), op.version);
        break;
    }
  }
  int rc = with_handle([&](zhandle_t* handle) {
    return zoo_multi(handle, static_cast<int>(zoo_ops.size()), zoo_ops.data(), results.data());
  });
  if (rc == ZOK) return Status::ok();
  for (size_t i = 0; i < ops.size(); ++i) {
    if (results[i].err != ZOK && results[i].err != ZRUNTIMEINCONSISTENCY) {
      return zk_error(results[i].err, "multi op on " + ops[i].path);
    }
  }
  return zk_error(rc, "multi (" + std::to_string(ops.size()) + " ops)");
}

}  // namespace kelpie
