// What the membership driver tests (local_membership_test.cc,
// zookeeper_membership_test.cc) share: polling with deadlines, a sample member,
// and a recorder of one member's Events. Header-only, for tests only.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/membership.h"
#include "common/uuid.h"

namespace kelpie::membership_test {

using TestClock = std::chrono::steady_clock;

// Polls `condition` every 5 ms until it holds (true) or `timeout` passes (its last value).
template <typename Condition>
bool wait_until(Condition condition, std::chrono::milliseconds timeout) {
  auto deadline = TestClock::now() + timeout;
  while (TestClock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

// Polls `condition` for `duration`: false as soon as it does not hold.
template <typename Condition>
bool holds_for(Condition condition, std::chrono::milliseconds duration) {
  auto deadline = TestClock::now() + duration;
  while (TestClock::now() < deadline) {
    if (!condition()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

// Member `index` of a test cluster: its own zone, made-up addresses, a fresh id.
inline MemberInfo make_member(int index, bool gateway = false) {
  MemberInfo member;
  member.id = make_uuid();
  member.peer_address = "127.0.0.1:" + std::to_string(7000 + index);
  member.admin_address = "127.0.0.1:" + std::to_string(7100 + index);
  member.nbd_address = gateway ? "127.0.0.1:10809" : "";
  member.zone = "z" + std::to_string(index);
  member.vnodes = gateway ? 0 : 128;
  member.gateway = gateway;
  member.capacity_bytes = uint64_t{1} << 30;
  return member;
}

inline std::set<Uuid> ids_of(const EpochRecord& record) {
  std::set<Uuid> ids;
  for (const MemberInfo& node : record.nodes) ids.insert(node.id);
  return ids;
}

// What one member's Events saw. Thread-safe (the driver thread calls it).
struct Recorder {
  std::mutex mutex;
  std::vector<EpochRecord> epochs;
  std::vector<std::string> shared_changes;
  std::atomic<int> shutdowns{0};

  MembershipDriver::Events events() {
    MembershipDriver::Events events;
    events.on_epoch = [this](const EpochRecord& record) {
      std::lock_guard guard(mutex);
      epochs.push_back(record);
    };
    events.on_shared_changed = [this](const std::string& name) {
      std::lock_guard guard(mutex);
      shared_changes.push_back(name);
    };
    events.on_shutdown = [this] { ++shutdowns; };
    return events;
  }
  std::vector<std::string> reasons() {
    std::lock_guard guard(mutex);
    std::vector<std::string> out;
    for (const EpochRecord& record : epochs) out.push_back(record.reason);
    return out;
  }
  std::vector<uint64_t> epoch_numbers() {
    std::lock_guard guard(mutex);
    std::vector<uint64_t> numbers;
    for (const EpochRecord& record : epochs) numbers.push_back(record.epoch);
    return numbers;
  }
  uint64_t last_epoch() {
    std::lock_guard guard(mutex);
    return epochs.empty() ? 0 : epochs.back().epoch;
  }
  bool saw_shared(const std::string& name) {
    std::lock_guard guard(mutex);
    return std::find(shared_changes.begin(), shared_changes.end(), name) != shared_changes.end();
  }
};

}  // namespace kelpie::membership_test
