#include "engine/range_lock.h"

#include <algorithm>

namespace kelpie {

bool RangeLock::conflicts(uint64_t first, uint64_t last, bool exclusive) const {
  for (const Held& h : held_) {
    bool overlap = first <= h.last && h.first <= last;
    if (overlap && (exclusive || h.exclusive)) return true;
  }
  return false;
}

Task<RangeLock::Guard> RangeLock::lock(uint64_t first, uint64_t last, bool exclusive) {
  while (conflicts(first, last, exclusive)) co_await changed_.wait();
  uint64_t ticket = next_ticket_++;
  held_.push_back(Held{first, last, ticket, exclusive});
  co_return Guard(this, ticket);
}

void RangeLock::unlock(uint64_t ticket) {
  auto it = std::find_if(held_.begin(), held_.end(), [&](const Held& h) { return h.ticket == ticket; });
  KELPIE_ASSERT(it != held_.end());
  *it = held_.back();
  held_.pop_back();
  changed_.set();
  changed_.reset();
}

}  // namespace kelpie
