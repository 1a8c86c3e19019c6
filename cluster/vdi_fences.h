// VdiFences: a storage node's per-VDI write fence (DESIGN.md, "Replication and
// consistency": replicas refuse lower generations of a VDI and remember the highest
// across restarts).
//
// Contract:
//  - The fence of a VDI (keyed by head id) is the highest attach generation the VDI
//    directory ever granted for it, as this node has learned it: learn() is fed every
//    version of the directory this node loads or writes (VdiDirectory's writers
//    listener), and only raises. The directory is durable in the membership service,
//    so a restarted node relearns its fences before loaded() turns true: that is how
//    the fences survive restarts without a file of their own.
//  - admit() is asked for every client-path update a replica applies (write, zero,
//    copy-on-write, remove; not resync or recovery installs, which carry the chosen
//    copy's version): kNotReady until the first learn(), ESTALE when the update's
//    generation is below its VDI's fence (an old gateway: a newer attach was granted),
//    OK otherwise and for updates without a version.
//  - Any thread; one shared mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/object_id.h"

namespace kelpie {

class VdiFences {
 public:
  void learn(const std::vector<std::pair<VdiId, uint64_t>>& grants) {
    {
      std::unique_lock lock(mutex_);
      for (const auto& [head, generation] : grants) {
        uint64_t& fence = fences_[head];
        fence = std::max(fence, generation);
      }
    }
    loaded_.store(true, std::memory_order_release);
  }
  bool loaded() const { return loaded_.load(std::memory_order_acquire); }
  uint64_t fence(VdiId head) const {
    std::shared_lock lock(mutex_);
    auto it = fences_.find(head);
    return it == fences_.end() ? 0 : it->second;
  }
  // 0 = admitted; else the errno-like code of the refusal (ESTALE, or `not_ready`).
  int admit(VdiId owner, uint64_t generation, int not_ready) const {
    if (!loaded()) return not_ready;
    if (generation == 0) return 0;
    return generation < fence(owner) ? ESTALE : 0;
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<VdiId, uint64_t> fences_;
  std::atomic<bool> loaded_{false};
};

}  // namespace kelpie
