// AdminClient: one blocking connection to a kelpied admin server.
//
// Contract:
//  - connect() resolves "HOST:PORT" and connects within kConnectTimeoutMs. Failures
//    are one-line Statuses meant for the user: EINVAL for a malformed address,
//    otherwise the socket errno as "cannot reach kelpied at HOST:PORT: <strerror>".
//  - call() sends {"op": op, ...arguments} and waits up to kReplyTimeoutS (or what
//    set_reply_timeout_s() set) for the reply; ETIMEDOUT after that. {"ok": true, ...} comes back as the whole reply object; {"ok": false}
//    becomes Status(errno, error) carrying the daemon's message unchanged; a lost
//    connection or malformed reply is a Status naming the address.
//  - Move-only; the destructor closes the connection.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kelpie {

class AdminClient {
 public:
  static constexpr int kConnectTimeoutMs = 10'000;
  static constexpr int kReplyTimeoutS = 120;

  static Result<AdminClient> connect(const std::string& address);

  AdminClient(AdminClient&& other) noexcept;
  AdminClient& operator=(AdminClient&& other) noexcept;
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;
  ~AdminClient();

  // For requests that may run long (cluster.check). REQUIRES: seconds > 0.
  void set_reply_timeout_s(int seconds);

  Result<nlohmann::json> call(std::string_view op,
                              nlohmann::json arguments = nlohmann::json::object());

  const std::string& address() const { return address_; }
  int fd() const { return fd_; }

 private:
  AdminClient(int fd, std::string address) : fd_(fd), address_(std::move(address)) {}

  int fd_ = -1;
  std::string address_;
};

}  // namespace kelpie
