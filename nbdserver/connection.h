// Connection: one NBD client, from handshake to disconnect, on one reactor.
//
// Contract:
//  - run() owns the socket: it negotiates (fixed newstyle), serves requests until
//    the client disconnects or misbehaves, waits for its requests in flight, and
//    closes the fd. It never ends the process.
//  - Requests are validated once, here, at the edge (wire.h); replies leave in
//    completion order, one at a time on the socket.
//  - Once the export is chosen the connection moves to the reactor that owns the
//    export's objects, so its requests run there without crossing threads.
//  - Memory is bounded: at most kMaxInFlightRequests / kMaxInFlightBytes per
//    connection; beyond that the connection stops reading the socket.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "engine/reactor_pool.h"
#include "engine/sync.h"
#include "engine/vdi.h"
#include "engine/socket_stream.h"
#include "nbdserver/wire.h"

namespace kelpie {
class VdiDirectory;
}

namespace kelpie::nbd {

class Connection {
 public:
  Connection(int fd, VdiDirectory& directory, const ReactorPool& reactors);
  Task<void> run();

 private:
  enum class Next { kNegotiate, kTransmit, kClose };

  // Handshake (handshake.cc).
  Task<Next> negotiate();
  Task<Next> handle_option(uint32_t option, std::span<const uint8_t> data);
  Task<Next> handle_info(uint32_t option, std::span<const uint8_t> data);
  Task<Next> handle_meta_context(uint32_t option, std::span<const uint8_t> data);
  Task<Next> handle_export_name(std::span<const uint8_t> data);
  Task<Status> send_option_reply(uint32_t option, uint32_t type, std::span<const uint8_t> data);
  Task<Status> send_option_error(uint32_t option, uint32_t type, const std::string& message);
  uint16_t transmission_flags() const;
  // Finds the export and admits it through the directory's attach policy; on refusal
  // `refusal` says why (the client gets it with NBD_REP_ERR_POLICY).
  Task<bool> attach(const std::string& name, std::string* refusal);
  // Before an export lookup: the attach policy's sync (read-your-writes across a
  // cluster). nullopt when the lookup may proceed. On failure the client gets
  // NBD_REP_ERR_UNKNOWN with the reason (EXPORT_NAME has no error reply: the
  // connection closes), and the result says how negotiation goes on.
  Task<std::optional<Next>> sync_directory(uint32_t option);

  // Transmission (transmission.cc).
  Task<void> serve();
  Task<void> handle_request(Request request, Buffer payload);
  Task<Status> execute(const Request& request, Buffer& payload, Buffer& read_data);
  Task<void> send_reply(const Request& request, uint32_t error, Buffer& read_data);
  Task<void> send_block_status(const Request& request);

  SocketStream stream_;
  VdiDirectory& directory_;
  const ReactorPool& reactors_;
  std::shared_ptr<Vdi> vdi_;
  std::string attached_name_;  // admitted by the attach policy (detached at the end)
  ExportState state_;
  bool no_zeroes_ = false;
  bool broken_ = false;  // a send failed: stop reading, let in-flight requests drain

  AsyncMutex send_mutex_;
  WaitGroup in_flight_;
  uint32_t in_flight_requests_ = 0;
  uint64_t in_flight_bytes_ = 0;
  Event capacity_freed_;
};

}  // namespace kelpie::nbd
