#include "cluster/old_copies.h"

#include <algorithm>
#include <cerrno>
#include <vector>

#include "common/log.h"
#include "engine/sync.h"

namespace kelpie {

bool old_copy_removable(const ObjectVersion& mine, bool writable,
                        std::span<const ReplicaDurability> replicas) {
  if (!writable || replicas.empty()) return false;
  return std::all_of(replicas.begin(), replicas.end(), [&](const ReplicaDurability& r) {
    switch (r.kind) {
      case ReplicaDurability::Kind::kDurable: return r.version >= mine;
      case ReplicaDurability::Kind::kGone: return true;
      case ReplicaDurability::Kind::kUnknown: return false;
    }
    return false;
  });
}

ReplicaDurability durability_of(const PeerReply& reply) {
  ReplicaDurability answer;
  if (!reply.durable) return answer;  // an old node, or durability not reached
  if (reply.status == 0) {
    answer.kind = ReplicaDurability::Kind::kDurable;
    answer.version = reply.version;
  } else if (reply.status == ENOENT) {
    answer.kind = ReplicaDurability::Kind::kGone;
  }
  return answer;
}

// One pass: the copies to look at, shared by the workers (all on one reactor).
struct OldCopies::State {
  std::shared_ptr<const EpochView> view;
  std::function<bool()> go_on;
  std::vector<StoredObject> unowned;
  size_t next = 0;
  PassResult result;
  WaitGroup workers;
};

OldCopies::OldCopies(LocalStore& store, EpochState& epochs, PeerClient& peers)
    : store_(store), epochs_(epochs), peers_(peers) {}

Task<OldCopies::PassResult> OldCopies::pass(std::shared_ptr<const EpochView> view,
                                            std::function<bool()> go_on) {
  KELPIE_ASSERT(view->self.has_value());
  auto state = std::make_shared<State>();
  state->view = std::move(view);
  state->go_on = std::move(go_on);
  auto mine = co_await store_.list_all();
  if (!mine) {
    KELPIE_LOG_WARN("epoch {}: listing this node's copies failed: {}", state->view->epoch(),
                    mine.status().to_string());
    state->result.failed = true;
    co_return state->result;
  }
  for (const StoredObject& object : *mine) {
    if (!state->view->holds(object.id)) state->unowned.push_back(object);
  }
  if (state->unowned.empty()) co_return state->result;
  const size_t workers = std::min(kMaxInFlight, state->unowned.size());
  for (size_t i = 0; i < workers; ++i) {
    state->workers.add();
    spawn(worker(state));
  }
  co_await state->workers.wait();
  // Objects no worker reached (the pass was told to stop) stay for later.
  state->result.kept += state->unowned.size() - state->next;
  co_return state->result;
}

Task<void> OldCopies::worker(std::shared_ptr<State> state) {
  while (state->next < state->unowned.size() && state->go_on()) {
    StoredObject object = state->unowned[state->next++];
    bool removed = co_await settle(*state, object);
    if (removed) {
      ++state->result.removed;
    } else {
      ++state->result.kept;
    }
  }
  state->workers.done();
}

Task<bool> OldCopies::settle(const State& state, const StoredObject& object) {
  const EpochView& view = *state.view;
  const ReplicaSet replicas = view.replicas(object.id);
  const bool writable = replicas.size() >= std::max<size_t>(1, view.record.min_copies);
  if (!writable || replicas.empty()) co_return false;
  std::vector<ReplicaDurability> answers;
  for (NodeIndex replica : replicas) {
    KELPIE_ASSERT(!(view.self && replica == *view.self));  // not owned here
    if (!state.go_on()) co_return false;
    ReplicaDurability answer = co_await ask(view, replica, object.id);
    answers.push_back(answer);
    if (!old_copy_removable(object.version, true, std::span(&answer, 1))) co_return false;
  }
  if (!old_copy_removable(object.version, writable, answers)) co_return false;
  const uint64_t epoch = view.epoch();
  std::shared_ptr<const EpochView> held = state.view;
  std::function<bool()> go_on = state.go_on;
  EpochState* epochs = &epochs_;
  ObjectId id = object.id;
  // Called on the object's owner reactor under its exclusive lock, right before the unlink.
  std::function<bool()> may_remove = [epochs, epoch, held, id, go_on] {
    return epochs->latest_epoch() == epoch && !held->holds(id) && go_on();
  };
  Status status = co_await store_.remove_old_copy(object.id, object.version, std::move(may_remove));
  if (!status && status.code() != ENOENT && status.code() != ECANCELED && status.code() != EAGAIN) {
    KELPIE_LOG_WARN("epoch {}: removing old copy {} failed: {}", epoch, object.id.to_hex(),
                    status.to_string());
  }
  co_return status.is_ok();
}

Task<ReplicaDurability> OldCopies::ask(const EpochView& view, NodeIndex replica,
                                       const ObjectId& id) {
  PeerRequest request;
  request.op = PeerOp::kObjectVersion;
  request.epoch = view.epoch();
  request.id = id;
  request.flags = kPeerFlagDurable;
  const MemberInfo& member = view.member(replica);
  auto reply = co_await peers_.call(member.id, member.peer_address, request);
  if (!reply) co_return ReplicaDurability{};
  co_return durability_of(*reply);
}

}  // namespace kelpie
