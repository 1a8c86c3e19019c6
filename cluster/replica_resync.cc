#include "cluster/replica_resync.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/crc32c.h"
#include "common/log.h"
#include "common/uuid.h"

namespace kelpie {

namespace {

uint64_t new_hold_token() {
  Uuid random = make_uuid();
  uint64_t token = 0;
  std::memcpy(&token, random.data(), sizeof(token));
  return token == 0 ? 1 : token;
}

bool same_content(const ReplicaCopy& a, const ReplicaCopy& b) {
  return a.object_size == b.object_size && a.crc == b.crc && a.data.size() == b.data.size() &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size()) == 0;
}

}  // namespace

CopyChoice choose_copy(std::span<const ReplicaCopy> copies, std::span<const NodeIndex> suspects) {
  CopyChoice choice;
  choice.problems.assign(copies.size(), CopyProblem::kNone);
  std::optional<ObjectVersion> newest;
  for (const ReplicaCopy& c : copies) {
    if (c.status && (!newest || c.version > *newest)) newest = c.version;
  }
  auto suspect = [&](NodeIndex node) {
    return std::find(suspects.begin(), suspects.end(), node) != suspects.end();
  };
  if (newest) {
    // Group the newest copies by content; the first member of a group represents it.
    struct Group {
      size_t first;
      size_t count = 0;
      bool trusted = false;  // held by a node that is not a suspect
    };
    std::vector<Group> groups;
    for (size_t i = 0; i < copies.size(); ++i) {
      const ReplicaCopy& c = copies[i];
      if (!c.status || c.version != *newest) continue;
      auto it = std::find_if(groups.begin(), groups.end(),
                             [&](const Group& g) { return same_content(copies[g.first], c); });
      if (it == groups.end()) it = groups.insert(groups.end(), Group{i});
      it->count++;
      it->trusted = it->trusted || !suspect(c.node);
    }
    const Group* best = nullptr;
    for (const Group& g : groups) {  // in replica-set order: ties keep the earlier
      if (!best || g.count > best->count || (g.count == best->count && g.trusted && !best->trusted)) {
        best = &g;
      }
    }
    choice.chosen = best->first;
  }
  for (size_t i = 0; i < copies.size(); ++i) {
    const ReplicaCopy& c = copies[i];
    if (!c.status) {
      choice.problems[i] = c.status.code() == ENOENT ? CopyProblem::kMissing
                           : c.status.code() == EIO  ? CopyProblem::kBadChecksum
                                                     : CopyProblem::kUnreachable;
    } else if (choice.chosen && c.version < copies[*choice.chosen].version) {
      choice.problems[i] = CopyProblem::kStale;
    } else if (choice.chosen && !same_content(c, copies[*choice.chosen])) {
      choice.problems[i] = CopyProblem::kDiffers;
    }
  }
  return choice;
}

std::string describe_problem(CopyProblem problem, const ReplicaCopy& copy) {
  switch (problem) {
    case CopyProblem::kNone: return "";
    case CopyProblem::kMissing: return "missing copy";
    case CopyProblem::kBadChecksum: return "bad checksum";
    case CopyProblem::kUnreachable: return "unreachable (" + copy.status.message() + ")";
    case CopyProblem::kStale: return "stale version";
    case CopyProblem::kDiffers: return "differs";
  }
  return "";
}

Task<Result<PeerReply>> ReplicaResync::send(const EpochView& view, NodeIndex node,
                                            const PeerRequest& request) {
  if (view.self && node == *view.self) {
    co_return Result<PeerReply>(co_await local_.apply(request, {}));
  }
  const MemberInfo& member = view.member(node);
  co_return co_await peers_.call(member.id, member.peer_address, request);
}

Task<ReplicaCopy> ReplicaResync::fetch(const EpochView& view, NodeIndex node, ObjectId id) {
  PeerRequest request;
  request.op = PeerOp::kFetchObject;
  request.epoch = view.epoch();
  request.id = id;
  request.flags = kPeerFlagRecovery;
  ReplicaCopy copy;
  copy.node = node;
  auto reply = co_await send(view, node, request);
  if (!reply) {
    copy.status = reply.status();
    if (copy.status.code() == ENOENT || copy.status.code() == EIO) {
      copy.status = Status::error(EHOSTUNREACH, copy.status.message());  // transport, not the copy
    }
  } else if (reply->status != 0) {
    int code = reply->status == kEpochMismatch || reply->status == kNotReady ? EAGAIN : reply->status;
    copy.status = Status::error(code, reply->message.empty() ? "not ready" : reply->message);
  } else {
    copy.version = reply->version;
    copy.object_size = reply->object_size;
    copy.crc = crc32c(reply->data.data(), reply->data.size());
    copy.data = std::move(reply->data);
  }
  co_return copy;
}

PeerRequest ReplicaResync::hold_request(const EpochView& view, ObjectId id, uint64_t token,
                                        bool release) const {
  PeerRequest request;
  request.op = PeerOp::kHold;
  request.epoch = view.epoch();
  request.id = id;
  request.hold_token = token;
  request.lease_ms = static_cast<uint32_t>(hold_lease_.count());
  request.flags = release ? kPeerFlagRelease : 0;
  return request;
}

Task<ReplicaResync::Holds> ReplicaResync::place_holds(const EpochView& view, ObjectId id,
                                                      const std::vector<NodeIndex>& nodes) {
  Holds holds;
  holds.token = new_hold_token();
  holds.held.assign(nodes.size(), false);
  holds.why_not.assign(nodes.size(), "");
  const PeerRequest place = hold_request(view, id, holds.token, false);
  for (size_t i = 0; i < nodes.size(); ++i) {
    auto reply = co_await send(view, nodes[i], place);
    if (reply && reply->status == 0) {
      holds.held[i] = true;
    } else if (reply) {
      holds.refused = true;  // it answered: it may take writes a rewrite would race
      if (reply->status == EBUSY) holds.busy = true;
      holds.why_not[i] = "write hold refused: " + (reply->message.empty()
                                                        ? "status " + std::to_string(reply->status)
                                                        : reply->message);
    } else {
      holds.why_not[i] = "no write hold: " + reply.status().message();
    }
  }
  co_return holds;
}

Task<void> ReplicaResync::release_holds(const EpochView& view, ObjectId id,
                                        const std::vector<NodeIndex>& nodes, const Holds& holds) {
  const PeerRequest release = hold_request(view, id, holds.token, true);
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!holds.held[i]) continue;
    auto reply = co_await send(view, nodes[i], release);
    if (!reply || reply->status != 0) {
      KELPIE_LOG_WARN("releasing the resync hold of object {} on node {} failed ({}); it ends "
                      "with its lease",
                      id.to_hex(), uuid_to_string(view.member(nodes[i]).id),
                      reply ? reply->message : reply.status().to_string());
    }
  }
}

Task<bool> ReplicaResync::rewrite(const EpochView& view, ObjectId id, NodeIndex node,
                                  const ReplicaCopy& best, uint64_t hold_token) {
  PeerRequest write;
  write.op = PeerOp::kWrite;
  write.epoch = view.epoch();
  write.id = id;
  write.offset = 0;
  write.length = best.data.size();
  write.object_size = best.object_size;
  write.flags = kPeerFlagCreate | kPeerFlagFua | kPeerFlagResync;
  if (hold_token != 0) {
    write.flags |= kPeerFlagHeld;
    write.hold_token = hold_token;
  }
  write.version = best.version;
  write.data = std::span<const uint8_t>(best.data.data(), best.data.size());
  auto reply = co_await send(view, node, write);
  const bool repaired = reply && reply->status == 0;
  if (!repaired) {
    KELPIE_LOG_WARN("resync of object {} on node {} failed: {}", id.to_hex(),
                    uuid_to_string(view.member(node).id),
                    reply ? reply->message : reply.status().to_string());
  }
  co_return repaired;
}

Task<ResyncOutcome> ReplicaResync::run(const EpochView& view, ObjectId id, bool repair,
                                       std::vector<NodeIndex> suspects, ResyncHold hold) {
  ResyncOutcome outcome;
  ReplicaSet set = view.replicas(id);
  std::vector<NodeIndex> nodes(set.begin(), set.end());
  // The write hold (header): placed on every replica before anything is fetched;
  // without it every replica counts as held (the caller orders itself).
  const bool holding = hold == ResyncHold::kHoldWrites;
  Holds holds;
  if (holding) {
    // Another resync of this object (the unclean-restart resyncs of several nodes,
    // a `cluster check --repair`) holds it for a moment: let go of what we hold
    // and try again shortly, for up to two leases. Replicas are asked in
    // replica-set order by every resyncer, so the first to reach the primary wins.
    const auto deadline = std::chrono::steady_clock::now() + 2 * hold_lease_;
    auto pause = std::chrono::milliseconds(5);
    for (;;) {
      holds = co_await place_holds(view, id, nodes);
      if (!holds.busy || std::chrono::steady_clock::now() >= deadline) break;
      co_await release_holds(view, id, nodes, holds);
      co_await sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(200));
    }
  } else {
    holds.held.assign(nodes.size(), true);
    holds.why_not.assign(nodes.size(), "");
  }
  std::vector<ReplicaCopy> copies;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (holds.held[i]) {
      copies.push_back(co_await fetch(view, nodes[i], id));
    } else {
      ReplicaCopy copy;
      copy.node = nodes[i];
      copy.status = Status::error(EAGAIN, holds.why_not[i]);  // unreachable: not judged, not rewritten
      copies.push_back(std::move(copy));
    }
  }
  outcome.copies = copies.size();
  CopyChoice choice = choose_copy(copies, suspects);
  outcome.complete = true;
  if (!choice.chosen) {
    outcome.complete = std::all_of(copies.begin(), copies.end(), [](const ReplicaCopy& c) {
      return c.status.code() == ENOENT;  // absent everywhere: nothing to resync
    });
    if (!outcome.complete) outcome.issues.push_back({0, "no readable copy", false});
  } else {
    outcome.readable = true;
    const ReplicaCopy& best = copies[*choice.chosen];
    outcome.chosen = best.node;
    for (size_t i = 0; i < copies.size(); ++i) {
      CopyProblem problem = choice.problems[i];
      if (problem == CopyProblem::kNone) continue;
      const ReplicaCopy& c = copies[i];
      ResyncIssue issue{c.node, describe_problem(problem, c), false};
      if (repair && !holds.refused && problem != CopyProblem::kUnreachable) {
        issue.repaired = co_await rewrite(view, id, c.node, best, holding ? holds.token : 0);
      }
      if (!issue.repaired) outcome.complete = false;
      outcome.issues.push_back(std::move(issue));
    }
  }
  if (holding) co_await release_holds(view, id, nodes, holds);
  co_return outcome;
}

}  // namespace kelpie
