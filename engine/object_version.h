// ObjectVersion: which write a copy of an object reflects (DESIGN.md rule 2).
//
// Contract: (generation, sequence), compared lexicographically. `generation` is the
// writer's attach generation (a cluster-wide counter raised by every write attach and
// every directory operation), so a later owner of a VDI always writes higher versions
// than an earlier one; `sequence` is assigned by that writer, increasing per write.
// {0, 0} means "no version" (a single node, or an object never written through a
// cluster). A copy's version is stored with its data and is never ahead of it.
#pragma once

#include <compare>
#include <cstdint>

namespace kelpie {

struct ObjectVersion {
  uint64_t generation = 0;
  uint64_t sequence = 0;

  bool empty() const { return generation == 0 && sequence == 0; }
  auto operator<=>(const ObjectVersion&) const = default;
};

}  // namespace kelpie
