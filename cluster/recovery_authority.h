// Recovery authority: is the newest copy of an object that recovery heard of the
// newest copy that was ever acknowledged? (DESIGN.md rule 2: "a copy is
// authoritative only once recovery has heard from a member of every writable epoch
// since that version; otherwise the object is unavailable, not guessed.")
//
// A pure function of the epoch history, the rings, who answered the listing with
// which `recovered_through` and which of them listed a copy — so it is unit-tested
// as such (test/unit/recovery_authority_test.cc) and gives the same answer on every
// node that heard the same answers.
//
// Facts it relies on (each is a contract elsewhere):
//  F1 A write in epoch k is acknowledged only once every member of R_k(X), X's
//     replica set in k, applied it (replicated_store.cc); each of them first made
//     its own copy current (rule 3: Recovery::ensure), and ensure() fails for an
//     object it judged unavailable. So after any acknowledged write in k, every
//     member of R_k(X) holds a copy at least as new as every write acknowledged in
//     epochs <= k. A write in the current epoch c needs this node's own listing to
//     be over, so none was acknowledged in c before the decision.
//  F2 Copies never roll back (an install never replaces a newer copy; a later writer
//     has a higher generation). A copy goes away only by a delete of its VDI, or by
//     old-copy removal in epoch j on a node outside R_j(X), once every member of
//     R_j(X) (a writable set) held a copy at least as new durably, or had completed j
//     and removed X on purpose (cluster/old_copies.h, rule 7, which argues why this
//     walk stays sound). Nodes of older versions remove old copies of j only after
//     every member of j completed recovery of j (recorded durably before saying so,
//     and only while j is still its newest: a member that answered a later epoch's
//     listing with "not completed j" never says "done" for j afterwards); the walk
//     below still leans on that rule only as extra caution.
//  F3 h completed epoch r (recovered_through, or a bit of the window before it) means:
//     h completed recovery of epoch r (every object
//     it must hold in r that any node listed was judged authoritative and pulled,
//     fdatasync'd) and wrote r durably before reporting it; h lists its objects after
//     reading r. So if h is in R_r(X) and lists a copy of X, that copy is at least as
//     new as every write acknowledged in epochs <= r (writes in r after recovery
//     reached h as a member of R_r(X)). If h lists no copy, r says nothing about X:
//     X may have been invisible to that recovery (only absent nodes held it).
//  An epoch k is writable for X when |R_k(X)| >= max(1, min_copies of k) — the
//  replicated store refuses writes otherwise (epoch records list live nodes only).
//
// The walk, k = c, c-1, ... down to the oldest kept record:
//  - authoritative at k if a node h heard completed epoch k, is in R_k(X) and listed
//    a copy of X (F3; epochs k+1..c-1 were covered by the steps above). A later copy
//    of h's can only be newer (F2), so completing k still counts after later epochs;
//  - epoch k (< c) is covered if a node h heard is in R_k(X) and either listed a
//    copy of X, or can not have dropped one since k: no epoch j, k < j < c, where h
//    was a member outside R_j(X) and cleanup of j may have run — that is, no member
//    of j that answered says it did not complete j (F2). Then by F1/F2 the newest
//    copy heard is at least every write acknowledged in k;
//  - an uncovered epoch that was writable for X makes X unavailable: writes
//    acknowledged there may exist only on R_k(X), which did not answer. Any member of
//    R_k(X) coming back (in a later epoch) may make it available; the result names
//    the members that were not heard;
//  - an uncovered epoch that was not writable held no writes: go on.
//  Reaching the format epoch (epoch 1, nothing before it) covered: authoritative.
//  Reaching the oldest kept record that is not the format epoch: authoritative, but
//  flagged (history was compacted; the caller logs a warning).
//
// Conservative by construction: every uncertainty makes an object unavailable, never
// a stale copy authoritative. It can call an object unavailable that was not (a node
// heard that was in R_k(X), lists no copy, and may have dropped one in a cleanup the
// completed epochs do not rule out; or a completed epoch older than the 64-epoch
// window). The decision is made once per epoch: a false "unavailable" lasts until the
// next epoch (a holder's return makes one).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <map>
#include <vector>

#include "cluster/membership.h"
#include "cluster/ring.h"
#include "engine/object_id.h"

namespace kelpie {

// The epoch records recovery may walk back through, with their rings built lazily
// (only the epochs a walk reaches). Not thread-safe; one per recovery run.
class EpochHistory {
 public:
  // `records`: oldest first, no gaps, ending with the current epoch (records newer
  // than `current` are dropped). EINVAL if `current` is not among them or a record
  // is out of order.
  static Result<EpochHistory> build(std::vector<EpochRecord> records, uint64_t current);

  uint64_t current() const { return records_.back().epoch; }
  uint64_t oldest() const { return records_.front().epoch; }
  // True if the oldest kept record is the format epoch (nothing came before it).
  bool starts_at_format() const;
  const EpochRecord& record(uint64_t epoch) const;
  // Node ids of X's replica set in `epoch`, primary first. REQUIRES oldest() <= epoch <= current().
  std::vector<Uuid> replicas(uint64_t epoch, const ObjectId& id) const;
  bool is_member(uint64_t epoch, const Uuid& node) const;
  bool writable(uint64_t epoch, const ObjectId& id) const;

 private:
  const Ring& ring(uint64_t epoch) const;

  std::vector<EpochRecord> records_;
  mutable std::vector<std::unique_ptr<Ring>> rings_;  // aligned with records_
};

struct AuthorityDecision {
  enum class Kind {
    kAuthoritative,        // the newest copy heard is the newest acknowledged
    kHistoryStart,         // as far as the kept history shows (warn)
    kUnavailable,          // a writable epoch since was not heard from
  };
  Kind kind = Kind::kAuthoritative;
  // kAuthoritative: the epoch the walk stopped at. kUnavailable: the writable
  // epoch nobody of X's replica set answered for.
  uint64_t epoch = 0;
  // kUnavailable: the members of R_epoch(X) that were not heard from: the return
  // of any may make X available.
  std::vector<Uuid> absent;

  bool available() const { return kind != Kind::kUnavailable; }
};

// Which epochs a node completed the recovery of: the last one, and which of the 64
// before it. Kept durably by each node (cluster/recovery.h) and reported with its
// object list; a node that reports nothing has completed "none".
struct RecoveredEpochs {
  static constexpr uint64_t kWindow = 64;
  uint64_t through = 0;  // the last epoch completed (0: none)
  uint64_t earlier = 0;  // bit i set: epoch through-1-i was completed too
  bool reported = true;  // false: a node that does not report it (an older version)

  RecoveredEpochs(uint64_t through_epoch = 0, uint64_t earlier_mask = 0)  // NOLINT: implicit
      : through(through_epoch), earlier(earlier_mask) {}
  static RecoveredEpochs unreported() {
    RecoveredEpochs r;
    r.reported = false;
    return r;
  }
  enum class Answer { kYes, kNo, kUnknown };
  // kUnknown for an epoch older than the window, and for every epoch if unreported.
  Answer completed(uint64_t epoch) const;
  // This record after completing `epoch` too. REQUIRES: epoch > through.
  RecoveredEpochs advanced_to(uint64_t epoch) const;
};

// Node id -> what it completed, for every node that answered the listing of the
// current epoch (this one included).
using HeardNodes = std::map<Uuid, RecoveredEpochs>;

// `listed`: the nodes heard that listed a copy of X (any version).
AuthorityDecision decide_authority(const EpochHistory& history, const ObjectId& id,
                                   const HeardNodes& heard, std::span<const Uuid> listed);

// "epoch 7: absent 1f2e3d4c, 5a6b7c8d" for logs.
std::string describe_unavailable(const AuthorityDecision& decision);

}  // namespace kelpie
