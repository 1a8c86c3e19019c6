// EpochState: the epoch this node works in, published to every reactor.
//
// Contract:
//  - An EpochView is immutable: the epoch record, its ring, and where this node is
//    in it. publish() (from the membership driver's thread) hands the new view to
//    every reactor as a message; on a reactor, current() is that reactor's copy — no
//    lock on the data path. latest() is for control-plane threads (short mutex).
//  - Views only move forward: publishing an epoch not newer than the latest is
//    ignored.
//  - wait_newer(e, deadline) (on a reactor) returns once this reactor's view is
//    newer than e, or false at the deadline; it polls the reactor's own slot.
//  - The lease: serving() (on a reactor) is true while the membership driver's
//    lease holds and this reactor already has the newest epoch the driver gave.
//    Every client request and replica request checks it and holds (waits) or is
//    refused while it is false, so a node that stalled or lost touch never serves
//    under an epoch view it can no longer vouch for (DESIGN.md, Coordination).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "cluster/membership.h"
#include "cluster/ring.h"
#include "engine/reactor_pool.h"

namespace kelpie {

struct EpochView {
  EpochRecord record;
  Ring ring;
  // Aligned with ring.nodes(): members_[i] is ring node i.
  std::vector<MemberInfo> members;
  std::optional<NodeIndex> self;  // this node's index, if it is a storage node of the epoch

  uint64_t epoch() const { return record.epoch; }
  const MemberInfo& member(NodeIndex i) const { return members[i]; }
  ReplicaSet replicas(const ObjectId& id) const {
    return ring.replicas(id, record.copies == 0 ? 1 : record.copies);
  }
  bool holds(const ObjectId& id) const { return self && replicas(id).contains(*self); }
};

// Builds the view of `record` for node `self_id`.
Result<std::shared_ptr<const EpochView>> make_epoch_view(const EpochRecord& record,
                                                         const Uuid& self_id);

class EpochState {
 public:
  explicit EpochState(const ReactorPool& reactors);

  void publish(std::shared_ptr<const EpochView> view);
  // On a reactor: that reactor's view (null before the first epoch).
  const std::shared_ptr<const EpochView>& current() const;
  // Any thread.
  std::shared_ptr<const EpochView> latest() const;
  uint64_t latest_epoch() const { return latest_epoch_.load(std::memory_order_acquire); }

  // Where the lease comes from; set once, before any request (none: always held).
  void set_lease(const MembershipDriver* driver) { lease_.store(driver, std::memory_order_release); }
  bool serving() const;
  // The driver's lease_breaks() (0 without a driver): see MembershipDriver.
  uint64_t lease_breaks() const {
    const MembershipDriver* driver = lease_.load(std::memory_order_acquire);
    return driver == nullptr ? 0 : driver->lease_breaks();
  }
  // Polls serving() every 5 ms until it holds (true) or the deadline (false).
  Task<bool> wait_serving(std::chrono::steady_clock::time_point deadline) const;

  Task<bool> wait_newer(uint64_t epoch, std::chrono::steady_clock::time_point deadline) const;
  // Waits until this reactor has any epoch at all.
  Task<bool> wait_any(std::chrono::steady_clock::time_point deadline) const;

 private:
  struct alignas(64) Slot {
    std::shared_ptr<const EpochView> view;
  };
  const ReactorPool& reactors_;
  std::vector<Slot> slots_;
  mutable std::mutex mutex_;
  std::shared_ptr<const EpochView> latest_;
  std::atomic<uint64_t> latest_epoch_{0};
  std::atomic<const MembershipDriver*> lease_{nullptr};
};

}  // namespace kelpie
