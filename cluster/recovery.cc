#include "cluster/recovery.h"

#include <algorithm>
#include <cerrno>
#include <deque>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "engine/offload.h"
#include "engine/superblock.h"
#include "engine/sync.h"

namespace kelpie {

using Clock = std::chrono::steady_clock;

namespace {

// In the data directory: "<through> <earlier>" in decimal (RecoveredEpochs).
constexpr const char* kRecoveredThroughFile = "RECOVERED_THROUGH";
// Listing retries (50 ms apart) after which a history that still lacks the epoch
// is retried slowly (1 s, doubling to 30 s) with the node "incomplete". Never given
// up on: judging from this epoch alone would make every copy authoritative, the
// unsafe direction of DESIGN.md rule 2 (cluster/recovery_authority.h).
constexpr int kHistoryAttempts = 100;
constexpr auto kHistoryFirstPause = std::chrono::milliseconds(1000);
constexpr auto kHistoryLongestPause = std::chrono::milliseconds(30000);

RecoveredEpochs load_recovered(const std::string& data_dir) {
  std::ifstream in(data_dir + "/" + kRecoveredThroughFile);
  uint64_t through = 0;
  uint64_t earlier = 0;
  if (in >> through >> earlier) return RecoveredEpochs(through, earlier);
  // None yet, or unreadable: claim nothing, and say so (a node that forgot what it
  // completed must not look as if it had completed nothing).
  return through == 0 ? RecoveredEpochs() : RecoveredEpochs::unreported();
}

}  // namespace

struct Recovery::Seen {
  ListedObject best;
  std::vector<NodeIndex> holders;  // nodes holding `best.version`
  std::vector<Uuid> listed;        // every node that listed a copy
  bool mine = false;
  ObjectVersion my_version;
};

struct Recovery::Run {
  std::shared_ptr<const EpochView> view;
  // Guarded by Recovery::mutex_.
  std::string state = "listing";
  // Set once listing and the authority decision are over: until then every object
  // is unknown (ensure() waits, ready_now() answers kNotReady), whatever `state` says.
  bool listed = false;
  std::unordered_map<ObjectId, Pending, ObjectIdHash> pending;
  std::deque<ObjectId> queue;
  struct Unavailable {
    std::string why;  // describe_unavailable()
    bool logged = false;
  };
  std::unordered_map<ObjectId, Unavailable, ObjectIdHash> unavailable;
  // Only the run coroutine touches these two.
  int history_failures = 0;
  bool history_missing = false;  // the last listing failed for want of an epoch history
  uint64_t to_recover = 0;
  uint64_t done = 0;
  uint64_t bytes = 0;
  Clock::time_point started = Clock::now();
  std::atomic<bool> abandoned{false};

  uint64_t epoch() const { return view->epoch(); }
};

Recovery::Recovery(LocalStore& store, EpochState& epochs, PeerClient& peers,
                   MembershipDriver& driver, const ReactorPool& reactors, Uuid self,
                   RecoveryOptions options)
    : store_(store),
      epochs_(epochs),
      peers_(peers),
      driver_(driver),
      reactors_(reactors),
      self_(self),
      options_(options),
      old_copies_(store, epochs, peers),
      recovered_(load_recovered(store.data_dir())) {
  // Objects but no record: written by a version that kept none. Its cleanups may
  // have run; it must not look as if it had completed nothing.
  if (recovered_.reported && recovered_.through == 0 && store.object_count() > 0) {
    recovered_ = RecoveredEpochs::unreported();
  }
}

RecoveredEpochs Recovery::recovered() const {
  std::lock_guard lock(recovered_mutex_);
  return recovered_;
}

Recovery::~Recovery() { stop(); }

void Recovery::start(std::shared_ptr<const EpochView> view) {
  auto run = std::make_shared<Run>();
  run->view = std::move(view);
  {
    std::lock_guard lock(mutex_);
    if (run_ && run_->epoch() >= run->epoch()) return;
    if (run_) run_->abandoned = true;
    run_ = run;
  }
  running_.fetch_add(2);
  Reactor& home = reactors_.at(0);
  spawn([](Recovery* self, Reactor& home, std::shared_ptr<Run> run) -> Task<void> {
    co_await switch_to(home);
    co_await self->run(run);
    self->running_.fetch_sub(1);
  }(this, home, run));
  // Rule 7: old copies go per object, beside recovery, not after everyone's "done".
  spawn([](Recovery* self, Reactor& home, std::shared_ptr<Run> run) -> Task<void> {
    co_await switch_to(home);
    co_await self->cleanup(run);
    self->running_.fetch_sub(1);
  }(this, home, run));
}

void Recovery::stop() {
  stopping_ = true;
  {
    std::lock_guard lock(mutex_);
    if (run_) run_->abandoned = true;
  }
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (running_.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Recovery::Progress Recovery::progress() const {
  std::lock_guard lock(mutex_);
  Progress p;
  if (!run_) return p;
  p.epoch = run_->epoch();
  p.state = run_->state;
  p.to_recover = run_->to_recover;
  p.done = run_->done;
  p.unavailable = run_->unavailable.size();
  double seconds = std::chrono::duration<double>(Clock::now() - run_->started).count();
  if (seconds > 0) p.rate_mib_s = double(run_->bytes) / (1 << 20) / seconds;
  return p;
}

void Recovery::publish(const Run& run) {
  nlohmann::json status;
  {
    std::lock_guard lock(mutex_);
    status["epoch"] = run.epoch();
    status["state"] = run.state;
    status["to_recover"] = run.to_recover;
    status["done"] = run.done;
    status["unavailable"] = run.unavailable.size();
    double seconds = std::chrono::duration<double>(Clock::now() - run.started).count();
    status["rate_mib_s"] = seconds > 0 ? double(run.bytes) / (1 << 20) / seconds : 0.0;
  }
  status["recovered_through"] = recovered().through;
  status["objects"] = store_.object_count();
  status["used_bytes"] = used_bytes_.load();
  driver_.publish_status(status.dump());
}

void Recovery::publish_now() {
  std::shared_ptr<Run> run;
  {
    std::lock_guard lock(mutex_);
    run = run_;
  }
  if (run) publish(*run);
}

Task<void> Recovery::run(std::shared_ptr<Run> run) {
  publish(*run);
  // Listing: every storage node of the epoch, until it answers in this epoch, and
  // an epoch history to judge authority with.
  auto history_pause = kHistoryFirstPause;
  for (;;) {
    if (run->abandoned || stopping_) co_return;
    Status listed = co_await list_all(run);
    if (listed) break;
    if (listed.code() == ECANCELED) co_return;
    if (!run->history_missing || run->history_failures < kHistoryAttempts) {
      co_await sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (run->history_failures == kHistoryAttempts) {
      // Once per run: objects stay unknown (as while listing), the node never says
      // "done" on a judgement it could not make.
      KELPIE_LOG_ERROR("epoch {}: no usable epoch history after {} attempts ({}): objects "
                       "stay unknown here, retrying every {}..{} s",
                       run->epoch(), kHistoryAttempts, listed.message(),
                       kHistoryFirstPause.count() / 1000, kHistoryLongestPause.count() / 1000);
      {
        std::lock_guard lock(mutex_);
        run->state = "incomplete";
      }
      publish(*run);
    }
    bool slept = co_await nap(*run, history_pause);
    if (!slept) co_return;
    history_pause = std::min(history_pause * 2, kHistoryLongestPause);
  }
  {
    std::lock_guard lock(mutex_);
    run->listed = true;
    // "done" only once it is recorded durably (below): a lister of a later epoch may
    // then rely on it (cluster/recovery_authority.h, F3).
    run->state = run->queue.empty() && !run->unavailable.empty() ? "incomplete" : "recovering";
  }
  KELPIE_LOG_INFO("epoch {}: {} objects to recover", run->epoch(), run->to_recover);
  publish(*run);
  if (!run->queue.empty()) {
    WaitGroup workers;
    for (unsigned i = 0; i < std::max(1u, options_.workers); ++i) {
      workers.add();
      spawn([](Recovery* self, std::shared_ptr<Run> run, WaitGroup& wg) -> Task<void> {
        co_await self->worker(run);
        wg.done();
      }(this, run, workers));
    }
    co_await workers.wait();
    if (run->abandoned || stopping_) co_return;
    // Objects a client pulled out of order may still be in flight.
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (run->pending.empty()) break;
      }
      if (run->abandoned || stopping_) co_return;
      co_await sleep_for(std::chrono::milliseconds(10));
    }
    KELPIE_LOG_INFO("epoch {}: pulled {} objects, {:.1f} MiB", run->epoch(), run->done,
                    double(run->bytes) / (1 << 20));
  }
  bool available = co_await wait_available(run);
  if (!available) co_return;
  done_epoch_.store(run->epoch());  // every object here is current: serve without asking
  bool recorded = co_await record_recovered(run->epoch());
  if (!recorded) co_return;  // not "done": no lister may rely on this epoch
  // Recorded before this check: a lister of a newer epoch that heard "not completed"
  // from us (cluster/recovery_authority.h, F2) never sees a "done" for this one.
  if (run->abandoned || stopping_ || epochs_.latest_epoch() != run->epoch()) co_return;
  {
    std::lock_guard lock(mutex_);
    run->state = "done";
  }
  KELPIE_LOG_INFO("epoch {}: recovery done", run->epoch());
  publish(*run);
}

Task<bool> Recovery::wait_available(std::shared_ptr<Run> run) {
  bool told = false;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (run->unavailable.empty()) co_return true;
      if (!told) run->state = "incomplete";
    }
    if (run->abandoned || stopping_) co_return false;
    if (!told) {
      // Stays so until a later epoch (or a remove of those objects): no "done", and
      // recovered_through does not advance.
      publish(*run);
      told = true;
    }
    co_await sleep_for(std::chrono::milliseconds(250));
  }
}

Task<bool> Recovery::record_recovered(uint64_t epoch) {
  RecoveredEpochs now = recovered();
  if (now.reported && epoch <= now.through) co_return true;  // the same epoch again (a restart)
  const RecoveredEpochs next = now.reported ? now.advanced_to(epoch) : RecoveredEpochs(epoch);
  const std::string dir = store_.data_dir();
  std::function<Status()> write = [dir, next] {
    std::string text = std::to_string(next.through) + " " + std::to_string(next.earlier) + "\n";
    return write_file_atomically(dir, kRecoveredThroughFile, text.data(), text.size());
  };
  Status written = co_await offload<Status>(std::move(write));
  if (!written) {
    // Claim nothing we could not make durable: peers keep judging by the older value.
    KELPIE_LOG_ERROR("epoch {}: could not record recovery done: {}", epoch, written.to_string());
    co_return false;
  }
  std::lock_guard lock(recovered_mutex_);
  recovered_ = next;  // only the run coroutine on reactor 0 writes it
  co_return true;
}

Task<Status> Recovery::list_all(std::shared_ptr<Run> run) {
  const EpochView& view = *run->view;
  run->history_missing = false;  // set by decide() only
  std::unordered_map<ObjectId, Seen, ObjectIdHash> seen;
  HeardNodes heard;
  auto note = [&](NodeIndex node, const ListedObject& object) {
    Seen& s = seen[object.id];
    s.listed.push_back(view.member(node).id);
    bool is_self = view.self && node == *view.self;
    if (is_self) {
      s.mine = true;
      s.my_version = object.version;
    }
    if (s.holders.empty() || object.version > s.best.version) {
      s.best = object;
      s.holders.assign(1, node);
    } else if (object.version == s.best.version) {
      s.holders.push_back(node);
    }
  };
  for (NodeIndex node = 0; node < view.members.size(); ++node) {
    if (run->abandoned || stopping_) co_return Status::error(ECANCELED);
    if (view.self && node == *view.self) {
      // Read before listing, as a peer does: the copies listed are at least as new.
      heard[view.member(node).id] = recovered();
      auto mine = co_await store_.list_all();
      if (!mine) co_return mine.status();
      for (const StoredObject& o : *mine) note(node, ListedObject{o.id, o.version, o.object_size});
      continue;
    }
    PeerRequest request;
    request.op = PeerOp::kListObjects;
    request.epoch = view.epoch();
    request.flags = kPeerFlagRecoveredThrough;
    const MemberInfo& member = view.member(node);
    auto reply = co_await peers_.call(member.id, member.peer_address, request);
    if (!reply) co_return reply.status();
    if (reply->status == kEpochMismatch) {
      if (reply->epoch > view.epoch()) co_return Status::error(ECANCELED);
      co_return Status::error(EAGAIN, "peer not at this epoch yet");
    }
    if (reply->status != 0) co_return Status::error(reply->status, reply->message);
    // A node that does not report it (an older version) vouches for no epoch.
    heard[member.id] = reply->recovered_through
                           ? RecoveredEpochs(*reply->recovered_through, reply->recovered_earlier)
                           : RecoveredEpochs::unreported();
    for (const ListedObject& o : reply->objects) note(node, o);
  }
  std::function<std::vector<EpochRecord>()> read_history = [this] {
    return driver_.epoch_history();  // may read a file or ask ZooKeeper: off the reactor
  };
  std::vector<EpochRecord> history = co_await offload<std::vector<EpochRecord>>(std::move(read_history));
  if (run->abandoned || stopping_) co_return Status::error(ECANCELED);
  co_return decide(*run, history, heard, seen);
}

Status Recovery::decide(Run& run, const std::vector<EpochRecord>& records, const HeardNodes& heard,
                        std::unordered_map<ObjectId, Seen, ObjectIdHash>& seen) {
  const EpochView& view = *run.view;
  Result<EpochHistory> history = EpochHistory::build(records, view.epoch());
  run.history_missing = !history;
  if (!history) {
    // The driver catches up (run() retries, slowly after kHistoryAttempts). Never
    // judged from this epoch alone: every copy would look authoritative.
    ++run.history_failures;
    return Status::error(EAGAIN, history.status().message());
  }
  std::vector<std::pair<ObjectId, Pending>> found;
  std::vector<std::pair<ObjectId, AuthorityDecision>> unavailable;
  uint64_t unverified = 0;
  for (auto& [id, s] : seen) {
    if (!view.holds(id)) continue;
    AuthorityDecision decision = decide_authority(*history, id, heard, s.listed);
    if (!decision.available()) {
      unavailable.emplace_back(id, std::move(decision));
      continue;
    }
    if (decision.kind == AuthorityDecision::Kind::kHistoryStart) ++unverified;
    if (s.mine && s.my_version >= s.best.version) continue;
    Pending p;
    p.best = s.best;
    p.sources = s.holders;
    found.emplace_back(id, std::move(p));
  }
  // Inodes and maps first: they are small and every read needs them.
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    if (a.first.type != b.first.type) return a.first.type > b.first.type;
    if (a.first.vdi != b.first.vdi) return a.first.vdi < b.first.vdi;
    return a.first.index < b.first.index;
  });
  if (unverified > 0) {
    KELPIE_LOG_WARN("epoch {}: {} objects judged by the kept epoch history only (it starts at "
                    "epoch {}, not at the format)",
                    view.epoch(), unverified, history->oldest());
  }
  if (!unavailable.empty()) {
    KELPIE_LOG_ERROR("epoch {}: {} objects unavailable: their newest copies may be only on nodes "
                     "that are not in this epoch (first: {}: {})",
                     view.epoch(), unavailable.size(), unavailable.front().first.to_hex(),
                     describe_unavailable(unavailable.front().second));
  }
  std::lock_guard lock(mutex_);
  for (auto& [id, p] : found) {
    run.queue.push_back(id);
    run.pending.emplace(id, std::move(p));
  }
  for (auto& [id, decision] : unavailable) {
    run.unavailable.emplace(id, Run::Unavailable{describe_unavailable(decision)});
  }
  run.to_recover = found.size();
  return Status::ok();
}

Status Recovery::unavailable_locked(Run& run, const ObjectId& id) {
  auto it = run.unavailable.find(id);
  if (it == run.unavailable.end()) return Status::ok();
  std::string message = "object " + id.to_hex() + " is unavailable in epoch " +
                        std::to_string(run.epoch()) + ": " + it->second.why +
                        "; it recovers when one of them is back";
  if (!it->second.logged) {
    it->second.logged = true;
    KELPIE_LOG_ERROR("{}", message);
  }
  return Status::error(EIO, message);
}

Task<void> Recovery::worker(std::shared_ptr<Run> run) {
  for (;;) {
    if (run->abandoned || stopping_) co_return;
    ObjectId id;
    Pending pending;
    {
      std::lock_guard lock(mutex_);
      for (;;) {
        if (run->queue.empty()) co_return;
        id = run->queue.front();
        run->queue.pop_front();
        auto it = run->pending.find(id);
        if (it == run->pending.end() || it->second.in_flight) continue;
        it->second.in_flight = true;
        pending = it->second;
        break;
      }
    }
    Status status = co_await pull(*run, id, pending);
    {
      std::lock_guard lock(mutex_);
      auto it = run->pending.find(id);
      if (status || status.code() == ECANCELED) {
        if (it != run->pending.end()) run->pending.erase(it);
        run->done++;
        if (status) run->bytes += pending.best.object_size;
      } else {
        if (it != run->pending.end()) it->second.in_flight = false;
        run->queue.push_back(id);
      }
    }
    if (!status && status.code() != ECANCELED) {
      KELPIE_LOG_WARN("epoch {}: recovering {} failed: {}", run->epoch(), id.to_hex(),
                status.to_string());
      co_await sleep_for(std::chrono::milliseconds(200));
    }
    // Throttle: pace the pulls so client I/O keeps most of the node.
    if (options_.max_bytes_per_s > 0 && status) {
      auto pause = std::chrono::microseconds(uint64_t(pending.best.object_size) *
                                             std::max(1u, options_.workers) * 1000000 /
                                             options_.max_bytes_per_s);
      if (pause.count() > 0) co_await sleep_for(pause);
    }
  }
}

Task<Status> Recovery::pull(const Run& run, const ObjectId& id, const Pending& pending) {
  const EpochView& view = *run.view;
  Status last = Status::error(EIO, "no source holds object " + id.to_hex());
  size_t gone = 0;
  for (NodeIndex source : pending.sources) {
    if (view.self && source == *view.self) continue;
    if (run.abandoned || stopping_) co_return Status::error(ECANCELED);
    PeerRequest request;
    request.op = PeerOp::kFetchObject;
    request.epoch = view.epoch();
    request.id = id;
    request.flags = kPeerFlagRecovery;
    const MemberInfo& member = view.member(source);
    auto reply = co_await peers_.call(member.id, member.peer_address, request);
    if (!reply) {
      last = reply.status();
      continue;
    }
    if (reply->status == kEpochMismatch) {
      if (reply->epoch > view.epoch()) co_return Status::error(ECANCELED);
      last = Status::error(EAGAIN, "source not at this epoch yet");
      continue;
    }
    if (reply->status == ENOENT) {
      // Gone from this source since listing; another may still hold it.
      ++gone;
      last = Status::error(ENOENT, "object " + id.to_hex() + " gone from a source");
      continue;
    }
    if (reply->status != 0) {
      last = Status::error(reply->status, reply->message);
      continue;
    }
    if (run.abandoned || stopping_) co_return Status::error(ECANCELED);
    // Never rolls a copy back: a client write may have landed since listing.
    co_return co_await store_.install(
        id, reply->version, reply->object_size,
        std::span<const uint8_t>(reply->data.data(), reply->data.size()), true);
  }
  // Every source lost it since listing (a delete or reclaim): nothing to recover.
  if (gone > 0 && gone == pending.sources.size()) co_return Status::ok();
  co_return last;
}

Task<Status> Recovery::ensure(const ObjectId& id, uint64_t epoch) {
  if (epochs_.latest_epoch() != epoch) co_return Status::error(kEpochMismatch, "epoch moved on");
  if (done_epoch_.load(std::memory_order_acquire) == epoch) co_return Status::ok();
  // Shorter than the gateway's retry deadline, so a write parked here never lands
  // after its gateway gave up and sent a newer one.
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  for (;;) {
    std::shared_ptr<Run> run;
    Pending pending;
    bool pull_now = false;
    {
      std::lock_guard lock(mutex_);
      run = run_;
      if (run && run->epoch() == epoch && run->listed) {
        Status available = unavailable_locked(*run, id);
        if (!available) co_return available;
        auto it = run->pending.find(id);
        if (it == run->pending.end()) co_return Status::ok();
        if (!it->second.in_flight) {
          it->second.in_flight = true;
          pending = it->second;
          pull_now = true;
        }
      } else if (run && run->epoch() > epoch) {
        co_return Status::error(kEpochMismatch, "epoch moved on");
      }
    }
    if (pull_now) {
      Status status = co_await pull_taken(run, id, pending);
      if (status) co_return Status::ok();
      if (status.code() == ECANCELED) co_return Status::error(kEpochMismatch, "epoch moved on");
      if (Clock::now() >= deadline) co_return status;
    }
    if (Clock::now() >= deadline) {
      co_return Status::error(EIO, "object " + id.to_hex() + " is not recovered yet");
    }
    co_await sleep_for(std::chrono::milliseconds(pull_now ? 100 : 5));
  }
}

Task<Status> Recovery::pull_taken(std::shared_ptr<Run> run, ObjectId id, Pending pending) {
  Status status = co_await pull(*run, id, pending);
  std::lock_guard lock(mutex_);
  auto it = run->pending.find(id);
  if (status) {
    if (it != run->pending.end()) {
      run->pending.erase(it);
      run->done++;
      run->bytes += pending.best.object_size;
    }
  } else if (it != run->pending.end()) {
    it->second.in_flight = false;
    if (status.code() != ECANCELED) run->queue.push_back(id);  // the workers try again
  }
  co_return status;
}

Task<void> Recovery::pull_in_background(std::shared_ptr<Run> run, ObjectId id, Pending pending) {
  Status status = co_await pull_taken(run, id, pending);
  if (!status && status.code() != ECANCELED) {
    KELPIE_LOG_WARN("epoch {}: recovering {} for a read failed: {}", run->epoch(), id.to_hex(),
                    status.to_string());
  }
  read_pulls_.fetch_sub(1);
  running_.fetch_sub(1);
}

Status Recovery::ready_now(const ObjectId& id, uint64_t epoch) {
  if (epochs_.latest_epoch() != epoch) return Status::error(kEpochMismatch, "epoch moved on");
  if (done_epoch_.load(std::memory_order_acquire) == epoch) return Status::ok();
  std::shared_ptr<Run> run;
  Pending pending;
  {
    std::lock_guard lock(mutex_);
    if (run_ && run_->epoch() > epoch) return Status::error(kEpochMismatch, "epoch moved on");
    if (!run_ || run_->epoch() != epoch || !run_->listed) {
      return Status::error(kNotReady, "this node is still listing the objects of epoch " +
                                          std::to_string(epoch));
    }
    Status available = unavailable_locked(*run_, id);
    if (!available) return available;
    auto it = run_->pending.find(id);
    if (it == run_->pending.end()) return Status::ok();
    // A hint, not a need (another replica serves the read): one such pull at a time.
    if (!it->second.in_flight && !stopping_ && read_pulls_.load() == 0) {
      it->second.in_flight = true;
      run = run_;
      pending = it->second;
      read_pulls_.fetch_add(1);
      running_.fetch_add(1);  // before the spawn: stop() waits for it
    }
  }
  // Outside the mutex: the pull may settle its books before its first suspension.
  if (run) spawn(pull_in_background(std::move(run), id, std::move(pending)));
  return Status::error(kNotReady, "object " + id.to_hex() + " is being recovered here");
}

bool Recovery::unavailable(const ObjectId& id, uint64_t epoch) const {
  std::lock_guard lock(mutex_);
  return run_ && run_->epoch() == epoch && run_->unavailable.count(id) > 0;
}

void Recovery::forget(const ObjectId& id, uint64_t epoch) {
  std::lock_guard lock(mutex_);
  if (!run_ || run_->epoch() != epoch) return;
  run_->unavailable.erase(id);  // removed or replaced: nothing to wait for
  auto it = run_->pending.find(id);
  if (it != run_->pending.end() && !it->second.in_flight) {
    run_->pending.erase(it);
    run_->done++;
  }
}

Task<void> Recovery::cleanup(std::shared_ptr<Run> run) {
  constexpr auto kFirstPause = std::chrono::milliseconds(1000);
  constexpr auto kLongestPause = std::chrono::milliseconds(30000);
  const uint64_t epoch = run->epoch();
  auto pause = kFirstPause;
  for (;;) {
    // Any thread: also asked on each object's owner reactor right before a removal.
    Recovery* self = this;
    std::function<bool()> go_on = [self, run] {
      return !run->abandoned && !self->stopping_ && self->epochs_.latest_epoch() == run->epoch();
    };
    OldCopies::PassResult result = co_await old_copies_.pass(run->view, std::move(go_on));
    if (result.removed > 0) {
      KELPIE_LOG_INFO("epoch {}: removed {} copies this node no longer owns ({} kept for now)",
                      epoch, result.removed, result.kept);
      publish(*run);
    }
    if (result.kept == 0 && !result.failed) co_return;
    bool slept = co_await nap(*run, pause);
    if (!slept) co_return;
    pause = std::min(pause * 2, kLongestPause);
  }
}

Task<bool> Recovery::nap(const Run& run, std::chrono::milliseconds duration) {
  const auto until = Clock::now() + duration;
  for (;;) {
    if (run.abandoned || stopping_ || epochs_.latest_epoch() != run.epoch()) co_return false;
    auto now = Clock::now();
    if (now >= until) co_return true;
    co_await sleep_for(std::min<Clock::duration>(until - now, std::chrono::milliseconds(50)));
  }
}

}  // namespace kelpie
