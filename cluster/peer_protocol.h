// The peer protocol: what kelpied nodes say to each other (docs/protocol.md).
//
// Contract:
//  - TCP or a Unix socket ("unix:/path"). The client opens with HELLO (protocol
//    version, cluster UUID, its node UUID, the node UUID it expects to reach); the
//    server refuses a wrong cluster, node or version with a reply whose status is
//    EPROTO/EINVAL and a message saying which, then closes.
//  - Then requests and replies, each a frame: a fixed header (magic, version, op,
//    request id, sender epoch, status, payload length, crc32c of header and payload)
//    and a payload. Replies carry the request's id and may come in any order. A frame
//    with a bad magic, version, length or crc closes the connection.
//  - Every request carries the sender's epoch; a server at another epoch answers
//    kEpochMismatch with its own epoch in the reply header and does nothing.
//  - Status in replies: 0, a positive errno (EIO, ENOENT, ESTALE, ENOSPC, ...), or
//    kEpochMismatch. Error replies may carry a message (UTF-8) as payload.
//  - kHold (rule 4, cluster/replica_resync.h) is newer than the other ops: a node that
//    does not know it closes the connection (unknown op), which the resyncer reads as
//    "not held". Only a node that granted a hold is ever sent kPeerFlagHeld.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/uuid.h"
#include "engine/buffer.h"
#include "engine/object_id.h"
#include "engine/object_version.h"

namespace kelpie {

constexpr uint16_t kPeerProtocolVersion = 1;
// Not an errno: "I am at another epoch" (reply epoch = the server's).
constexpr int32_t kEpochMismatch = 10000;
// Not an errno: "that object is not recovered here yet; ask again" (never sent to
// NBD clients; the replicated store waits and retries).
constexpr int32_t kNotReady = 10001;
constexpr uint32_t kMaxPeerPayload = (64u << 20) + (1u << 20);

enum class PeerOp : uint16_t {
  kHello = 1,
  kRead = 2,          // id, offset, length -> data
  kWrite = 3,         // id, offset, flags(fua, create), object_size, version, data
  kZero = 4,          // id, offset, length, flags(fua), version
  kCreateFrom = 5,    // id (dst), src, version
  kRemove = 6,        // id
  kSync = 7,          // -> every write this node acknowledged before is durable
  kListObjects = 8,   // -> every object this node holds, with versions (recovery)
  kFetchObject = 9,   // id -> version, object_size, whole object data (recovery)
  kObjectVersion = 10,  // id -> version, object_size; ENOENT if absent
  kAdmin = 11,        // JSON text -> JSON text (admin requests forwarded between nodes)
  kHold = 12,         // id, hold_token, lease_ms, flags(release): a resync's write hold
};

constexpr uint32_t kPeerFlagFua = 1;
constexpr uint32_t kPeerFlagCreate = 2;
// kRead/kFetchObject for a recovery source: serve even an unverified copy (the
// caller compares versions itself).
constexpr uint32_t kPeerFlagRecovery = 4;
// kListObjects: "also tell me which epochs you recovered". The reply then carries the
// same flag and 16 more bytes after the list (docs/protocol.md). A node that does not
// know the flag ignores it and answers the plain list, which a caller reads as
// "recovered through no epoch"; a caller that does not set it gets the plain list.
constexpr uint32_t kPeerFlagRecoveredThrough = 16;
// kWrite of a whole object (with kPeerFlagCreate) by a resync (rule 4, cluster/
// replica_resync.h): install it durably at `version` unless the copy held is newer
// (then EAGAIN and nothing changes); exempt from the full ratio.
constexpr uint32_t kPeerFlagResync = 8;
// kObjectVersion: "is your copy durable?" (DESIGN.md rule 7, cluster/old_copies.h). The
// replica first makes its copy durable (fdatasync, the store's sync path: a failure is
// never retried) and answers with the same flag in the reply header: status 0 — the
// version answered is durable there; ENOENT — that node completed the recovery of this
// epoch and holds no copy (it was removed on purpose). A node that does not know the
// flag ignores it and answers without it, which a caller reads as "not known durable";
// a caller that does not set it gets the plain answer.
constexpr uint32_t kPeerFlagDurable = 32;
// kHold: release the hold `hold_token` on `id` (without it: place or renew it).
// Placing: from then until the lease (`lease_ms`) ends or the hold is released, the
// node answers kNotReady to every kWrite, kZero, kRemove and kCreateFrom (as the
// destination) of `id` except a resync install carrying the token (kPeerFlagHeld), and
// it answers the hold only once no write it admitted earlier to `id` is still being
// applied. A hold by another token that has not expired: EBUSY. Releasing an unknown
// or expired token: 0, nothing done.
constexpr uint32_t kPeerFlagRelease = 64;
// kWrite with kPeerFlagResync: "installed under my hold": the request's fields carry 8
// more bytes, hold_token (docs/protocol.md). The node installs only while that hold is
// live on `id` (else EAGAIN, nothing changed).
constexpr uint32_t kPeerFlagHeld = 128;
// The longest lease a node grants (a longer one asked is cut to this).
constexpr uint32_t kMaxHoldLeaseMs = 10000;

struct PeerHello {
  uint16_t protocol_version = kPeerProtocolVersion;
  Uuid cluster{};
  Uuid sender{};
  Uuid expected_receiver{};
};

// One request. `data` is the write payload (kWrite), the JSON text (kAdmin), or empty.
struct PeerRequest {
  PeerOp op = PeerOp::kRead;
  uint64_t epoch = 0;
  ObjectId id;
  ObjectId src;           // kCreateFrom
  uint64_t offset = 0;
  uint64_t length = 0;    // kRead, kZero
  uint32_t object_size = 0;
  uint32_t flags = 0;
  ObjectVersion version;
  uint64_t hold_token = 0;  // kHold; kWrite with kPeerFlagHeld
  uint32_t lease_ms = 0;    // kHold (placing)
  std::span<const uint8_t> data;
};

struct ListedObject {
  ObjectId id;
  ObjectVersion version;
  uint32_t object_size = 0;
};

// One reply. For kRead/kFetchObject/kAdmin `data` holds the bytes (a pooled
// Buffer; empty when a kRead was received straight into the caller's span); for
// kListObjects `objects` (and recovered_through); on error `message` may explain.
struct PeerReply {
  int32_t status = 0;
  uint64_t epoch = 0;
  ObjectVersion version;
  uint32_t object_size = 0;
  Buffer data;
  std::vector<ListedObject> objects;
  // kListObjects asked with kPeerFlagRecoveredThrough: the last epoch whose recovery
  // the node completed, and bit i of recovered_earlier: it completed epoch
  // recovered_through-1-i too (cluster/recovery_authority.h, RecoveredEpochs). Read
  // before it listed `objects`.
  std::optional<uint64_t> recovered_through;
  uint64_t recovered_earlier = 0;
  // kObjectVersion asked with kPeerFlagDurable, and honoured (the reply carries the
  // flag): with status 0 `version` is durable on that node; with ENOENT that node
  // completed the recovery of this epoch without a copy.
  bool durable = false;
  std::string message;
};

}  // namespace kelpie
