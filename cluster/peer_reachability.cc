#include "cluster/peer_reachability.h"

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "cluster/membership_codec.h"

namespace kelpie {

using nlohmann::json;

// ---- the report in a member status ----------------------------------------------

namespace {

json uuid_list(const std::vector<Uuid>& ids) {
  json list = json::array();
  for (const Uuid& id : ids) list.push_back(uuid_to_string(id));
  return list;
}

std::optional<std::vector<Uuid>> parse_list(const json& doc, const char* key) {
  std::vector<Uuid> ids;
  if (!doc.contains(key)) return ids;
  const json& list = doc[key];
  if (!list.is_array()) return std::nullopt;
  for (const json& item : list) {
    if (!item.is_string()) return std::nullopt;
    std::optional<Uuid> id = parse_uuid(item.get<std::string>());
    if (!id) return std::nullopt;
    ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace

std::string reachability_report_json(const ReachabilityReport& report) {
  json doc;
  doc["epoch"] = report.epoch;
  doc["failing"] = uuid_list(report.failing);
  doc["nodes"] = uuid_list(report.unreachable);
  return doc.dump();
}

std::optional<ReachabilityReport> parse_reachability_report(const std::string& status_json) {
  json status = json::parse(status_json, nullptr, false);
  if (status.is_discarded() || !status.is_object() || !status.contains(kReachabilityStatusKey)) {
    return std::nullopt;
  }
  const json& doc = status[kReachabilityStatusKey];
  if (!doc.is_object() || !doc.contains("epoch") || !doc["epoch"].is_number_unsigned()) return std::nullopt;
  ReachabilityReport report;
  report.epoch = doc["epoch"].get<uint64_t>();
  auto failing = parse_list(doc, "failing");
  auto nodes = parse_list(doc, "nodes");
  if (!failing || !nodes) return std::nullopt;
  report.failing = std::move(*failing);
  report.unreachable = std::move(*nodes);
  return report;
}

// ---- PeerReachability -----------------------------------------------------------

void PeerReachability::note_failure(const Uuid& node, const std::string& why, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto [it, added] = failing_.try_emplace(node, Entry{now, why, false});
  if (added) {
    failing_count_.fetch_add(1, std::memory_order_release);
  } else {
    it->second.last_error = why;
  }
}

void PeerReachability::note_success(const Uuid& node) {
  if (failing_count_.load(std::memory_order_acquire) == 0) return;
  std::lock_guard lock(mutex_);
  if (failing_.erase(node) > 0) failing_count_.fetch_sub(1, std::memory_order_release);
}

void PeerReachability::set_epoch(uint64_t epoch, const std::vector<Uuid>& members) {
  std::vector<Uuid> sorted = members;
  std::sort(sorted.begin(), sorted.end());
  std::lock_guard lock(mutex_);
  for (auto it = failing_.begin(); it != failing_.end();) {
    const bool listed = std::binary_search(sorted.begin(), sorted.end(), it->first);
    const bool was_listed = std::binary_search(members_.begin(), members_.end(), it->first);
    if (listed && !was_listed) {
      it = failing_.erase(it);
      failing_count_.fetch_sub(1, std::memory_order_release);
    } else {
      ++it;
    }
  }
  epoch_ = epoch;
  members_ = std::move(sorted);
}

void PeerReachability::retain(const std::vector<Uuid>& keep) {
  std::vector<Uuid> sorted = keep;
  std::sort(sorted.begin(), sorted.end());
  std::lock_guard lock(mutex_);
  for (auto it = failing_.begin(); it != failing_.end();) {
    if (!std::binary_search(sorted.begin(), sorted.end(), it->first)) {
      it = failing_.erase(it);
      failing_count_.fetch_sub(1, std::memory_order_release);
    } else {
      ++it;
    }
  }
}

ReachabilityReport PeerReachability::report(Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  ReachabilityReport out;
  out.epoch = epoch_;
  for (const auto& [node, entry] : failing_) {
    out.failing.push_back(node);
    if (!std::binary_search(members_.begin(), members_.end(), node)) continue;
    if (now - entry.since >= threshold_) out.unreachable.push_back(node);
  }
  return out;
}

std::vector<PeerReachability::Crossed> PeerReachability::newly_unreachable(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  std::vector<Crossed> out;
  for (auto& [node, entry] : failing_) {
    if (entry.reported || now - entry.since < threshold_) continue;
    if (!std::binary_search(members_.begin(), members_.end(), node)) continue;
    entry.reported = true;
    out.push_back({node, now - entry.since, entry.last_error});
  }
  return out;
}

// ---- the decision ---------------------------------------------------------------

bool rejoin_held(const Uuid& self, const std::vector<MemberInfo>& live,
                 const std::map<std::string, std::string>& statuses, std::vector<Uuid>* reporters) {
  bool held = false;
  for (const MemberInfo& member : live) {
    if (member.id == self) continue;
    auto status = statuses.find(uuid_to_string(member.id));
    if (status == statuses.end()) continue;
    std::optional<ReachabilityReport> report = parse_reachability_report(status->second);
    if (!report || !std::binary_search(report->failing.begin(), report->failing.end(), self)) continue;
    held = true;
    if (reporters != nullptr) reporters->push_back(member.id);
  }
  return held;
}

EvictionDecision decide_eviction(const EvictionInput& input) {
  EvictionDecision decision;
  std::set<Uuid> in_epoch;
  for (const MemberInfo& node : input.epoch.nodes) in_epoch.insert(node.id);
  std::map<Uuid, std::vector<Uuid>> reporters;  // suspect -> reporters (sorted: live is by id)
  std::set<Uuid> probe;
  std::vector<MemberInfo> live = input.live;
  std::sort(live.begin(), live.end(), [](const MemberInfo& a, const MemberInfo& b) { return a.id < b.id; });
  for (const MemberInfo& member : live) {
    if (!member.gateway && !in_epoch.contains(member.id)) continue;  // out of the epoch: no say
    auto status = input.statuses.find(uuid_to_string(member.id));
    if (status == input.statuses.end()) continue;
    std::optional<ReachabilityReport> report = parse_reachability_report(status->second);
    if (!report || report->epoch != input.epoch.epoch) continue;
    for (const Uuid& node : report->failing) {
      if (node != input.self && node != member.id && in_epoch.contains(node)) probe.insert(node);
    }
    for (const Uuid& node : report->unreachable) {
      if (node == member.id || !in_epoch.contains(node)) continue;
      std::vector<Uuid>& list = reporters[node];
      if (list.empty() || list.back() != member.id) list.push_back(member.id);
    }
  }
  decision.probe.assign(probe.begin(), probe.end());
  for (auto& [node, list] : reporters) {
    EvictionDecision::Suspect suspect{node, std::move(list), std::nullopt};
    for (const Uuid& reporter : suspect.reporters) {
      if (in_epoch.contains(reporter)) {
        suspect.decider = reporter;
        break;
      }
    }
    if (!decision.evict && suspect.reporters.size() >= kMinReporters && suspect.decider == input.self &&
        input.self_serving && node != input.self) {
      decision.evict = node;
    }
    decision.suspects.push_back(std::move(suspect));
  }
  return decision;
}

}  // namespace kelpie
