// WriteGrants: the VDI write attaches this gateway holds, each with the per-VDI
// generation the directory granted it (DESIGN.md, "A VDI is writable through one
// gateway at a time").
//
// Contract:
//  - A grant is keyed by the VDI's head id (the owner of the objects it writes) and
//    holds the generation every update of those objects carries, and the membership
//    lease_breaks() count at which the attach was last known to be valid. Objects of
//    VDIs without a grant (directory operations, detached VDIs) are no business of
//    this table.
//  - grant() records (or replaces) a grant and clears a revocation; release() forgets
//    it (the last writer connection detached); revoke() marks it replaced: from then
//    on every update of its objects through this gateway fails (EIO) until a new
//    grant() for the same head.
//  - confirm() moves a grant's lease_breaks forward, only if the grant still has the
//    generation that was checked (a concurrent revoke or re-grant wins).
//  - Any thread: one shared mutex; lookups on the data path take it shared.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <unordered_map>

#include "engine/object_id.h"

namespace kelpie {

class WriteGrants {
 public:
  struct Grant {
    uint64_t generation = 0;
    uint64_t lease_breaks = 0;
    bool revoked = false;
  };

  void grant(VdiId head, uint64_t generation, uint64_t lease_breaks) {
    std::unique_lock lock(mutex_);
    Grant& grant = grants_[head];
    if (grant.revoked) revoked_.fetch_sub(1, std::memory_order_release);
    grant = Grant{generation, lease_breaks, false};
  }
  void release(VdiId head) {
    std::unique_lock lock(mutex_);
    auto it = grants_.find(head);
    if (it == grants_.end()) return;
    if (it->second.revoked) revoked_.fetch_sub(1, std::memory_order_release);
    grants_.erase(it);
  }
  void revoke(VdiId head) {
    std::unique_lock lock(mutex_);
    if (auto it = grants_.find(head); it != grants_.end() && !it->second.revoked) {
      it->second.revoked = true;
      revoked_.fetch_add(1, std::memory_order_release);
    }
  }
  // Whether any grant is revoked now (lock-free): the read path looks no further
  // when none is.
  bool any_revoked() const { return revoked_.load(std::memory_order_acquire) > 0; }
  void confirm(VdiId head, uint64_t generation, uint64_t lease_breaks) {
    std::unique_lock lock(mutex_);
    auto it = grants_.find(head);
    if (it == grants_.end() || it->second.revoked || it->second.generation != generation) return;
    it->second.lease_breaks = lease_breaks;
  }
  std::optional<Grant> find(VdiId head) const {
    std::shared_lock lock(mutex_);
    auto it = grants_.find(head);
    if (it == grants_.end()) return std::nullopt;
    return it->second;
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<VdiId, Grant> grants_;
  std::atomic<uint64_t> revoked_{0};  // grants with revoked set
};

}  // namespace kelpie
