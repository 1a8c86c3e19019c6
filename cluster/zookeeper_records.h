// The zookeeper driver's epoch records as stored in znodes (cluster/zookeeper_membership.h,
// "Layout"): P/current (an epoch in full) and P/epochs/<n> (what an epoch changed).
// Internal to the driver; zookeeper_records.cc has the format's details.
//
// Format 2 (written since 2026-11, read with format 1): one line of JSON, the
// record's header (membership_codec.h's EpochRecord fields without "nodes", plus
// "format": 2), then one text line per node:
//   ID SESSION PEER ADMIN NBD ZONE VNODES GATEWAY CAPACITY PID
// (ID the canonical uuid, SESSION the member's session in hex, 0 for none, GATEWAY 0|1;
// a string field is "-" when empty and %XX-escapes '%', '-' alone, bytes <= ' ' and
// >= 0x7f). A change record's lines start with "+ " (added, with its session) or
// "- " (removed), and its header has "nodes_crc". Why not JSON objects: a 1,000-node
// epoch is ~117 KB instead of ~273 KB, and each of 1,000 members parses it in ~0.4 ms
// instead of 6-13 ms (unit.zk_records_test; docs/performance.md, "ZooKeeper membership").
// Format 1 (JSON only: "nodes" [MemberInfo], "incarnations" {uuid: "0x.."}; a change
// record's "added"/"removed" [MemberInfo]) is still read, never written.
//
// Decoders return EBADMSG naming the record and the first bad line or field.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cluster/membership.h"
#include "common/status.h"

namespace kelpie::zookeeper_records {

// P/current: the epoch and each node's session (its incarnation).
struct Full {
  EpochRecord record;  // nodes sorted by id
  std::map<Uuid, int64_t> incarnations;
};

// P/epochs/<n>: the previous epoch is this one without `added` (by id), plus
// `removed`; `incarnations` are the added nodes' sessions.
struct Change {
  EpochRecord header;  // no nodes
  std::vector<MemberInfo> added, removed;
  std::map<Uuid, int64_t> incarnations;
  uint32_t nodes_crc = 0;  // of the epoch's node ids (nodes_crc() below)
};

// `record.nodes` must be sorted by id; a node missing from `incarnations` gets 0.
std::string encode_full(const EpochRecord& record, const std::map<Uuid, int64_t>& incarnations);
Result<Full> decode_full(const std::string& bytes, const std::string& what);

std::string encode_change(const Change& change);
Result<Change> decode_change(const std::string& bytes, const std::string& what);

// crc32c of the epoch's node ids, each in its canonical text form, in sorted order.
// REQUIRES: `nodes` sorted by id (as every epoch record is).
uint32_t nodes_crc(const std::vector<MemberInfo>& nodes);

}  // namespace kelpie::zookeeper_records
