#include "cluster/recovery_authority.h"

#include <algorithm>
#include <cerrno>

namespace kelpie {

RecoveredEpochs::Answer RecoveredEpochs::completed(uint64_t epoch) const {
  if (!reported) return Answer::kUnknown;
  if (through == 0 || epoch > through) return Answer::kNo;
  if (epoch == through) return Answer::kYes;
  uint64_t back = through - 1 - epoch;
  if (back >= kWindow) return Answer::kUnknown;
  return (earlier >> back) & 1 ? Answer::kYes : Answer::kNo;
}

RecoveredEpochs RecoveredEpochs::advanced_to(uint64_t epoch) const {
  KELPIE_ASSERT(epoch > through);
  uint64_t shift = epoch - through;
  RecoveredEpochs next(epoch, shift >= kWindow ? 0 : earlier << shift);
  if (through > 0 && shift - 1 < kWindow) next.earlier |= uint64_t{1} << (shift - 1);
  return next;
}

Result<EpochHistory> EpochHistory::build(std::vector<EpochRecord> records, uint64_t current) {
  while (!records.empty() && records.back().epoch > current) records.pop_back();
  if (records.empty() || records.back().epoch != current) {
    return Status::error(EINVAL, "epoch " + std::to_string(current) + " is not in the history");
  }
  for (size_t i = 1; i < records.size(); ++i) {
    if (records[i].epoch != records[i - 1].epoch + 1) {
      return Status::error(EINVAL, "epoch history has a gap before epoch " +
                                       std::to_string(records[i].epoch));
    }
  }
  EpochHistory history;
  history.records_ = std::move(records);
  history.rings_.resize(history.records_.size());
  return history;
}

bool EpochHistory::starts_at_format() const {
  return records_.front().epoch == 1 || records_.front().reason == "format";
}

const EpochRecord& EpochHistory::record(uint64_t epoch) const {
  KELPIE_ASSERT(epoch >= oldest() && epoch <= current());
  return records_[epoch - oldest()];
}

const Ring& EpochHistory::ring(uint64_t epoch) const {
  KELPIE_ASSERT(epoch >= oldest() && epoch <= current());
  std::unique_ptr<Ring>& slot = rings_[epoch - oldest()];
  if (!slot) {
    std::vector<RingNode> nodes;
    for (const MemberInfo& m : record(epoch).nodes) {
      nodes.push_back(RingNode{m.id, m.zone, m.gateway ? 0 : m.vnodes, m.gateway});
    }
    Result<Ring> built = Ring::build(std::move(nodes));
    // An epoch record that made no ring was refused when it was the current one;
    // an empty ring places nothing, so its epoch counts as not writable.
    slot = std::make_unique<Ring>(built ? std::move(*built) : Ring());
  }
  return *slot;
}

std::vector<Uuid> EpochHistory::replicas(uint64_t epoch, const ObjectId& id) const {
  const Ring& r = ring(epoch);
  uint32_t copies = std::max<uint32_t>(1, record(epoch).copies);
  std::vector<Uuid> out;
  for (NodeIndex node : r.replicas(id, std::min<size_t>(copies, kMaxCopies))) {
    out.push_back(r.nodes()[node].id);
  }
  return out;
}

bool EpochHistory::is_member(uint64_t epoch, const Uuid& node) const {
  const auto& nodes = record(epoch).nodes;
  return std::any_of(nodes.begin(), nodes.end(), [&](const MemberInfo& m) { return m.id == node; });
}

bool EpochHistory::writable(uint64_t epoch, const ObjectId& id) const {
  uint32_t min_copies = std::max<uint32_t>(1, record(epoch).min_copies);
  return replicas(epoch, id).size() >= min_copies;
}

namespace {

bool contains(const std::vector<Uuid>& set, const Uuid& id) {
  return std::find(set.begin(), set.end(), id) != set.end();
}

// Could cleanup of epoch j have run under the old whole-epoch rule? Only once every
// member of j completed j: not if a member that answered says it did not. (Per-object
// removal, rule 7, does not wait for that; cluster/old_copies.h argues why a walk that
// relies on this stays sound.)
bool cleanup_may_have_run(const EpochHistory& history, const HeardNodes& heard, uint64_t j) {
  for (const MemberInfo& m : history.record(j).nodes) {
    auto it = heard.find(m.id);
    if (it != heard.end() && it->second.completed(j) == RecoveredEpochs::Answer::kNo) return false;
  }
  return true;
}

// Could `node` have dropped its copy of X after epoch k (F2: cleanup of an epoch j,
// k < j, while a member outside R_j(X))? Cleanup of the current epoch waits for this
// node's own recovery: not yet.
bool may_have_dropped(const EpochHistory& history, const HeardNodes& heard, const ObjectId& id,
                      const Uuid& node, uint64_t k) {
  for (uint64_t j = k + 1; j < history.current(); ++j) {
    if (history.is_member(j, node) && !contains(history.replicas(j, id), node) &&
        cleanup_may_have_run(history, heard, j)) {
      return true;
    }
  }
  return false;
}

}  // namespace

AuthorityDecision decide_authority(const EpochHistory& history, const ObjectId& id,
                                   const HeardNodes& heard, std::span<const Uuid> listed) {
  auto has_listed = [&](const Uuid& node) {
    return std::find(listed.begin(), listed.end(), node) != listed.end();
  };
  AuthorityDecision decision;
  for (uint64_t k = history.current(); k >= history.oldest(); --k) {
    const std::vector<Uuid> set = history.replicas(k, id);
    bool covered = false;
    for (const Uuid& member : set) {
      auto it = heard.find(member);
      if (it == heard.end()) continue;
      // Its completed recovery vouches only for copies it has: an object nobody
      // listed in epoch k was invisible to that recovery.
      bool listed_here = has_listed(member);
      if (listed_here && it->second.completed(k) == RecoveredEpochs::Answer::kYes) {
        decision.kind = AuthorityDecision::Kind::kAuthoritative;
        decision.epoch = k;
        return decision;
      }
      if (listed_here || !may_have_dropped(history, heard, id, member, k)) {
        covered = true;
      }
    }
    // No write of the current epoch was acknowledged before this decision (F1).
    if (!covered && k < history.current() && history.writable(k, id)) {
      decision.kind = AuthorityDecision::Kind::kUnavailable;
      decision.epoch = k;
      for (const Uuid& member : set) {
        if (!heard.contains(member)) decision.absent.push_back(member);
      }
      if (decision.absent.empty()) decision.absent = set;  // heard, but their copies went
      return decision;
    }
    if (k == history.oldest()) break;  // also keeps an unsigned k from wrapping at 0
  }
  decision.kind = history.starts_at_format() ? AuthorityDecision::Kind::kAuthoritative
                                             : AuthorityDecision::Kind::kHistoryStart;
  decision.epoch = history.oldest();
  return decision;
}

std::string describe_unavailable(const AuthorityDecision& decision) {
  std::string text = "epoch " + std::to_string(decision.epoch) + " was writable and none of ";
  for (size_t i = 0; i < decision.absent.size(); ++i) {
    if (i > 0) text += ", ";
    text += uuid_to_string(decision.absent[i]);
  }
  text += " answered";
  return text;
}

}  // namespace kelpie
