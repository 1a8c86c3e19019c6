// The zookeeper driver's record coding (cluster/zookeeper_records.h): format 2 round
// trips with awkward strings, format 1 (JSON) is still read, malformed records are
// refused with EBADMSG, and the size and parse cost at 1,000 nodes.
#include "cluster/zookeeper_records.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "cluster/membership_codec.h"
#include "common/admin_wire.h"
#include "common/crc32c.h"
#include "common/uuid.h"

namespace kelpie {
namespace {

using zookeeper_records::Change;

MemberInfo node(int index) {
  MemberInfo member;
  member.id = make_uuid();
  member.peer_address = "10.200.7." + std::to_string(index % 250) + ":" + std::to_string(7000 + index);
  member.admin_address = "10.200.7." + std::to_string(index % 250) + ":" + std::to_string(17000 + index);
  member.vnodes = 64;
  member.capacity_bytes = uint64_t{1} << 40;
  member.pid = 4000 + index;
  return member;
}

bool same(const MemberInfo& a, const MemberInfo& b) {
  return member_info_to_json(a) == member_info_to_json(b);
}

EpochRecord record_of(std::vector<MemberInfo> nodes) {
  EpochRecord record;
  record.epoch = 7;
  record.cluster = make_uuid();
  record.copies = 3;
  record.min_copies = 2;
  record.created_unix_ms = 1764115200123;
  record.reason = "failed a; join \"b\"\nwith a newline";
  record.nodes = std::move(nodes);
  sort_by_id(record.nodes);
  return record;
}

TEST(ZookeeperRecordsTest, FullRecordRoundTripsAwkwardStrings) {
  std::vector<MemberInfo> nodes;
  for (int i = 0; i < 6; ++i) nodes.push_back(node(i));
  nodes[0].peer_address = "unix:/run/kelpie dir/peer 1.sock";  // spaces
  nodes[1].zone = "-";                                          // the empty marker itself
  nodes[2].zone = "rack%7 \t\n\"quoted\"\\";                    // escapes and JSON specials
  nodes[3].nbd_address = "[::1]:10809";
  nodes[3].zone = "zöne";  // non-ASCII
  nodes[4].gateway = true;
  nodes[4].vnodes = 0;
  nodes[5].pid = -1;
  EpochRecord record = record_of(nodes);
  std::map<Uuid, int64_t> incarnations;
  for (size_t i = 0; i < record.nodes.size(); ++i) {
    if (i != 2) incarnations[record.nodes[i].id] = static_cast<int64_t>(0x9000000000000001 + i);
  }
  std::string bytes = zookeeper_records::encode_full(record, incarnations);
  EXPECT_EQ(std::count(bytes.begin(), bytes.end(), '\n'), 7) << bytes;
  auto decoded = zookeeper_records::decode_full(bytes, "current");
  ASSERT_TRUE(decoded) << decoded.status().to_string();
  EXPECT_EQ(record_to_json(decoded->record), record_to_json(record));
  EXPECT_EQ(decoded->incarnations, incarnations);  // a node without one (0) has none
}

TEST(ZookeeperRecordsTest, ChangeRecordRoundTrips) {
  Change change;
  change.header = record_of({});
  change.added = {node(1), node(2)};
  change.removed = {node(3)};
  change.removed[0].zone = "";
  change.incarnations = {{change.added[0].id, 0x100}, {change.added[1].id, 0x2aa}};
  change.nodes_crc = 0xdeadbeef;
  auto decoded = zookeeper_records::decode_change(zookeeper_records::encode_change(change), "e");
  ASSERT_TRUE(decoded) << decoded.status().to_string();
  EXPECT_EQ(record_to_json(decoded->header), record_to_json(change.header));
  ASSERT_EQ(decoded->added.size(), 2u);
  ASSERT_EQ(decoded->removed.size(), 1u);
  EXPECT_TRUE(same(decoded->added[0], change.added[0]));
  EXPECT_TRUE(same(decoded->added[1], change.added[1]));
  EXPECT_TRUE(same(decoded->removed[0], change.removed[0]));
  EXPECT_EQ(decoded->incarnations, change.incarnations);
  EXPECT_EQ(decoded->nodes_crc, 0xdeadbeefu);
}

TEST(ZookeeperRecordsTest, Format1JsonRecordsAreStillRead) {
  EpochRecord record = record_of({node(1), node(2), node(3)});
  nlohmann::json full = record_to_json(record);
  full["incarnations"] = {{uuid_to_string(record.nodes[1].id), "0x1f"}};
  auto decoded = zookeeper_records::decode_full(dump_json(full), "current");
  ASSERT_TRUE(decoded) << decoded.status().to_string();
  EXPECT_EQ(record_to_json(decoded->record), record_to_json(record));
  EXPECT_EQ(decoded->incarnations, (std::map<Uuid, int64_t>{{record.nodes[1].id, 0x1f}}));

  nlohmann::json change = record_to_json(record_of({}));
  change.erase("nodes");
  change["added"] = {member_info_to_json(record.nodes[0])};
  change["removed"] = nlohmann::json::array();
  change["incarnations"] = {{uuid_to_string(record.nodes[0].id), "0x2"}};
  change["nodes_crc"] = 12345;
  auto delta = zookeeper_records::decode_change(dump_json(change), "epoch");
  ASSERT_TRUE(delta) << delta.status().to_string();
  ASSERT_EQ(delta->added.size(), 1u);
  EXPECT_TRUE(same(delta->added[0], record.nodes[0]));
  EXPECT_EQ(delta->incarnations.at(record.nodes[0].id), 2);
  EXPECT_EQ(delta->nodes_crc, 12345u);
}

TEST(ZookeeperRecordsTest, MalformedRecordsAreRefused) {
  EpochRecord record = record_of({node(1), node(2)});
  std::string good = zookeeper_records::encode_full(record, {});
  std::string header = good.substr(0, good.find('\n') + 1);
  std::string line = good.substr(header.size(), good.find('\n', header.size()) + 1 - header.size());
  std::vector<std::string> bad = {
      "",
      "not json",
      header + line.substr(0, line.size() - 1),               // no final newline
      header + line.substr(0, line.rfind(' ')) + "\n",         // a field short
      header + line.substr(0, line.size() - 1) + " 9\n",       // a field more
      header + "zz" + line.substr(2),                          // a bad uuid
      header + line.substr(0, line.find(' ')) + " xyz" + line.substr(line.find(' ', 37)),
      header + line.substr(0, 37) + "0 %g0" + line.substr(line.find(' ', 39)),  // bad escape
      header + line.substr(0, line.size() - 2) + "%\n",         // truncated escape
  };
  std::string later = good;
  later.replace(later.find("\"format\":2"), 10, "\"format\":3");  // a format from the future
  bad.push_back(later);
  for (const std::string& bytes : bad) {
    auto decoded = zookeeper_records::decode_full(bytes, "P/current");
    EXPECT_EQ(decoded.status().code(), EBADMSG) << bytes;
    if (!decoded) {
      EXPECT_EQ(decoded.status().message().rfind("P/current", 0), 0u);
    }
  }
  EXPECT_EQ(zookeeper_records::decode_change(header + line, "e").status().code(), EBADMSG)
      << "a change line needs its + or - mark";

  // A change header whose nodes_crc is not a 32-bit number is refused, not thrown on
  // (json::value() throws type_error for a string; every member reads the record).
  Change change;
  change.header = record_of({});
  change.added = {node(1)};
  std::string encoded = zookeeper_records::encode_change(change);
  for (const char* crc : {"\"nodes_crc\":\"12\"", "\"nodes_crc\":-1", "\"nodes_crc\":4294967296",
                          "\"nodes_crc\":1.5", "\"nodes_crc\":null"}) {
    std::string bytes = encoded;
    size_t at = bytes.find("\"nodes_crc\":0");
    ASSERT_NE(at, std::string::npos) << bytes;
    bytes.replace(at, std::string("\"nodes_crc\":0").size(), crc);
    auto decoded = zookeeper_records::decode_change(bytes, "epoch record 9");
    EXPECT_EQ(decoded.status().code(), EBADMSG) << crc;
  }
}

TEST(ZookeeperRecordsTest, NodesCrcIsTheCrcOfTheSortedIdTexts) {
  EpochRecord record = record_of({node(1), node(2), node(3), node(4)});
  std::vector<std::string> texts;
  for (const MemberInfo& member : record.nodes) texts.push_back(uuid_to_string(member.id));
  std::sort(texts.begin(), texts.end());
  std::string all;
  for (const std::string& text : texts) all += text;
  EXPECT_EQ(zookeeper_records::nodes_crc(record.nodes), crc32c(all.data(), all.size()));
}

// The format storm (docs/performance.md): every member of a 1,000-node cluster reads
// and parses the full record once when it learns the cluster.
TEST(ZookeeperRecordsTest, AThousandNodeRecordIsSmallAndQuickToParse) {
  std::vector<MemberInfo> nodes;
  std::map<Uuid, int64_t> incarnations;
  for (int i = 0; i < 1000; ++i) {
    nodes.push_back(node(i));
    incarnations[nodes.back().id] = static_cast<int64_t>(0x10000a3f2c00000) + i;
  }
  EpochRecord record = record_of(nodes);
  std::string bytes = zookeeper_records::encode_full(record, incarnations);
  nlohmann::json old = record_to_json(record);
  for (const auto& [id, session] : incarnations) {
    char hex[32];
    std::snprintf(hex, sizeof(hex), "0x%llx", static_cast<unsigned long long>(session));
    old["incarnations"][uuid_to_string(id)] = hex;
  }
  std::string old_bytes = dump_json(old);
  auto time_decode = [](const std::string& text) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(zookeeper_records::decode_full(text, "current"));
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
               .count() / 5;
  };
  double new_ms = time_decode(bytes), old_ms = time_decode(old_bytes);
  std::printf("1,000 nodes: format 2 %zu bytes, parsed in %.2f ms; format 1 (JSON) %zu bytes, "
              "%.2f ms\n", bytes.size(), new_ms, old_bytes.size(), old_ms);
  EXPECT_LT(bytes.size(), 130u * 1000);
  EXPECT_LT(bytes.size() * 2, old_bytes.size());
}

}  // namespace
}  // namespace kelpie
