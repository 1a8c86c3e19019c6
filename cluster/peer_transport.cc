#include "cluster/peer_transport.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "cluster/membership_codec.h"
#include "cluster/peer_reachability.h"
#include "cluster/peer_wire.h"
#include "common/log.h"
#include "engine/socket_stream.h"
#include "engine/sync.h"

namespace kelpie {

// The test-only fault hook (peer_transport.h): which peers to refuse, from a file
// re-read at most every kRecheck. Any reactor; the lock is taken only when set.
class PeerRefusal {
 public:
  explicit PeerRefusal(std::string file) : file_(std::move(file)) {}

  bool refuses(const Uuid& peer) {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    if (now - checked_ >= kRecheck) {
      checked_ = now;
      reload_locked();
    }
    return present_ && (all_ || std::binary_search(peers_.begin(), peers_.end(), peer));
  }

 private:
  static constexpr std::chrono::milliseconds kRecheck{100};

  void reload_locked() {
    std::ifstream in(file_);
    present_ = in.is_open();
    all_ = false;
    peers_.clear();
    if (!present_) return;
    std::vector<std::string> words{std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
    all_ = words.empty();
    for (const std::string& word : words) {
      if (word == "*") all_ = true;
      if (std::optional<Uuid> id = parse_uuid(word)) peers_.push_back(*id);
    }
    std::sort(peers_.begin(), peers_.end());
  }

  const std::string file_;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point checked_{};
  bool present_ = false;
  bool all_ = false;
  std::vector<Uuid> peers_;
};

namespace {

using Header = std::array<uint8_t, kPeerHeaderSize>;
using Fields = std::array<uint8_t, kMaxPeerFields>;

// How often a client connection looks for calls past their deadline (a call times
// out between its timeout and its timeout plus this).
constexpr std::chrono::milliseconds kSweepInterval{100};

Status malformed(const std::string& what) { return Status::error(EPROTO, "malformed peer frame: " + what); }

// The frames one connection sends during a reactor turn leave together: send()
// queues a frame, and the first sender of the turn schedules one flush after the
// turn's other ready work (after_ready), which writes every queued frame with one
// sendmsg (a few, past kMaxBatchFrames). Under load that is one system call and
// one wake-up of the peer per turn instead of one per frame. Flushes are
// serialized, so frames never interleave on the stream. The queue must outlive
// every send() in flight (each caller awaits its own).
class SendQueue {
 public:
  explicit SendQueue(SocketStream& stream) : stream_(stream) {}

  // Returns once the frame was handed to the kernel, or the write failed (then
  // every frame of that flush gets the error).
  Task<Status> send(PeerFrame& frame) {
    Item item{&frame};
    items_.push_back(&item);
    if (!scheduled_) {
      scheduled_ = true;
      spawn(flush());
    }
    co_await item.done.wait();
    co_return item.result;
  }

 private:
  static constexpr size_t kMaxBatchFrames = 64;  // 3 iovecs each, far below IOV_MAX
  struct Item {
    PeerFrame* frame;
    Status result;
    Event done;
  };

  Task<void> flush() {
    co_await after_ready();  // let this turn's other senders queue their frames
    AsyncMutex::Guard guard = co_await mutex_.lock();
    scheduled_ = false;  // a frame queued from now on schedules the next flush
    std::vector<Item*> batch;
    batch.swap(items_);
    std::vector<iovec> iov;
    for (size_t first = 0; first < batch.size(); first += kMaxBatchFrames) {
      size_t last = std::min(batch.size(), first + kMaxBatchFrames);
      iov.clear();
      for (size_t i = first; i < last; ++i) {
        std::span<iovec> parts = batch[i]->frame->iov();
        iov.insert(iov.end(), parts.begin(), parts.end());
      }
      Status st = co_await stream_.write_all(std::span<iovec>(iov));
      for (size_t i = first; i < last; ++i) {
        batch[i]->result = st;
        batch[i]->done.set();
      }
    }
  }

  SocketStream& stream_;
  std::vector<Item*> items_;
  bool scheduled_ = false;
  AsyncMutex mutex_;
};

// Reads the header and the fixed fields of the next frame; `fields_size` of them.
Task<Result<PeerFrameHeader>> read_head(SocketStream& stream, Header& head, Fields& fields, bool is_request,
                                        size_t& fields_size) {
  Status st = co_await stream.read_exact(head);
  if (!st) co_return st;
  auto header = decode_header(head);
  if (!header) co_return header.status();
  if (is_request) {
    fields_size = header->op == PeerOp::kHello && header->version != kPeerProtocolVersion
                      ? 0
                      : request_fields_size(header->op, header->flags);
  } else {
    if (header->version != kPeerProtocolVersion) co_return malformed("reply of another protocol version");
    fields_size = reply_fields_size(header->op, header->status);
  }
  if (header->payload_length < fields_size) co_return malformed("payload shorter than the op's fields");
  st = co_await stream.read_exact(std::span<uint8_t>(fields.data(), fields_size));
  if (!st) co_return st;
  co_return header;
}

// One accepted connection on its reactor: HELLO, then requests until it breaks.
class ServerConnection {
 public:
  ServerConnection(int fd, PeerHandler& handler, PeerRefusal* refusal)
      : stream_(fd), handler_(handler), sends_(stream_), refusal_(refusal) {}

  Task<void> run() {
    // Not `if (co_await ...)`: GCC 12 miscompiles a co_await in an if condition.
    bool accepted = co_await handshake();
    if (accepted) co_await serve();
    co_await in_flight_.wait();
  }

 private:
  // Reads one whole request frame (crc checked) into header, fields and tail.
  Task<Result<PeerFrameHeader>> read_frame(Fields& fields, size_t& fields_size, Buffer& tail) {
    Header head;
    auto header = co_await read_head(stream_, head, fields, true, fields_size);
    if (!header) co_return header;
    tail = Buffer::get(header->payload_length - fields_size);
    Status st = co_await stream_.read_exact(tail.span());
    if (!st) co_return st;
    if (frame_crc(head, std::span<const uint8_t>(fields.data(), fields_size), tail.span()) != header->crc) {
      co_return malformed("bad crc");
    }
    co_return header;
  }

  Task<bool> handshake() {
    Fields fields;
    size_t fields_size = 0;
    Buffer tail;
    auto header = co_await read_frame(fields, fields_size, tail);
    if (!header) {
      KELPIE_LOG_WARN("peer: closing a connection before its hello: {}", header.status().to_string());
      co_return false;
    }
    if (header->op != PeerOp::kHello) {
      KELPIE_LOG_WARN("peer: closing a connection that did not start with hello");
      co_return false;
    }
    auto hello = decode_hello(*header, std::span<const uint8_t>(fields.data(), fields_size));
    if (!hello) co_return false;
    peer_ = hello->sender;
    if (refused()) co_return false;
    Status verdict = handler_.accept_hello(*hello);
    if (verdict && hello->protocol_version != kPeerProtocolVersion) {
      verdict = Status::error(EPROTO, "peer protocol version " + std::to_string(hello->protocol_version) +
                                          " is not supported (this node speaks " +
                                          std::to_string(kPeerProtocolVersion) + ")");
    }
    PeerReply reply;
    if (!verdict) {
      reply.status = verdict.code();
      reply.message = verdict.message();
      KELPIE_LOG_WARN("peer: refused a hello: {}", verdict.message());
    }
    PeerFrame frame = encode_reply(PeerOp::kHello, header->request_id, reply);
    Status sent = co_await stream_.write_all(frame.iov());
    co_return verdict.is_ok() && sent.is_ok();
  }

  Task<void> serve() {
    while (!broken_) {
      while (in_flight_count_ >= kMaxPeerRequestsInFlight && !broken_) co_await capacity_freed_.wait();
      if (broken_) break;
      Fields fields;
      size_t fields_size = 0;
      Buffer tail;
      auto header = co_await read_frame(fields, fields_size, tail);
      if (!header) {
        if (header.status().code() == EPROTO) {
          KELPIE_LOG_WARN("peer: closing a connection: {}", header.status().message());
        }
        break;
      }
      auto request = decode_request(*header, std::span<const uint8_t>(fields.data(), fields_size), tail.span());
      if (!request) {
        KELPIE_LOG_WARN("peer: closing a connection: {}", request.status().message());
        break;
      }
      if (refused()) break;
      ++in_flight_count_;
      in_flight_.add();
      spawn(handle_one(std::move(*request), header->request_id, std::move(tail)));
    }
    ::shutdown(stream_.fd(), SHUT_RD);
  }

  // `payload` owns the bytes request.data points at.
  Task<void> handle_one(PeerRequest request, uint64_t request_id, Buffer payload) {
    PeerReply reply = co_await handler_.handle(request);
    PeerFrame frame = encode_reply(request.op, request_id, reply);
    if (!broken_) {
      Status sent = co_await sends_.send(frame);
      if (!sent && !broken_) {
        broken_ = true;
        ::shutdown(stream_.fd(), SHUT_RDWR);  // wake the reader so the connection ends
      }
    }
    (void)payload;
    --in_flight_count_;
    capacity_freed_.set();
    capacity_freed_.reset();
    in_flight_.done();
  }

  // The test-only fault hook says to drop this peer (peer_transport.h).
  bool refused() {
    if (refusal_ == nullptr || !refusal_->refuses(peer_)) return false;
    KELPIE_LOG_DEBUG("peer: refusing {} (test fault hook)", uuid_to_string(peer_));
    return true;
  }

  SocketStream stream_;
  PeerHandler& handler_;
  SendQueue sends_;
  PeerRefusal* refusal_;
  Uuid peer_{};
  WaitGroup in_flight_;
  uint32_t in_flight_count_ = 0;
  Event capacity_freed_;
  bool broken_ = false;
};

struct UuidHash {
  size_t operator()(const Uuid& u) const noexcept {
    uint64_t a, b;
    std::memcpy(&a, u.data(), 8);
    std::memcpy(&b, u.data() + 8, 8);
    return mix64(a ^ mix64(b));
  }
};

}  // namespace

// ---- PeerServer ----

PeerServer::PeerServer(std::string address, PeerHandler& handler, const ReactorPool& reactors)
    : address_(std::move(address)), handler_(handler), reactors_(reactors) {}

PeerServer::~PeerServer() {
  KELPIE_ASSERT(connections_.load() == 0 && !accepting_.load());
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    if (bound_.rfind("unix:", 0) == 0) ::unlink(bound_.c_str() + 5);
  }
}

void PeerServer::refuse_peers_while(const std::string& file) {
  KELPIE_ASSERT(!accepting_.load());
  refusal_ = std::make_shared<PeerRefusal>(file);
  KELPIE_LOG_WARN("peer: test fault hook on: peers named in {} are refused while it exists", file);
}

Status PeerServer::start() {
  auto address = parse_socket_address(address_);
  if (!address) return address.status();
  auto fd = listen_on(*address);
  if (!fd) return fd.status();
  listen_fd_ = *fd;
  bound_ = bound_address(listen_fd_);
  accepting_.store(true);
  spawn([](PeerServer* self) -> Task<void> {
    co_await switch_to(self->reactors_.at(0));
    co_await self->accept_loop();
  }(this));
  return Status::ok();
}

Task<void> PeerServer::accept_loop() {
  while (!stopping_.load()) {
    int fd = co_await async_accept(listen_fd_);
    if (fd < 0) {
      if (stopping_.load()) break;
      if (fd == -EMFILE || fd == -ENFILE) {
        KELPIE_LOG_ERROR("peer: accept: {}", std::strerror(-fd));
        co_await sleep_for(std::chrono::milliseconds(10));
      }
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // fails harmlessly on Unix sockets
    {
      std::lock_guard lock(fds_mutex_);
      if (stopping_.load()) {
        ::close(fd);
        break;
      }
      open_fds_.insert(fd);
    }
    connections_.fetch_add(1);
    spawn(run_connection(reactors_.at(next_reactor_++ % reactors_.size()), fd));
  }
  accepting_.store(false);
}

Task<void> PeerServer::run_connection(Reactor& reactor, int fd) {
  co_await switch_to(reactor);
  {
    ServerConnection connection(fd, handler_, refusal_.get());
    co_await connection.run();
  }
  {
    std::lock_guard lock(fds_mutex_);
    open_fds_.erase(fd);
    ::close(fd);
  }
  connections_.fetch_sub(1);
}

void PeerServer::stop() {
  KELPIE_ASSERT(Reactor::current() == nullptr);
  {
    std::lock_guard lock(fds_mutex_);
    stopping_.store(true);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((connections_.load() > 0 || accepting_.load()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// ---- PeerClient ----

struct PeerClient::Local {
  std::unordered_map<Uuid, std::shared_ptr<Connection>, UuidHash> connections;
};

// One client connection, used only on the reactor that opened it.
class PeerClient::Connection {
 public:
  // A call waiting for its reply. Lives in the caller's frame; never completed
  // while its bytes are being sent or received (the memory is the caller's).
  struct Pending {
    uint64_t id = 0;
    PeerOp op = PeerOp::kRead;
    uint64_t read_length = 0;
    std::span<uint8_t> read_into;
    bool sending = false;
    bool receiving = false;
    bool finished = false;
    bool timed_out = false;
    std::chrono::steady_clock::time_point deadline;
    std::optional<Result<PeerReply>> result;
    Event done;
  };

  Connection(PeerClient& client, Local& local, const Uuid& node, std::string address)
      : client_(client), local_(local), node_(node), address_(std::move(address)),
        prefix_("peer " + uuid_to_string(node) + " at " + address_ + ": ") {
    client_.live_connections_.fetch_add(1);
  }
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
    client_.live_connections_.fetch_sub(1);
  }

  const std::string& address() const { return address_; }
  bool opened() const { return opened_.is_set(); }
  Event::Awaiter wait_opened() { return opened_.wait(); }
  const Status& open_status() const { return open_status_; }

  Task<void> open(std::shared_ptr<Connection> self);
  Task<Result<PeerReply>> call(std::shared_ptr<Connection> self, const PeerRequest& request,
                               std::span<uint8_t> read_into);
  // Breaks the connection: every call not mid-transfer fails now, the others as
  // soon as their transfer stops. Idempotent.
  void fail(const Status& status);

 private:
  Task<Result<PeerReply>> exchange(std::shared_ptr<Connection> self, Pending& p, PeerFrame& frame,
                                   std::chrono::nanoseconds timeout);
  // Times out overdue calls, every kSweepInterval while the connection lives: one
  // timer per connection instead of one armed and cancelled per call.
  Task<void> sweep(std::shared_ptr<Connection> self);
  Task<void> read_loop(std::shared_ptr<Connection> self);
  Task<Status> read_reply(Pending* p, const Header& head, const PeerFrameHeader& header, Fields& fields,
                          size_t fields_size);
  void complete(Pending& p, Result<PeerReply> result);
  Status named(const Status& st) const { return Status::error(st.code(), prefix_ + st.message()); }

  PeerClient& client_;
  Local& local_;
  Uuid node_;
  std::string address_;
  std::string prefix_;
  int fd_ = -1;
  std::optional<SocketStream> stream_;
  std::optional<SendQueue> sends_;
  Event opened_;
  Status open_status_;
  bool broken_ = false;
  Status broken_status_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Pending*> pending_;
};

Task<void> PeerClient::Connection::open(std::shared_ptr<Connection> self) {
  auto address = parse_socket_address(address_);
  Status st;
  if (!address) {
    st = named(address.status());
  } else {
    fd_ = ::socket(address->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) st = named(Status::error(errno, "socket"));
  }
  if (st) {
    int rc = co_await async_connect(fd_, address->get(), address->length, client_.options_.connect_timeout);
    if (rc < 0) st = named(Status::error(-rc, std::string("connect: ") + std::strerror(-rc)));
  }
  if (st && broken_) st = broken_status_;  // dropped while connecting
  if (st) {
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    stream_.emplace(fd_);
    sends_.emplace(*stream_);
    spawn(read_loop(self));
    spawn(sweep(self));
    PeerHello hello{kPeerProtocolVersion, client_.cluster(), client_.self_, node_};
    Pending p;
    p.id = next_id_++;
    p.op = PeerOp::kHello;
    PeerFrame frame = encode_hello(hello, p.id);
    auto reply = co_await exchange(self, p, frame, client_.options_.connect_timeout);
    if (!reply) {
      st = reply.status();
    } else if (reply->status != 0) {
      st = Status::error(reply->status, prefix_ + "hello refused: " + reply->message);
    }
  }
  open_status_ = st;
  if (!st) fail(st);
  opened_.set();
}

Task<Result<PeerReply>> PeerClient::Connection::call(std::shared_ptr<Connection> self, const PeerRequest& request,
                                                     std::span<uint8_t> read_into) {
  Pending p;
  p.id = next_id_++;
  p.op = request.op;
  p.read_length = request.op == PeerOp::kRead ? request.length : 0;
  p.read_into = read_into;
  PeerFrame frame = encode_request(request, p.id);
  co_return co_await exchange(std::move(self), p, frame, client_.options_.call_timeout);
}

Task<Result<PeerReply>> PeerClient::Connection::exchange(std::shared_ptr<Connection> self, Pending& p,
                                                         PeerFrame& frame, std::chrono::nanoseconds timeout) {
  if (broken_) co_return broken_status_;
  p.deadline = std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
  pending_.emplace(p.id, &p);
  p.sending = true;
  Status sent = co_await sends_->send(frame);
  if (!sent && !broken_) fail(named(sent));
  p.sending = false;
  if (broken_ && !p.finished) complete(p, broken_status_);
  co_await p.done.wait();
  if (!*p.result && p.timed_out) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
    co_return Status::error(ETIMEDOUT, prefix_ + "no reply within " + std::to_string(ms) + " ms");
  }
  (void)self;
  co_return std::move(*p.result);
}

Task<void> PeerClient::Connection::sweep(std::shared_ptr<Connection> self) {
  while (!broken_) {
    co_await sleep_for(kSweepInterval);
    auto now = std::chrono::steady_clock::now();
    std::vector<Pending*> overdue;
    for (auto& [id, p] : pending_) {
      if (!p->finished && now >= p->deadline) overdue.push_back(p);
    }
    for (Pending* p : overdue) {
      if (p->finished) continue;
      p->timed_out = true;
      if (p->sending || p->receiving) {
        // Its bytes are on the move and the caller's memory is in use: end the
        // transfer by breaking the connection; the call fails when it stops.
        fail(named(Status::error(ETIMEDOUT, "timed out mid-transfer")));
      } else {
        complete(*p, Status::error(ETIMEDOUT, "timed out"));
      }
    }
  }
  (void)self;
}

void PeerClient::Connection::complete(Pending& p, Result<PeerReply> result) {
  if (p.finished) return;
  p.finished = true;
  p.result.emplace(std::move(result));
  pending_.erase(p.id);
  p.done.set();
}

void PeerClient::Connection::fail(const Status& status) {
  if (!broken_) {
    broken_ = true;
    broken_status_ = status;
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    auto it = local_.connections.find(node_);
    if (it != local_.connections.end() && it->second.get() == this) local_.connections.erase(it);
  }
  std::vector<Pending*> idle;
  for (auto& [id, p] : pending_) {
    if (!p->sending && !p->receiving) idle.push_back(p);
  }
  for (Pending* p : idle) complete(*p, broken_status_);
}

Task<void> PeerClient::Connection::read_loop(std::shared_ptr<Connection> self) {
  Status st;
  while (true) {
    Header head;
    Fields fields;
    size_t fields_size = 0;
    auto header = co_await read_head(*stream_, head, fields, false, fields_size);
    if (!header) {
      st = header.status();
      break;
    }
    auto it = pending_.find(header->request_id);
    Pending* p = it == pending_.end() ? nullptr : it->second;
    st = co_await read_reply(p, head, *header, fields, fields_size);
    if (!st) break;
  }
  fail(named(st));
  (void)self;
}

// Receives the tail of one reply and completes its call. `p` is null for a call
// that already ended (timed out): the reply is skipped.
Task<Status> PeerClient::Connection::read_reply(Pending* p, const Header& head, const PeerFrameHeader& header,
                                                Fields& fields, size_t fields_size) {
  size_t tail_size = header.payload_length - fields_size;
  if (p == nullptr) co_return co_await stream_->discard(tail_size);
  if (p->op != header.op) co_return malformed("reply op does not match its request");
  bool direct = p->op == PeerOp::kRead && header.status == 0 && !p->read_into.empty();
  if (p->op == PeerOp::kRead && header.status == 0 && tail_size != p->read_length) {
    co_return malformed("read reply of the wrong length");
  }
  Buffer tail;
  std::span<uint8_t> destination = direct ? p->read_into : std::span<uint8_t>();
  if (!direct) {
    tail = Buffer::get(tail_size);
    destination = tail.span();
  }
  p->receiving = true;
  Status st = co_await stream_->read_exact(destination);
  p->receiving = false;
  if (!st) co_return st;
  auto field_span = std::span<const uint8_t>(fields.data(), fields_size);
  if (frame_crc(head, field_span, destination) != header.crc) co_return malformed("bad crc");
  auto reply = decode_reply(header, field_span, std::move(tail));
  if (!reply) co_return reply.status();
  complete(*p, std::move(reply));
  co_return Status::ok();
}

PeerClient::PeerClient(const ReactorPool& reactors, const Uuid& cluster, const Uuid& self, PeerClientOptions options)
    : reactors_(reactors), self_(self), options_(options), cluster_(cluster) {
  for (size_t i = 0; i < reactors_.size(); ++i) locals_.push_back(std::make_unique<Local>());
}

PeerClient::~PeerClient() { KELPIE_ASSERT(live_connections_.load() == 0 && pending_hops_.load() == 0); }

void PeerClient::set_cluster(const Uuid& cluster) {
  std::lock_guard lock(cluster_mutex_);
  cluster_ = cluster;
}

Uuid PeerClient::cluster() {
  std::lock_guard lock(cluster_mutex_);
  return cluster_;
}

PeerClient::Local& PeerClient::local() {
  Reactor* here = Reactor::current();
  for (size_t i = 0; i < reactors_.size(); ++i) {
    if (&reactors_.at(i) == here) return *locals_[i];
  }
  KELPIE_ASSERT(false && "PeerClient used off its reactor pool");
  return *locals_[0];
}

Task<Result<std::shared_ptr<PeerClient::Connection>>> PeerClient::connection_to(const Uuid& node,
                                                                                 const std::string& address) {
  Local& l = local();
  auto it = l.connections.find(node);
  if (it != l.connections.end() && it->second->address() != address) {
    it->second->fail(Status::error(ECONNABORTED, "peer " + uuid_to_string(node) + " moved to " + address));
    it = l.connections.find(node);
  }
  std::shared_ptr<Connection> connection;
  if (it != l.connections.end()) {
    connection = it->second;
  } else {
    connection = std::make_shared<Connection>(*this, l, node, address);
    l.connections.emplace(node, connection);
    spawn(connection->open(connection));
  }
  if (!connection->opened()) co_await connection->wait_opened();
  if (!connection->open_status()) co_return connection->open_status();
  co_return connection;
}

Task<Result<PeerReply>> PeerClient::call(const Uuid& node, const std::string& address, const PeerRequest& request,
                                         std::span<uint8_t> read_into) {
  KELPIE_ASSERT(read_into.empty() || (request.op == PeerOp::kRead && read_into.size() == request.length));
  // The peer's name is formatted only for an error: not on every call.
  auto peer = [&] { return "peer " + uuid_to_string(node) + " at " + address + ": "; };
  if (request.op == PeerOp::kHello) co_return Status::error(EINVAL, peer() + "hello is sent by the transport");
  if ((request.op == PeerOp::kRead && request.length > kMaxPeerPayload) ||
      request.data.size() > kMaxPeerPayload - kMaxPeerFields) {
    co_return Status::error(E2BIG, peer() + "request over the peer frame limit");
  }
  // The peer answers in tens of microseconds, but only with CPU this reactor's
  // poll would take on a small host: sleep instead (engine/reactor.h).
  PollHold no_poll;
  auto connection = co_await connection_to(node, address);
  if (!connection) {
    note_outcome(node, connection.status());
    co_return connection.status();
  }
  Result<PeerReply> reply = co_await (*connection)->call(*connection, request, read_into);
  note_outcome(node, reply ? Status::ok() : reply.status());
  co_return reply;
}

void PeerClient::note_outcome(const Uuid& node, const Status& status) {
  PeerReachability* reachability = options_.reachability;
  if (reachability == nullptr) return;
  if (status) {
    reachability->note_success(node);
  } else if (status.code() != ECONNABORTED && status.code() != ESHUTDOWN) {
    // Not drop() or close_all(): those are this node's own doing, not the peer's.
    reachability->note_failure(node, status.to_string());
  }
}

void PeerClient::drop(const Uuid& node) {
  for (size_t i = 0; i < reactors_.size(); ++i) {
    pending_hops_.fetch_add(1);
    spawn([](PeerClient* self, size_t index, Uuid id) -> Task<void> {
      co_await switch_to(self->reactors_.at(index));
      Local& l = *self->locals_[index];
      auto it = l.connections.find(id);
      if (it != l.connections.end()) {
        it->second->fail(Status::error(ECONNABORTED, "peer " + uuid_to_string(id) + ": connection dropped"));
      }
      self->pending_hops_.fetch_sub(1);
    }(this, i, node));
  }
}

void PeerClient::close_all() {
  KELPIE_ASSERT(Reactor::current() == nullptr);
  for (size_t i = 0; i < reactors_.size(); ++i) {
    reactors_.at(i).block_on([](Local& l) -> Task<void> {
      std::vector<std::shared_ptr<Connection>> all;
      for (auto& [node, connection] : l.connections) all.push_back(connection);
      for (auto& connection : all) connection->fail(Status::error(ESHUTDOWN, "peer client closed"));
      co_return;
    }(*locals_[i]));
  }
  // Readers and calls let go of their connections once their I/O has stopped.
  auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout + std::chrono::seconds(5);
  while ((live_connections_.load() > 0 || pending_hops_.load() > 0) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace kelpie
