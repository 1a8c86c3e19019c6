// FullRatio: whether a storage node's data filesystem has room for a new object
// (DESIGN.md rule 4: "Writes stop above a cluster full ratio so no replica meets
// ENOSPC in the middle of a write").
//
// Contract:
//  - Usage is 1 - f_bavail / f_blocks of the filesystem holding the data directory
//    (blocks reserved for root count as used), measured with statvfs at every
//    reserve(), plus the bytes of the creates admitted and still running.
//  - reserve(bytes) admits a create of `bytes` if usage with it stays at or below the
//    ratio, and holds those bytes until the returned Reservation is destroyed (after
//    the create allocated them, so the next statvfs sees them). If the object would
//    take the filesystem above the ratio by itself: ENOSPC whose message names this
//    node and its usage. If it fits only without the creates in flight: EAGAIN (the
//    caller waits for them and asks again). Any thread.
//  - Objects are preallocated at create, so overwrites of existing objects never need
//    space and are never refused; only requests that make an object (kWrite with
//    kPeerFlagCreate, kCreateFrom) reserve. Resync and recovery installs do not: they
//    repair copies that must exist, the headroom above the ratio is for them.
//  - A ratio of 1 turns the check off. The first refusal, and the first admission
//    after refusals, each log one line.
//  - The measurement is a seam: a Measure passed in replaces statvfs (tests).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "common/status.h"

namespace kelpie {

class FullRatio {
 public:
  static constexpr double kDefault = 0.95;

  class Reservation {
   public:
    Reservation() = default;
    explicit Reservation(const FullRatio* owner, uint64_t bytes) : owner_(owner), bytes_(bytes) {}
    Reservation(Reservation&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)), bytes_(other.bytes_) {}
    Reservation& operator=(Reservation&& other) noexcept {
      if (this != &other) {
        release();
        owner_ = std::exchange(other.owner_, nullptr);
        bytes_ = other.bytes_;
      }
      return *this;
    }
    Reservation(const Reservation&) = delete;
    ~Reservation() { release(); }

   private:
    void release() {
      if (owner_) std::exchange(owner_, nullptr)->pending_bytes_.fetch_sub(bytes_);
    }
    const FullRatio* owner_ = nullptr;
    uint64_t bytes_ = 0;
  };

  // The data filesystem's size and the bytes unprivileged users may still take.
  struct Usage {
    double total_bytes = 0;
    double available_bytes = 0;
  };
  using Measure = std::function<Result<Usage>()>;

  // measure: null for statvfs of data_dir. Called from whichever thread reserves.
  FullRatio(std::string data_dir, std::string node_name, double ratio, Measure measure = nullptr);

  Result<Reservation> reserve(uint64_t bytes) const;
  double ratio() const { return ratio_; }

 private:
  Result<Usage> measure() const;

  std::string data_dir_;
  std::string node_name_;
  double ratio_;
  Measure measure_;
  mutable std::atomic<uint64_t> pending_bytes_{0};
  mutable std::atomic<bool> refusing_{false};
};

}  // namespace kelpie
