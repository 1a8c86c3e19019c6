// RangeLock: reader/writer locks on block ranges of one object, within one reactor.
//
// Overlapping exclusive ranges (writes) run one after the other in arrival order of
// their wake-ups; shared ranges (reads) run together. Rule 1 of DESIGN.md: an
// overlapping write goes out only after the earlier one completed, and a read never
// sees a block whose data and checksum are half-way through a write.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/sync.h"
#include "engine/task.h"

namespace kelpie {

class RangeLock {
 public:
  class Guard {
   public:
    Guard() = default;
    Guard(RangeLock* lock, uint64_t ticket) : lock_(lock), ticket_(ticket) {}
    Guard(Guard&& o) noexcept : lock_(std::exchange(o.lock_, nullptr)), ticket_(o.ticket_) {}
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        lock_ = std::exchange(o.lock_, nullptr);
        ticket_ = o.ticket_;
      }
      return *this;
    }
    Guard(const Guard&) = delete;
    ~Guard() { release(); }
    void release() {
      if (lock_) std::exchange(lock_, nullptr)->unlock(ticket_);
    }

   private:
    RangeLock* lock_ = nullptr;
    uint64_t ticket_ = 0;
  };

  // Blocks [first, last] inclusive.
  Task<Guard> lock(uint64_t first, uint64_t last, bool exclusive);
  bool idle() const { return held_.empty(); }

 private:
  struct Held {
    uint64_t first, last, ticket;
    bool exclusive;
  };
  bool conflicts(uint64_t first, uint64_t last, bool exclusive) const;
  void unlock(uint64_t ticket);

  std::vector<Held> held_;
  uint64_t next_ticket_ = 1;
  Event changed_;
};

}  // namespace kelpie
