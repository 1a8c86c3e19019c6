// The peer protocol: frame coding (peer_wire.h) and the transport (PeerServer,
// PeerClient) over real Unix sockets and TCP on 127.0.0.1.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "cluster/peer_transport.h"
#include "cluster/peer_wire.h"
#include "common/bytes.h"
#include "engine/sync.h"

namespace kelpie {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kServerEpoch = 7;
constexpr uint64_t kDelayedOffset = 1 << 20;  // reads here wait 300 ms
constexpr uint64_t kSlowOffset = 2 << 20;     // reads here wait 2 s

Uuid uuid_of(uint8_t b) {
  Uuid u{};
  u.fill(b);
  return u;
}

uint8_t pattern(uint64_t offset, size_t i) { return static_cast<uint8_t>((offset + i) * 31 + 7); }

// A replica-like handler: checks hellos, fences epochs, serves every op.
class TestHandler : public PeerHandler {
 public:
  TestHandler(Uuid cluster, Uuid node) : cluster_(cluster), node_(node) {}

  Status accept_hello(const PeerHello& hello) override {
    if (hello.protocol_version != kPeerProtocolVersion) return Status::error(EPROTO, "speak version 1 please");
    if (hello.cluster != cluster_) return Status::error(EINVAL, "wrong cluster " + uuid_to_string(hello.cluster));
    if (hello.expected_receiver != node_) return Status::error(EINVAL, "this is not node " + uuid_to_string(hello.expected_receiver));
    return Status::ok();
  }

  Task<PeerReply> handle(const PeerRequest& r) override {
    PeerReply reply;
    reply.epoch = kServerEpoch;
    handled_.fetch_add(1);
    if (r.op != PeerOp::kAdmin && r.epoch != kServerEpoch) {
      reply.status = kEpochMismatch;
      co_return reply;
    }
    switch (r.op) {
      case PeerOp::kRead:
        if (r.offset == kDelayedOffset) co_await sleep_for(300ms);
        if (r.offset == kSlowOffset) co_await sleep_for(2s);
        reply.data = Buffer::get(r.length);
        for (size_t i = 0; i < r.length; ++i) reply.data.data()[i] = pattern(r.offset, i);
        break;
      case PeerOp::kWrite: {
        std::lock_guard lock(mutex_);
        objects_[r.id.to_hex()] = std::vector<uint8_t>(r.data.begin(), r.data.end());
        versions_[r.id.to_hex()] = r.version;
        last_flags_ = r.flags;
        last_object_size_ = r.object_size;
        break;
      }
      case PeerOp::kCreateFrom: {
        std::lock_guard lock(mutex_);
        if (!objects_.count(r.src.to_hex())) {
          reply.status = ENOENT;
          reply.message = "no source " + r.src.to_hex();
        }
        break;
      }
      case PeerOp::kZero:
      case PeerOp::kRemove:
      case PeerOp::kSync:
      case PeerOp::kHold:
        break;
      case PeerOp::kListObjects:
        reply.objects = {{ObjectId::data(3, 1, 9), {4, 5}, 1u << 22}, {ObjectId::inode(1, 1), {0, 0}, 1u << 20}};
        break;
      case PeerOp::kFetchObject:
      case PeerOp::kObjectVersion: {
        std::lock_guard lock(mutex_);
        auto it = objects_.find(r.id.to_hex());
        if (it == objects_.end()) {
          reply.status = ENOENT;
          reply.message = "no object " + r.id.to_hex();
          break;
        }
        reply.version = versions_[r.id.to_hex()];
        reply.object_size = static_cast<uint32_t>(it->second.size());
        if (r.op == PeerOp::kFetchObject) {
          reply.data = Buffer::get(it->second.size());
          std::memcpy(reply.data.data(), it->second.data(), it->second.size());
        }
        break;
      }
      case PeerOp::kAdmin: {
        std::string text = "{\"echo\":" + std::string(r.data.begin(), r.data.end()) + "}";
        reply.data = Buffer::get(text.size());
        std::memcpy(reply.data.data(), text.data(), text.size());
        break;
      }
      case PeerOp::kHello:
        reply.status = EINVAL;
        break;
    }
    co_return reply;
  }

  std::atomic<int> handled_{0};
  uint32_t last_flags_ = 0;
  uint32_t last_object_size_ = 0;

 private:
  Uuid cluster_;
  Uuid node_;
  std::mutex mutex_;
  std::map<std::string, std::vector<uint8_t>> objects_;
  std::map<std::string, ObjectVersion> versions_;
};

// Polls `condition` until it holds or `limit` passes.
template <typename F>
bool eventually(F condition, std::chrono::milliseconds limit = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// ---- peer_wire ----

PeerRequest sample_request(PeerOp op) {
  PeerRequest r;
  r.op = op;
  r.epoch = 42;
  r.id = ObjectId::data(5, 2, 77);
  r.src = ObjectId::data(2, 2, 77);
  r.offset = 8192;
  r.length = 4096;
  r.object_size = 1u << 22;
  r.flags = kPeerFlagFua | kPeerFlagCreate;
  r.version = {11, 12};
  return r;
}

TEST(PeerWire, EveryRequestRoundTrips) {
  static const uint8_t payload[] = {1, 2, 3, 4, 5};
  for (uint16_t op = 2; op <= static_cast<uint16_t>(PeerOp::kAdmin); ++op) {
    PeerRequest r = sample_request(static_cast<PeerOp>(op));
    if (r.op == PeerOp::kWrite || r.op == PeerOp::kAdmin) r.data = payload;
    PeerFrame frame = encode_request(r, 99);
    std::vector<uint8_t> bytes = flatten(frame);
    auto decoded = decode_request_frame(bytes);
    ASSERT_TRUE(decoded) << op << ": " << decoded.status().message();
    EXPECT_EQ(decoded->header.request_id, 99u);
    const PeerRequest& d = decoded->request;
    EXPECT_EQ(d.op, r.op);
    EXPECT_EQ(d.epoch, 42u);
    EXPECT_EQ(d.flags, r.flags);
    EXPECT_EQ(std::vector<uint8_t>(d.data.begin(), d.data.end()), std::vector<uint8_t>(r.data.begin(), r.data.end()));
    if (r.op != PeerOp::kSync && r.op != PeerOp::kListObjects && r.op != PeerOp::kAdmin) {
      EXPECT_EQ(d.id, r.id);
    }
    if (r.op == PeerOp::kRead || r.op == PeerOp::kZero) {
      EXPECT_EQ(d.length, 4096u);
    }
    if (r.op == PeerOp::kRead || r.op == PeerOp::kWrite || r.op == PeerOp::kZero) {
      EXPECT_EQ(d.offset, 8192u);
    }
    if (r.op == PeerOp::kWrite) {
      EXPECT_EQ(d.object_size, 1u << 22);
    }
    if (r.op == PeerOp::kCreateFrom) {
      EXPECT_EQ(d.src, r.src);
    }
    if (r.op == PeerOp::kWrite || r.op == PeerOp::kZero || r.op == PeerOp::kCreateFrom || r.op == PeerOp::kRemove) {
      EXPECT_EQ(d.version, (ObjectVersion{11, 12}));
    }
  }
}

TEST(PeerWire, HelloRoundTripsAndOtherVersionsKeepOnlyTheVersion) {
  PeerHello hello{kPeerProtocolVersion, uuid_of(1), uuid_of(2), uuid_of(3)};
  PeerFrame frame = encode_hello(hello, 1);
  auto bytes = flatten(frame);
  auto decoded = decode_request_frame(bytes);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->header.op, PeerOp::kHello);
  EXPECT_EQ(decoded->hello.cluster, uuid_of(1));
  EXPECT_EQ(decoded->hello.sender, uuid_of(2));
  EXPECT_EQ(decoded->hello.expected_receiver, uuid_of(3));
  hello.protocol_version = 9;
  PeerFrame future = encode_hello(hello, 1);
  auto future_bytes = flatten(future);
  auto decoded_future = decode_request_frame(future_bytes);
  ASSERT_TRUE(decoded_future);
  EXPECT_EQ(decoded_future->hello.protocol_version, 9);
}

TEST(PeerWire, EveryReplyRoundTrips) {
  PeerReply reply;
  reply.epoch = 3;
  reply.version = {8, 9};
  reply.object_size = 4096;
  reply.data = Buffer::get(3);
  std::memcpy(reply.data.data(), "abc", 3);
  reply.objects = {{ObjectId::data(1, 1, 2), {3, 4}, 1u << 20}, {ObjectId::map(6, 1, 0), {5, 6}, 1u << 22}};
  for (PeerOp op : {PeerOp::kRead, PeerOp::kFetchObject, PeerOp::kAdmin}) {
    PeerFrame f = encode_reply(op, 5, reply);
    auto bytes = flatten(f);
    auto d = decode_reply_frame(bytes);
    ASSERT_TRUE(d) << d.status().message();
    EXPECT_EQ(std::string(reinterpret_cast<char*>(d->data.data()), d->data.size()), "abc");
    EXPECT_EQ(d->epoch, 3u);
    if (op == PeerOp::kFetchObject) {
      EXPECT_EQ(d->version, (ObjectVersion{8, 9}));
      EXPECT_EQ(d->object_size, 4096u);
    }
  }
  PeerFrame list = encode_reply(PeerOp::kListObjects, 5, reply);
  auto list_bytes = flatten(list);
  auto listed = decode_reply_frame(list_bytes);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->objects.size(), 2u);
  EXPECT_EQ(listed->objects[1].id, ObjectId::map(6, 1, 0));
  EXPECT_EQ(listed->objects[1].version, (ObjectVersion{5, 6}));
  EXPECT_EQ(listed->objects[1].object_size, 1u << 22);
  PeerFrame version = encode_reply(PeerOp::kObjectVersion, 5, reply);
  auto version_bytes = flatten(version);
  auto v = decode_reply_frame(version_bytes);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->version, (ObjectVersion{8, 9}));
  EXPECT_EQ(v->data.size(), 0u);

  PeerReply error;
  error.status = kEpochMismatch;
  error.epoch = 12;
  error.message = "at epoch 12";
  PeerFrame e = encode_reply(PeerOp::kWrite, 6, error);
  auto error_bytes = flatten(e);
  auto d = decode_reply_frame(error_bytes);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, kEpochMismatch);
  EXPECT_EQ(d->epoch, 12u);
  EXPECT_EQ(d->message, "at epoch 12");
}

TEST(PeerWire, TruncatedFramesAreRejected) {
  static const uint8_t payload[100] = {};
  PeerRequest r = sample_request(PeerOp::kWrite);
  r.data = payload;
  PeerFrame frame = encode_request(r, 1);
  auto bytes = flatten(frame);
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto d = decode_request_frame(std::span<const uint8_t>(bytes.data(), n));
    ASSERT_FALSE(d) << n;
    EXPECT_EQ(d.status().code(), EPROTO);
  }
  PeerReply reply;
  reply.objects = {{ObjectId::data(1, 1, 2), {3, 4}, 1u << 20}};
  PeerFrame list = encode_reply(PeerOp::kListObjects, 5, reply);
  auto list_bytes = flatten(list);
  for (size_t n = 0; n < list_bytes.size(); ++n) {
    EXPECT_FALSE(decode_reply_frame(std::span<const uint8_t>(list_bytes.data(), n))) << n;
  }
}

// Rewrites header field bytes and fixes the crc, so only the tested check fails.
void patch(std::vector<uint8_t>& bytes, size_t offset, uint32_t value, bool fix_crc = true) {
  put_be32(bytes.data() + offset, value);
  if (!fix_crc) return;
  auto head = std::span<const uint8_t, kPeerHeaderSize>(bytes.data(), kPeerHeaderSize);
  auto rest = std::span<const uint8_t>(bytes).subspan(kPeerHeaderSize);
  put_be32(bytes.data() + 36, frame_crc(head, {}, rest));
}

TEST(PeerWire, BadFramesAreRejected) {
  PeerRequest r = sample_request(PeerOp::kRead);
  PeerFrame frame = encode_request(r, 1);
  const auto good = flatten(frame);
  ASSERT_TRUE(decode_request_frame(good));

  auto bad_magic = good;
  bad_magic[0] = 'X';
  EXPECT_EQ(decode_request_frame(bad_magic).status().code(), EPROTO);

  auto bad_crc = good;
  bad_crc.back() ^= 1;
  EXPECT_EQ(decode_request_frame(bad_crc).status().message(), "malformed peer frame: bad crc");

  auto oversize = good;
  patch(oversize, 32, kMaxPeerPayload + 1);
  EXPECT_EQ(decode_header(std::span<const uint8_t, kPeerHeaderSize>(oversize.data(), kPeerHeaderSize)).status().code(),
            EPROTO);

  auto wrong_version = good;
  put_be16(wrong_version.data() + 4, kPeerProtocolVersion + 1);
  EXPECT_EQ(decode_request_frame(wrong_version).status().code(), EPROTO);

  auto unknown_op = good;
  put_be16(unknown_op.data() + 6, 77);
  EXPECT_EQ(decode_request_frame(unknown_op).status().code(), EPROTO);

  // A read longer than any reply could carry.
  PeerRequest huge = sample_request(PeerOp::kRead);
  huge.length = uint64_t{kMaxPeerPayload} + 1;
  PeerFrame huge_frame = encode_request(huge, 1);
  EXPECT_EQ(decode_request_frame(flatten(huge_frame)).status().code(), EPROTO);

  // A list whose count does not match its bytes.
  PeerReply reply;
  reply.objects = {{ObjectId::data(1, 1, 2), {3, 4}, 1u << 20}};
  PeerFrame list = encode_reply(PeerOp::kListObjects, 5, reply);
  auto list_bytes = flatten(list);
  put_be32(list_bytes.data() + kPeerHeaderSize, 2);
  auto head = std::span<const uint8_t, kPeerHeaderSize>(list_bytes.data(), kPeerHeaderSize);
  put_be32(list_bytes.data() + 36, frame_crc(head, {}, std::span<const uint8_t>(list_bytes).subspan(kPeerHeaderSize)));
  EXPECT_EQ(decode_reply_frame(list_bytes).status().code(), EPROTO);

  // Stray bytes after a request that has no payload.
  auto trailing = good;
  trailing.push_back(0);
  patch(trailing, 32, static_cast<uint32_t>(trailing.size() - kPeerHeaderSize));
  EXPECT_EQ(decode_request_frame(trailing).status().code(), EPROTO);
}

// ---- the transport ----

PeerRequest request(PeerOp op) {
  PeerRequest r;
  r.op = op;
  r.epoch = kServerEpoch;
  r.id = ObjectId::data(4, 4, 1);
  return r;
}

class PeerTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kelpie-peer-" + std::to_string(::getpid()) + "-" +
                                                    std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    std::vector<Reactor*> raw;
    for (unsigned i = 0; i < 2; ++i) {
      reactors_.push_back(std::make_unique<Reactor>(i, 256));
      raw.push_back(reactors_.back().get());
      Reactor* r = raw.back();
      threads_.emplace_back([r] { r->run(); });
    }
    pool_ = std::make_unique<ReactorPool>(raw);
  }
  void TearDown() override {
    for (auto& client : clients_) client->close_all();
    for (auto& server : servers_) server->stop();
    clients_.clear();
    servers_.clear();
    for (auto& r : reactors_) r->stop();
    for (auto& t : threads_) t.join();
    std::filesystem::remove_all(dir_);
  }

  std::string unix_address(const std::string& name = "peer.sock") { return "unix:" + (dir_ / name).string(); }

  PeerServer& start_server(const std::string& address) {
    servers_.push_back(std::make_unique<PeerServer>(address, handler_, *pool_));
    Status st = servers_.back()->start();
    EXPECT_TRUE(st) << st.to_string();
    return *servers_.back();
  }
  PeerClient& make_client(Uuid cluster, PeerClientOptions options = {}) {
    clients_.push_back(std::make_unique<PeerClient>(*pool_, cluster, uuid_of(0xc1), options));
    return *clients_.back();
  }

  Result<PeerReply> call(PeerClient& client, const std::string& address, const PeerRequest& request,
                         std::span<uint8_t> read_into = {}, unsigned reactor = 0, Uuid node = uuid_of(0xaa)) {
    return pool_->at(reactor).block_on(client.call(node, address, request, read_into));
  }

  void every_op_round_trips(const std::string& address);

  static inline int counter_ = 0;
  const Uuid cluster_ = uuid_of(0x11);
  const Uuid node_ = uuid_of(0xaa);
  TestHandler handler_{cluster_, node_};
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<Reactor>> reactors_;
  std::vector<std::thread> threads_;
  std::unique_ptr<ReactorPool> pool_;
  std::vector<std::unique_ptr<PeerServer>> servers_;
  std::vector<std::unique_ptr<PeerClient>> clients_;
};

void PeerTransportTest::every_op_round_trips(const std::string& address) {
  PeerClient& client = make_client(cluster_);

  std::vector<uint8_t> payload(100000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
  PeerRequest write = request(PeerOp::kWrite);
  write.data = payload;
  write.flags = kPeerFlagFua;
  write.object_size = 1u << 22;
  write.version = {3, 4};
  auto written = call(client, address, write);
  ASSERT_TRUE(written) << written.status().to_string();
  EXPECT_EQ(written->status, 0);
  EXPECT_EQ(handler_.last_flags_, kPeerFlagFua);
  EXPECT_EQ(handler_.last_object_size_, 1u << 22);

  PeerRequest read = request(PeerOp::kRead);
  read.offset = 5;
  read.length = 70000;
  auto copied = call(client, address, read);
  ASSERT_TRUE(copied);
  ASSERT_EQ(copied->data.size(), 70000u);
  EXPECT_EQ(copied->data.data()[69999], pattern(5, 69999));
  std::vector<uint8_t> into(70000);
  auto direct = call(client, address, read, into, 1);
  ASSERT_TRUE(direct);
  EXPECT_EQ(direct->data.size(), 0u);
  EXPECT_EQ(0, std::memcmp(into.data(), copied->data.data(), into.size()));

  auto fetched = call(client, address, request(PeerOp::kFetchObject));
  ASSERT_TRUE(fetched);
  EXPECT_EQ(fetched->version, (ObjectVersion{3, 4}));
  EXPECT_EQ(std::vector<uint8_t>(fetched->data.data(), fetched->data.data() + fetched->data.size()), payload);

  auto version = call(client, address, request(PeerOp::kObjectVersion));
  ASSERT_TRUE(version);
  EXPECT_EQ(version->object_size, payload.size());

  PeerRequest missing = request(PeerOp::kObjectVersion);
  missing.id = ObjectId::data(9, 9, 9);
  auto absent = call(client, address, missing);
  ASSERT_TRUE(absent) << "an application error is a reply, not a transport error";
  EXPECT_EQ(absent->status, ENOENT);
  EXPECT_EQ(absent->message, "no object " + missing.id.to_hex());

  PeerRequest cow = request(PeerOp::kCreateFrom);
  cow.src = ObjectId::data(4, 4, 1);
  cow.id = ObjectId::data(5, 4, 1);
  EXPECT_EQ(call(client, address, cow)->status, 0);
  for (PeerOp op : {PeerOp::kZero, PeerOp::kRemove, PeerOp::kSync}) EXPECT_EQ(call(client, address, request(op))->status, 0);

  auto listed = call(client, address, request(PeerOp::kListObjects));
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->objects.size(), 2u);
  EXPECT_EQ(listed->objects[0].id, ObjectId::data(3, 1, 9));
  EXPECT_EQ(listed->objects[0].version, (ObjectVersion{4, 5}));

  std::string json = "{\"command\":\"node info\"}";
  PeerRequest admin = request(PeerOp::kAdmin);
  admin.data = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(json.data()), json.size());
  auto answered = call(client, address, admin);
  ASSERT_TRUE(answered);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(answered->data.data()), answered->data.size()), "{\"echo\":" + json + "}");

  PeerRequest stale = request(PeerOp::kWrite);
  stale.epoch = 6;
  auto fenced = call(client, address, stale);
  ASSERT_TRUE(fenced);
  EXPECT_EQ(fenced->status, kEpochMismatch);
  EXPECT_EQ(fenced->epoch, kServerEpoch);
}

TEST_F(PeerTransportTest, EveryOpRoundTripsOverUnixSocket) {
  every_op_round_trips(start_server(unix_address()).bound());
}

TEST_F(PeerTransportTest, EveryOpRoundTripsOverTcpLoopback) {
  const std::string& bound = start_server("127.0.0.1:0").bound();
  ASSERT_EQ(bound.rfind("127.0.0.1:", 0), 0u) << bound;
  ASSERT_NE(bound, "127.0.0.1:0");
  every_op_round_trips(bound);
}

TEST_F(PeerTransportTest, RepliesComeBackOutOfOrder) {
  std::string address = start_server(unix_address()).bound();
  PeerClient& client = make_client(cluster_);
  ASSERT_TRUE(call(client, address, request(PeerOp::kSync)));  // connected
  std::vector<uint64_t> order = pool_->at(0).block_on([](PeerClient& c, std::string a) -> Task<std::vector<uint64_t>> {
    std::vector<uint64_t> finished;
    WaitGroup group;
    for (uint64_t offset : {kDelayedOffset, uint64_t{0}}) {
      group.add();
      spawn([](PeerClient& c, std::string a, uint64_t offset, std::vector<uint64_t>& finished,
               WaitGroup& group) -> Task<void> {
        PeerRequest r = request(PeerOp::kRead);
        r.offset = offset;
        r.length = 512;
        auto reply = co_await c.call(uuid_of(0xaa), a, r);
        if (reply && reply->status == 0 && reply->data.data()[511] == pattern(offset, 511)) finished.push_back(offset);
        group.done();
      }(c, a, offset, finished, group));
    }
    co_await group.wait();
    co_return finished;
  }(client, address));
  EXPECT_EQ(order, (std::vector<uint64_t>{0, kDelayedOffset}));
}

// Runs `count` reads (half straight into a span) concurrently on `reactor`.
Task<int> many_reads(PeerClient& client, std::string address, int count) {
  int good = 0;
  WaitGroup group;
  for (int i = 0; i < count; ++i) {
    group.add();
    spawn([](PeerClient& c, std::string a, int i, int& good, WaitGroup& group) -> Task<void> {
      PeerRequest r = request(PeerOp::kRead);
      r.offset = static_cast<uint64_t>(i) * 4096;
      r.length = 4096 + i;
      std::vector<uint8_t> into(r.length);
      auto reply = co_await c.call(uuid_of(0xaa), a, r, i % 2 ? std::span<uint8_t>(into) : std::span<uint8_t>());
      if (reply && reply->status == 0) {
        const uint8_t* bytes = i % 2 ? into.data() : reply->data.data();
        bool same = true;
        for (size_t k = 0; k < r.length; ++k) same = same && bytes[k] == pattern(r.offset, k);
        if (same) ++good;
      }
      group.done();
    }(client, address, i, good, group));
  }
  co_await group.wait();
  co_return good;
}

TEST_F(PeerTransportTest, ManyConcurrentCallsFromTwoReactors) {
  std::string address = start_server("127.0.0.1:0").bound();
  PeerClient& client = make_client(cluster_);
  int good[2] = {};
  std::thread other([&] { good[1] = pool_->at(1).block_on(many_reads(client, address, 600)); });
  good[0] = pool_->at(0).block_on(many_reads(client, address, 600));
  other.join();
  EXPECT_EQ(good[0], 600);
  EXPECT_EQ(good[1], 600);
}

TEST_F(PeerTransportTest, HelloWithTheWrongClusterOrNodeIsRefused) {
  std::string address = start_server(unix_address()).bound();
  PeerClient& stranger = make_client(uuid_of(0x22));
  auto refused = call(stranger, address, request(PeerOp::kSync));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.status().code(), EINVAL);
  EXPECT_EQ(refused.status().message(), "peer " + uuid_to_string(node_) + " at " + address +
                                            ": hello refused: wrong cluster " + uuid_to_string(uuid_of(0x22)));

  PeerClient& member = make_client(cluster_);
  auto wrong_node = call(member, address, request(PeerOp::kSync), {}, 0, uuid_of(0xbb));
  ASSERT_FALSE(wrong_node);
  EXPECT_EQ(wrong_node.status().code(), EINVAL);
  EXPECT_EQ(wrong_node.status().message(), "peer " + uuid_to_string(uuid_of(0xbb)) + " at " + address +
                                               ": hello refused: this is not node " + uuid_to_string(uuid_of(0xbb)));

  // After format the cluster uuid changes; new connections use it.
  stranger.set_cluster(cluster_);
  auto accepted = call(stranger, address, request(PeerOp::kSync));
  ASSERT_TRUE(accepted) << accepted.status().to_string();
}

// Blocking helpers for a hand-made peer.
int connect_unix(const std::string& address) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = address.substr(5);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
bool send_bytes(int fd, const std::vector<uint8_t>& bytes) {
  ssize_t n;
  do {
    n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(bytes.size());
}
// One whole frame, or empty on EOF/error.
std::vector<uint8_t> receive_frame(int fd) {
  std::vector<uint8_t> frame(kPeerHeaderSize);
  auto fill = [&](size_t from) {
    size_t done = from;
    while (done < frame.size()) {
      ssize_t n = ::recv(fd, frame.data() + done, frame.size() - done, 0);
      if (n < 0 && errno == EINTR) continue;  // blocking calls here may see EINTR
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  };
  if (!fill(0)) return {};
  frame.resize(kPeerHeaderSize + get_be32(frame.data() + 32));
  if (!fill(kPeerHeaderSize)) return {};
  return frame;
}
bool closed_by_peer(int fd) {
  uint8_t byte;
  ssize_t n;
  do {
    n = ::recv(fd, &byte, 1, 0);
  } while (n < 0 && errno == EINTR);
  return n == 0;
}

TEST_F(PeerTransportTest, HelloOfAnotherVersionIsRefusedWithEproto) {
  std::string address = start_server(unix_address()).bound();
  int fd = connect_unix(address);
  ASSERT_GE(fd, 0);
  PeerFrame hello = encode_hello({2, cluster_, uuid_of(0xc1), node_}, 1);
  ASSERT_TRUE(send_bytes(fd, flatten(hello)));
  auto frame = receive_frame(fd);
  auto reply = decode_reply_frame(frame);
  ASSERT_TRUE(reply) << reply.status().message();
  EXPECT_EQ(reply->status, EPROTO);
  EXPECT_EQ(reply->message, "speak version 1 please");
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
}

TEST_F(PeerTransportTest, MalformedFramesCloseOnlyTheirConnection) {
  PeerServer& server = start_server(unix_address());
  std::string address = server.bound();
  PeerRequest r = request(PeerOp::kRead);
  r.length = 16;
  PeerFrame good_frame = encode_request(r, 2);
  const auto good = flatten(good_frame);
  auto bad_magic = good;
  bad_magic[1] = 'X';
  auto bad_crc = good;
  bad_crc[kPeerHeaderSize] ^= 0x40;
  auto oversize = good;
  put_be32(oversize.data() + 32, kMaxPeerPayload + 1);
  for (const auto& bad : {bad_magic, bad_crc, oversize}) {
    int fd = connect_unix(address);
    ASSERT_GE(fd, 0);
    PeerFrame hello = encode_hello({kPeerProtocolVersion, cluster_, uuid_of(0xc1), node_}, 1);
    ASSERT_TRUE(send_bytes(fd, flatten(hello)));
    auto accepted = decode_reply_frame(receive_frame(fd));
    ASSERT_TRUE(accepted);
    ASSERT_EQ(accepted->status, 0);
    ASSERT_TRUE(send_bytes(fd, good));
    auto served = decode_reply_frame(receive_frame(fd));
    ASSERT_TRUE(served);
    EXPECT_EQ(served->data.size(), 16u);
    ASSERT_TRUE(send_bytes(fd, bad));
    EXPECT_TRUE(closed_by_peer(fd));
    ::close(fd);
  }
  // A request before the hello is a protocol error too.
  int fd = connect_unix(address);
  ASSERT_TRUE(send_bytes(fd, good));
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);

  PeerClient& client = make_client(cluster_);
  auto after = call(client, address, request(PeerOp::kSync));
  ASSERT_TRUE(after) << after.status().to_string();
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 1; }));
}

TEST_F(PeerTransportTest, APeerThatDiesFailsEveryCallInFlightAndTheNextCallReconnects) {
  std::string address = unix_address();
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, address.c_str() + 5);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  constexpr int kCalls = 5;
  // The doomed peer: accepts the hello, takes kCalls requests, answers none, dies.
  std::thread doomed([&] {
    int fd;
    do {
      fd = ::accept(listener, nullptr, nullptr);
    } while (fd < 0 && errno == EINTR);
    auto hello = receive_frame(fd);
    auto decoded = decode_request_frame(hello);
    PeerFrame ok = encode_reply(PeerOp::kHello, decoded ? decoded->header.request_id : 0, PeerReply{});
    send_bytes(fd, flatten(ok));
    for (int i = 0; i < kCalls; ++i) receive_frame(fd);
    ::close(fd);
  });
  PeerClient& client = make_client(cluster_);
  int failed_with_errno = pool_->at(0).block_on([](PeerClient& c, std::string a) -> Task<int> {
    int failed = 0;
    WaitGroup group;
    for (int i = 0; i < kCalls; ++i) {
      group.add();
      spawn([](PeerClient& c, std::string a, int& failed, WaitGroup& group) -> Task<void> {
        PeerRequest r = request(PeerOp::kRead);
        r.length = 4096;
        std::vector<uint8_t> into(4096);
        auto reply = co_await c.call(uuid_of(0xaa), a, r, into);
        if (!reply && reply.status().code() == ECONNRESET) ++failed;
        group.done();
      }(c, a, failed, group));
    }
    co_await group.wait();
    co_return failed;
  }(client, address));
  doomed.join();
  ::close(listener);
  EXPECT_EQ(failed_with_errno, kCalls);

  start_server(address);  // the node comes back
  auto again = call(client, address, request(PeerOp::kSync));
  ASSERT_TRUE(again) << again.status().to_string();
  EXPECT_EQ(again->status, 0);
}

TEST_F(PeerTransportTest, ACallThatGetsNoReplyTimesOutAndTheConnectionStaysUsable) {
  std::string address = start_server(unix_address()).bound();
  PeerClientOptions options;
  options.call_timeout = 200ms;
  PeerClient& client = make_client(cluster_, options);
  PeerRequest slow = request(PeerOp::kRead);
  slow.offset = kSlowOffset;
  slow.length = 4096;
  std::vector<uint8_t> into(4096);
  auto started = std::chrono::steady_clock::now();
  auto timed_out = call(client, address, slow, into);
  auto waited = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(timed_out);
  EXPECT_EQ(timed_out.status().code(), ETIMEDOUT);
  EXPECT_EQ(timed_out.status().message(),
            "peer " + uuid_to_string(node_) + " at " + address + ": no reply within 200 ms");
  EXPECT_LT(waited, 1500ms);
  PeerRequest quick = request(PeerOp::kRead);
  quick.length = 4096;
  auto fine = call(client, address, quick, into);
  ASSERT_TRUE(fine) << fine.status().to_string();
  EXPECT_EQ(into[100], pattern(0, 100));
}

TEST_F(PeerTransportTest, UnreachablePeersFailWithAnErrno) {
  PeerClient& client = make_client(cluster_);
  auto no_socket = call(client, unix_address("nobody.sock"), request(PeerOp::kSync));
  ASSERT_FALSE(no_socket);
  EXPECT_EQ(no_socket.status().code(), ENOENT);
  EXPECT_NE(no_socket.status().message().find("peer " + uuid_to_string(node_)), std::string::npos);

  // A port nobody listens on: bind one, learn it, close it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t length = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  ::close(fd);
  auto refused = call(client, "127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), request(PeerOp::kSync));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.status().code(), ECONNREFUSED);

  auto nonsense = call(client, "not-an-address", request(PeerOp::kSync));
  EXPECT_EQ(nonsense.status().code(), EINVAL);
}

TEST_F(PeerTransportTest, DropClosesConnectionsAndTheNextCallReconnects) {
  PeerServer& server = start_server(unix_address());
  PeerClient& client = make_client(cluster_);
  ASSERT_TRUE(call(client, server.bound(), request(PeerOp::kSync), {}, 0));
  ASSERT_TRUE(call(client, server.bound(), request(PeerOp::kSync), {}, 1));
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 2; }));
  client.drop(node_);
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 0; }));
  auto again = call(client, server.bound(), request(PeerOp::kSync));
  ASSERT_TRUE(again) << again.status().to_string();
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 1; }));
}

}  // namespace
}  // namespace kelpie
