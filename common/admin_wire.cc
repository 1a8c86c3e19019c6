#include "common/admin_wire.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/bytes.h"

namespace kelpie {
namespace {

Status socket_error(int error_number) {
  if (error_number == EAGAIN || error_number == EWOULDBLOCK) {
    return Status::error(ETIMEDOUT, "timed out");
  }
  return Status::error(error_number, std::strerror(error_number));
}

Status send_all(int fd, const uint8_t* data, size_t length) {
  while (length > 0) {
    ssize_t sent = ::send(fd, data, length, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      return socket_error(errno);
    }
    data += sent;
    length -= static_cast<size_t>(sent);
  }
  return Status::ok();
}

// Reads exactly `length` bytes. `at_boundary` says whether EOF before the first
// byte is a clean close (EPIPE) rather than a truncated message (EPROTO).
Status recv_all(int fd, uint8_t* data, size_t length, bool at_boundary) {
  size_t got = 0;
  while (got < length) {
    ssize_t n = ::recv(fd, data + got, length - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return socket_error(errno);
    }
    if (n == 0) {
      if (at_boundary && got == 0) return Status::error(EPIPE, "connection closed by peer");
      return Status::error(EPROTO, "connection closed in the middle of a message");
    }
    got += static_cast<size_t>(n);
  }
  return Status::ok();
}

}  // namespace

std::string dump_json(const nlohmann::json& value, int indent) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

Status send_admin_message(int fd, const nlohmann::json& message) {
  std::string body = dump_json(message);
  if (body.size() > kMaxAdminMessageBytes) {
    return Status::error(EMSGSIZE, "message of " + std::to_string(body.size()) +
                                       " bytes exceeds the admin message limit");
  }
  uint8_t header[4];
  put_be32(header, static_cast<uint32_t>(body.size()));
  // One buffer, one send: a request never reaches the peer half-written.
  std::string frame(reinterpret_cast<const char*>(header), sizeof(header));
  frame += body;
  return send_all(fd, reinterpret_cast<const uint8_t*>(frame.data()), frame.size());
}

Result<nlohmann::json> recv_admin_message(int fd) {
  uint8_t header[4];
  if (Status status = recv_all(fd, header, sizeof(header), true); !status) return status;
  uint32_t length = get_be32(header);
  if (length > kMaxAdminMessageBytes) {
    return Status::error(EMSGSIZE, "message of " + std::to_string(length) +
                                       " bytes exceeds the admin message limit");
  }
  std::string body(length, '\0');
  Status status = recv_all(fd, reinterpret_cast<uint8_t*>(body.data()), length, false);
  if (!status) return status;
  nlohmann::json message;
  try {
    message = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& error) {
    return Status::error(EBADMSG, std::string("malformed JSON: ") + error.what());
  }
  if (!message.is_object()) return Status::error(EBADMSG, "message is not a JSON object");
  return message;
}

nlohmann::json error_reply(const Status& status) {
  KELPIE_ASSERT(!status.is_ok());
  std::string message = status.message().empty() ? std::strerror(status.code()) : status.message();
  return {{"ok", false}, {"errno", status.code()}, {"error", message}};
}

Result<HostPort> parse_host_port(std::string_view text) {
  auto bad = [&] {
    return Status::error(EINVAL,
                         "invalid address '" + std::string(text) + "' (expected HOST:PORT)");
  };
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) return bad();
  std::string_view host = text.substr(0, colon);
  std::string_view port_text = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad();
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return bad();  // a bare IPv6 address is ambiguous; it needs brackets
  }
  if (port_text.size() > 5) return bad();
  uint32_t port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9') return bad();
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port > 65535) return bad();
  return HostPort{std::string(host), static_cast<uint16_t>(port)};
}

}  // namespace kelpie
