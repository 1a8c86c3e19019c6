// AdminServer driven over real TCP by AdminClient (and by raw frames for the
// malformed cases), against an in-memory NodeControl.
#include "daemon/admin_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "admin/admin_client.h"
#include "common/admin_wire.h"
#include "common/bytes.h"

namespace kelpie {
namespace {

using nlohmann::json;

class FakeNodeControl : public NodeControl {
 public:
  Result<VdiSummary> create_vdi(const std::string& name, uint64_t size_bytes,
                                uint32_t object_shift) override {
    std::lock_guard lock(mutex_);
    if (object_shift < 20 || object_shift > 26) return Status::error(EINVAL, "bad object size");
    if (vdis_.contains(name)) return Status::error(EEXIST, "VDI '" + name + "' already exists");
    VdiSummary vdi{.name = name,
                   .id = next_id_++,
                   .size_bytes = size_bytes,
                   .object_size_bytes = 1u << object_shift,
                   .created_unix_s = 1700000000};
    vdis_[name] = vdi;
    return vdi;
  }
  Status delete_vdi(const std::string& name) override {
    std::lock_guard lock(mutex_);
    if (vdis_.erase(name) == 0) return Status::error(ENOENT, "VDI '" + name + "' not found");
    return Status::ok();
  }
  Status resize_vdi(const std::string& name, uint64_t size_bytes) override {
    std::lock_guard lock(mutex_);
    auto it = vdis_.find(name);
    if (it == vdis_.end()) return Status::error(ENOENT, "VDI '" + name + "' not found");
    it->second.size_bytes = size_bytes;
    return Status::ok();
  }
  Result<VdiSummary> vdi_info(const std::string& name) override {
    std::lock_guard lock(mutex_);
    if (name == "explode") throw std::runtime_error("boom");
    auto it = vdis_.find(name);
    if (it == vdis_.end()) return Status::error(ENOENT, "VDI '" + name + "' not found");
    return it->second;
  }
  std::vector<VdiSummary> list_vdis() override {
    std::lock_guard lock(mutex_);
    std::vector<VdiSummary> list;
    for (const auto& [name, vdi] : vdis_) list.push_back(vdi);
    return list;
  }
  NodeSummary node_info() override {
    return NodeSummary{.version = "0.1.0",
                       .node_uuid = "u",
                       .data_dir = "/d",
                       .nbd_tcp = "127.0.0.1:10809",
                       .nbd_unix = "/d/nbd.sock",
                       .admin_address = "127.0.0.1:7000",
                       .threads = 4,
                       .format_version = 1,
                       .capacity_bytes = uint64_t{1} << 40,
                       .free_bytes = uint64_t{1} << 39,
                       .objects = 3,
                       .vdi_count = 1,
                       .nbd_connections = 2,
                       .uptime_s = 99};
  }

 private:
  std::mutex mutex_;
  std::map<std::string, VdiSummary> vdis_;
  uint32_t next_id_ = 1;
};

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.start().is_ok());
    address_ = "127.0.0.1:" + std::to_string(server_.bound_port());
  }

  AdminClient connect() {
    Result<AdminClient> client = AdminClient::connect(address_);
    KELPIE_ASSERT(client.is_ok());
    return std::move(client.value());
  }

  // Sends raw bytes on a fresh connection's socket.
  static void send_raw(int fd, const std::string& bytes) {
    ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  static std::string frame(const std::string& body, uint32_t length) {
    uint8_t header[4];
    put_be32(header, length);
    return std::string(reinterpret_cast<char*>(header), 4) + body;
  }
  static std::string frame(const std::string& body) {
    return frame(body, static_cast<uint32_t>(body.size()));
  }

  void expect_still_serving() {
    AdminClient client = connect();
    Result<json> reply = client.call("node.info");
    ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
    EXPECT_EQ((*reply)["version"], "0.1.0");
  }

  FakeNodeControl control_;
  AdminServer server_{control_, "127.0.0.1:0"};
  std::string address_;
};

TEST_F(AdminServerTest, CreateInfoListResizeDelete) {
  AdminClient client = connect();
  Result<json> created = client.call(
      "vdi.create", {{"name", "a"}, {"size", uint64_t{10} << 30}, {"object_shift", 22}});
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();
  EXPECT_EQ((*created)["ok"], true);
  Result<VdiSummary> vdi = vdi_from_json(*created);
  ASSERT_TRUE(vdi.is_ok()) << vdi.status().to_string();
  EXPECT_EQ(vdi->name, "a");
  EXPECT_EQ(vdi->size_bytes, uint64_t{10} << 30);
  EXPECT_EQ(vdi->object_size_bytes, 4u << 20);

  ASSERT_TRUE(client.call("vdi.create", {{"name", "b"}, {"size", 512}}).is_ok())
      << "object_shift is optional";
  ASSERT_TRUE(client.call("vdi.resize", {{"name", "a"}, {"size", 1 << 20}}).is_ok());
  Result<json> info = client.call("vdi.info", {{"name", "a"}});
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ((*info)["size_bytes"], 1 << 20);

  Result<json> list = client.call("vdi.list");
  ASSERT_TRUE(list.is_ok());
  ASSERT_EQ((*list)["vdis"].size(), 2u);
  EXPECT_EQ((*list)["vdis"][1]["name"], "b");
  EXPECT_EQ((*list)["vdis"][1]["object_size_bytes"], 4 << 20);

  ASSERT_TRUE(client.call("vdi.delete", {{"name", "a"}}).is_ok());
  EXPECT_EQ(client.call("vdi.info", {{"name", "a"}}).status().code(), ENOENT);
}

TEST_F(AdminServerTest, NodeInfoCarriesEveryField) {
  AdminClient client = connect();
  Result<json> reply = client.call("node.info");
  ASSERT_TRUE(reply.is_ok());
  Result<NodeSummary> node = node_from_json(*reply);
  ASSERT_TRUE(node.is_ok()) << node.status().to_string();
  EXPECT_EQ(node->nbd_unix, "/d/nbd.sock");
  EXPECT_EQ(node->capacity_bytes, uint64_t{1} << 40);
  EXPECT_EQ(node->uptime_s, 99u);
}

TEST_F(AdminServerTest, NodeControlErrorsPassThrough) {
  AdminClient client = connect();
  Status missing = client.call("vdi.info", {{"name", "nope"}}).status();
  EXPECT_EQ(missing.code(), ENOENT);
  EXPECT_EQ(missing.message(), "VDI 'nope' not found");
  ASSERT_TRUE(client.call("vdi.create", {{"name", "x"}, {"size", 512}}).is_ok());
  Status exists = client.call("vdi.create", {{"name", "x"}, {"size", 512}}).status();
  EXPECT_EQ(exists.code(), EEXIST);
  EXPECT_EQ(exists.message(), "VDI 'x' already exists");
  EXPECT_EQ(client.call("vdi.delete", {{"name", "nope"}}).status().code(), ENOENT);
}

TEST_F(AdminServerTest, UnknownOpAndBadArguments) {
  AdminClient client = connect();
  Status unknown = client.call("vdi.frobnicate").status();
  EXPECT_EQ(unknown.code(), EINVAL);
  EXPECT_EQ(unknown.message(), "unknown operation 'vdi.frobnicate'");
  EXPECT_EQ(client.call("vdi.create", {{"name", "x"}}).status().code(), EINVAL);
  EXPECT_EQ(client.call("vdi.create", {{"name", 7}, {"size", 512}}).status().code(), EINVAL);
  EXPECT_EQ(client.call("vdi.create", {{"name", "x"}, {"size", -512}}).status().code(), EINVAL);
  EXPECT_EQ(client.call("vdi.resize", {{"name", "x"}, {"size", "1G"}}).status().code(), EINVAL);
  EXPECT_EQ(client.call("vdi.info").status().code(), EINVAL);
}

TEST_F(AdminServerTest, ExceptionBecomesErrorReply) {
  AdminClient client = connect();
  Status status = client.call("vdi.info", {{"name", "explode"}}).status();
  EXPECT_EQ(status.code(), EIO);
  EXPECT_TRUE(client.call("vdi.list").is_ok()) << "the connection survives";
}

TEST_F(AdminServerTest, MalformedJsonGetsErrorAndConnectionStaysUsable) {
  AdminClient client = connect();
  for (const std::string& body : {std::string("{not json"), std::string("[1,2]"), std::string(""),
                                  std::string("\"op\""), std::string("{\"op\": \"\xff\xfe\"}")}) {
    send_raw(client.fd(), frame(body));
    Result<json> reply = recv_admin_message(client.fd());
    ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
    EXPECT_EQ((*reply)["ok"], false);
    EXPECT_EQ((*reply)["errno"], EBADMSG) << body;
  }
  send_raw(client.fd(), frame("{\"op\": 5}"));
  Result<json> reply = recv_admin_message(client.fd());
  ASSERT_TRUE(reply.is_ok());
  EXPECT_EQ((*reply)["errno"], EINVAL);
  EXPECT_TRUE(client.call("vdi.list").is_ok());
}

TEST_F(AdminServerTest, OversizedFrameIsRefusedAndServerCarriesOn) {
  AdminClient client = connect();
  send_raw(client.fd(), frame(std::string(100, 'x'), kMaxAdminMessageBytes + 1));
  Result<json> reply = recv_admin_message(client.fd());
  if (reply.is_ok()) {
    EXPECT_EQ((*reply)["errno"], EMSGSIZE);
  }
  // Either way the connection is over.
  Result<json> after = recv_admin_message(client.fd());
  EXPECT_FALSE(after.is_ok());
  AdminClient other = connect();
  send_raw(other.fd(), frame("", 0xffffffffu));
  Result<json> other_reply = recv_admin_message(other.fd());
  if (other_reply.is_ok()) {
    EXPECT_EQ((*other_reply)["errno"], EMSGSIZE);
  }
  expect_still_serving();
}

TEST_F(AdminServerTest, TruncatedFramesAndAbruptClosesDoNotHurt) {
  {
    AdminClient client = connect();
    send_raw(client.fd(), std::string("\0\0", 2));
  }
  {
    AdminClient client = connect();
    send_raw(client.fd(), frame("{\"op\": \"node.info\"", 400));
  }
  {
    AdminClient client = connect();
    send_raw(client.fd(), frame("{\"op\": \"vdi.list\"}"));  // closes without reading
  }
  expect_still_serving();
}

TEST_F(AdminServerTest, ManyRequestsOnOneConnection) {
  AdminClient client = connect();
  for (int i = 0; i < 200; ++i) {
    std::string name = "v" + std::to_string(i);
    ASSERT_TRUE(client.call("vdi.create", {{"name", name}, {"size", 512 * (i + 1)}}).is_ok());
    Result<json> info = client.call("vdi.info", {{"name", name}});
    ASSERT_TRUE(info.is_ok());
    EXPECT_EQ((*info)["size_bytes"], 512 * (i + 1));
  }
  Result<json> list = client.call("vdi.list");
  ASSERT_TRUE(list.is_ok());
  EXPECT_EQ((*list)["vdis"].size(), 200u);
}

TEST_F(AdminServerTest, ConnectionCapRefusesTheNextOne) {
  std::vector<AdminClient> clients;
  for (size_t i = 0; i < AdminServer::kMaxConnections; ++i) {
    clients.push_back(connect());
    ASSERT_TRUE(clients.back().call("node.info").is_ok());  // being served
  }
  AdminClient extra = connect();
  Status refused = extra.call("node.info").status();
  // The server closes right after its EBUSY reply; a RST racing the reply may win.
  EXPECT_TRUE(refused.code() == EBUSY || refused.code() == ECONNRESET) << refused.to_string();
  clients.pop_back();
  // The slot frees once the server notices the close; poll with a deadline.
  bool served = false;
  for (int attempt = 0; attempt < 500 && !served; ++attempt) {
    served = connect().call("node.info").is_ok();
    if (!served) ::usleep(10'000);
  }
  EXPECT_TRUE(served);
}

TEST_F(AdminServerTest, StopWithClientsConnectedReturns) {
  AdminClient idle = connect();
  AdminClient busy = connect();
  ASSERT_TRUE(busy.call("node.info").is_ok());
  server_.stop();
  EXPECT_FALSE(busy.call("node.info").is_ok());
  Status refused = AdminClient::connect(address_).status();
  EXPECT_EQ(refused.code(), ECONNREFUSED);
  EXPECT_EQ(refused.message(), "cannot reach kelpied at " + address_ + ": Connection refused");
}

TEST(AdminServerStart, BadOrBusyAddress) {
  FakeNodeControl control;
  AdminServer bad(control, "nonsense");
  Status status = bad.start();
  EXPECT_EQ(status.code(), EINVAL);
  EXPECT_EQ(status.message(), "invalid address 'nonsense' (expected HOST:PORT)");

  AdminServer first(control, "127.0.0.1:0");
  ASSERT_TRUE(first.start().is_ok());
  std::string taken = "127.0.0.1:" + std::to_string(first.bound_port());
  AdminServer second(control, taken);
  status = second.start();
  EXPECT_EQ(status.code(), EADDRINUSE);
  EXPECT_EQ(status.message(),
            "cannot listen on admin address " + taken + ": Address already in use");
}

TEST(AdminWire, HostPortParsing) {
  Result<HostPort> v4 = parse_host_port("127.0.0.1:7000");
  ASSERT_TRUE(v4.is_ok());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 7000);
  Result<HostPort> v6 = parse_host_port("[::1]:0");
  ASSERT_TRUE(v6.is_ok());
  EXPECT_EQ(v6->host, "::1");
  for (const char* bad : {"", "7000", ":7000", "host:", "host:70000", "host:7x", "::1:7000",
                          "[::1:7000", "host:123456"}) {
    EXPECT_EQ(parse_host_port(bad).status().code(), EINVAL) << bad;
  }
}

TEST(AdminWire, SummaryJsonRoundTripAndMistypedFields) {
  VdiSummary vdi{.name = "d",
                 .id = 3,
                 .size_bytes = uint64_t{1} << 40,
                 .object_size_bytes = 1 << 26,
                 .allocated_objects = 5,
                 .used_bytes = uint64_t{5} << 26,
                 .created_unix_s = -1,
                 .attached_connections = 2};
  Result<VdiSummary> back = vdi_from_json(vdi_to_json(vdi));
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(back->size_bytes, vdi.size_bytes);
  EXPECT_EQ(back->created_unix_s, -1);
  EXPECT_EQ(back->attached_connections, 2u);

  json wrong = vdi_to_json(vdi);
  wrong["id"] = uint64_t{1} << 33;
  EXPECT_EQ(vdi_from_json(wrong).status().code(), EBADMSG);
  wrong = vdi_to_json(vdi);
  wrong.erase("used_bytes");
  EXPECT_EQ(vdi_from_json(wrong).status().message(), "field 'used_bytes' is missing");
  EXPECT_EQ(vdi_from_json(json::array()).status().code(), EBADMSG);
}

}  // namespace
}  // namespace kelpie
