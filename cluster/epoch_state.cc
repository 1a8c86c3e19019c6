#include "cluster/epoch_state.h"

#include <algorithm>

#include "engine/sync.h"

namespace kelpie {

Result<std::shared_ptr<const EpochView>> make_epoch_view(const EpochRecord& record,
                                                         const Uuid& self_id) {
  std::vector<RingNode> nodes;
  nodes.reserve(record.nodes.size());
  for (const MemberInfo& m : record.nodes) {
    nodes.push_back(RingNode{m.id, m.zone, m.gateway ? 0 : m.vnodes, m.gateway});
  }
  Result<Ring> ring = Ring::build(std::move(nodes));
  if (!ring) return ring.status();
  auto view = std::make_shared<EpochView>();
  view->record = record;
  view->ring = std::move(*ring);
  for (const RingNode& node : view->ring.nodes()) {
    auto it = std::find_if(record.nodes.begin(), record.nodes.end(),
                           [&](const MemberInfo& m) { return m.id == node.id; });
    view->members.push_back(*it);
  }
  view->self = view->ring.find(self_id);
  return std::shared_ptr<const EpochView>(std::move(view));
}

EpochState::EpochState(const ReactorPool& reactors)
    : reactors_(reactors), slots_(reactors.size()) {}

namespace {
Task<void> install_view(Reactor& reactor, std::shared_ptr<const EpochView>* slot,
                        std::shared_ptr<const EpochView> view) {
  co_await switch_to(reactor);
  if (!*slot || (*slot)->epoch() < view->epoch()) *slot = std::move(view);
}
}  // namespace

void EpochState::publish(std::shared_ptr<const EpochView> view) {
  {
    std::lock_guard lock(mutex_);
    if (latest_ && latest_->epoch() >= view->epoch()) return;
    latest_ = view;
    latest_epoch_.store(view->epoch(), std::memory_order_release);
  }
  for (size_t i = 0; i < reactors_.size(); ++i) {
    spawn(install_view(reactors_.at(i), &slots_[i].view, view));
  }
}

const std::shared_ptr<const EpochView>& EpochState::current() const {
  Reactor* reactor = Reactor::current();
  KELPIE_ASSERT(reactor != nullptr);
  return slots_[reactor->index()].view;
}

std::shared_ptr<const EpochView> EpochState::latest() const {
  std::lock_guard lock(mutex_);
  return latest_;
}

Task<bool> EpochState::wait_newer(uint64_t epoch,
                                  std::chrono::steady_clock::time_point deadline) const {
  for (;;) {
    const auto& view = current();
    if (view && view->epoch() > epoch) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    co_await sleep_for(std::chrono::milliseconds(20));
  }
}

bool EpochState::serving() const {
  const auto& view = current();
  if (!view || view->epoch() < latest_epoch_.load(std::memory_order_acquire)) return false;
  const MembershipDriver* driver = lease_.load(std::memory_order_acquire);
  return driver == nullptr || std::chrono::steady_clock::now() < driver->lease_until();
}

Task<bool> EpochState::wait_serving(std::chrono::steady_clock::time_point deadline) const {
  for (;;) {
    if (serving()) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    co_await sleep_for(std::chrono::milliseconds(5));
  }
}

Task<bool> EpochState::wait_any(std::chrono::steady_clock::time_point deadline) const {
  return wait_newer(0, deadline);
}

}  // namespace kelpie
