// ReactorPool: the reactors of this process and which one owns each object.
//
// Ownership is reactor_key(id) (the clone family) modulo the reactor count: every
// object of a family has one owner, the VDI layer and the local store agree on it
// without talking, and an NBD connection moved to its export's owner never hops.
#pragma once

#include <vector>

#include "engine/object_id.h"
#include "engine/reactor.h"

namespace kelpie {

class ReactorPool {
 public:
  explicit ReactorPool(std::vector<Reactor*> reactors) : reactors_(std::move(reactors)) {}
  Reactor& owner(const ObjectId& id) const {
    return *reactors_[id.reactor_key() % reactors_.size()];
  }
  Reactor& owner_of_family(VdiId family) const {
    return owner(ObjectId::inode(family, family));
  }
  Reactor& at(size_t i) const { return *reactors_[i]; }
  size_t size() const { return reactors_.size(); }
  const std::vector<Reactor*>& all() const { return reactors_; }

 private:
  std::vector<Reactor*> reactors_;
};

// Runs `work` on `target` and resumes the caller on its own reactor afterwards.
template <typename T>
Task<T> run_on(Reactor& target, Task<T> work) {
  Reactor* home = Reactor::current();
  co_await switch_to(target);
  T result = co_await std::move(work);
  co_await switch_to(*home);
  co_return result;
}

}  // namespace kelpie
