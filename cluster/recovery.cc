#include "cluster/recovery.h"

#include <algorithm>
#include <cerrno>
#include <deque>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "engine/sync.h"

namespace kelpie {

using Clock = std::chrono::steady_clock;

struct Recovery::Run {
  std::shared_ptr<const EpochView> view;
  // Guarded by Recovery::mutex_.
  std::string state = "listing";
  std::unordered_map<ObjectId, Pending, ObjectIdHash> pending;
  std::deque<ObjectId> queue;
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
      options_(options) {}

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
  running_.fetch_add(1);
  Reactor& home = reactors_.at(0);
  spawn([](Recovery* self, Reactor& home, std::shared_ptr<Run> run) -> Task<void> {
    co_await switch_to(home);
    co_await self->run(run);
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
    double seconds = std::chrono::duration<double>(Clock::now() - run.started).count();
    status["rate_mib_s"] = seconds > 0 ? double(run.bytes) / (1 << 20) / seconds : 0.0;
  }
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
  // Listing: every storage node of the epoch, until it answers in this epoch.
  for (;;) {
    if (run->abandoned || stopping_) co_return;
    Status listed = co_await list_all(run);
    if (listed) break;
    if (listed.code() == ECANCELED) co_return;
    co_await sleep_for(std::chrono::milliseconds(50));
  }
  {
    std::lock_guard lock(mutex_);
    run->state = run->queue.empty() ? "done" : "recovering";
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
    {
      std::lock_guard lock(mutex_);
      run->state = "done";
    }
    KELPIE_LOG_INFO("epoch {}: recovery done, {} objects, {:.1f} MiB", run->epoch(), run->done,
              double(run->bytes) / (1 << 20));
    publish(*run);
  }
  done_epoch_.store(run->epoch());
  co_await cleanup(run);
}

Task<Status> Recovery::list_all(std::shared_ptr<Run> run) {
  const EpochView& view = *run->view;
  struct Seen {
    ListedObject best;
    std::vector<NodeIndex> holders;  // nodes holding `best.version`
    bool mine = false;
    ObjectVersion my_version;
  };
  std::unordered_map<ObjectId, Seen, ObjectIdHash> seen;
  auto note = [&](NodeIndex node, const ListedObject& object) {
    Seen& s = seen[object.id];
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
      auto mine = co_await store_.list_all();
      if (!mine) co_return mine.status();
      for (const StoredObject& o : *mine) note(node, ListedObject{o.id, o.version, o.object_size});
      continue;
    }
    PeerRequest request;
    request.op = PeerOp::kListObjects;
    request.epoch = view.epoch();
    const MemberInfo& member = view.member(node);
    auto reply = co_await peers_.call(member.id, member.peer_address, request);
    if (!reply) co_return reply.status();
    if (reply->status == kEpochMismatch) {
      if (reply->epoch > view.epoch()) co_return Status::error(ECANCELED);
      co_return Status::error(EAGAIN, "peer not at this epoch yet");
    }
    if (reply->status != 0) co_return Status::error(reply->status, reply->message);
    for (const ListedObject& o : reply->objects) note(node, o);
  }
  std::vector<std::pair<ObjectId, Pending>> found;
  for (auto& [id, s] : seen) {
    if (!view.holds(id)) continue;
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
  std::lock_guard lock(mutex_);
  for (auto& [id, p] : found) {
    run->queue.push_back(id);
    run->pending.emplace(id, std::move(p));
  }
  run->to_recover = found.size();
  co_return Status::ok();
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
      if (run && run->epoch() == epoch && run->state != "listing") {
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
    if (!run_ || run_->epoch() != epoch || run_->state == "listing") {
      return Status::error(kNotReady, "this node is still listing the objects of epoch " +
                                          std::to_string(epoch));
    }
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

void Recovery::forget(const ObjectId& id, uint64_t epoch) {
  std::lock_guard lock(mutex_);
  if (!run_ || run_->epoch() != epoch) return;
  auto it = run_->pending.find(id);
  if (it != run_->pending.end() && !it->second.in_flight) {
    run_->pending.erase(it);
    run_->done++;
  }
}

Task<void> Recovery::cleanup(std::shared_ptr<Run> run) {
  // Copies this node no longer owns go only after every node of the epoch has
  // finished recovering to it (each holds its own objects at the newest version).
  const EpochView& view = *run->view;
  for (;;) {
    if (run->abandoned || stopping_) co_return;
    auto statuses = driver_.member_statuses();
    bool all_done = true;
    for (const MemberInfo& member : view.members) {
      auto it = statuses.find(uuid_to_string(member.id));
      if (it == statuses.end()) {
        all_done = false;
        break;
      }
      auto status = nlohmann::json::parse(it->second, nullptr, false);
      if (status.is_discarded() || status.value("epoch", uint64_t{0}) != view.epoch() ||
          status.value("state", std::string()) != "done") {
        all_done = false;
        break;
      }
    }
    if (all_done) break;
    co_await sleep_for(std::chrono::milliseconds(250));
  }
  auto mine = co_await store_.list_all();
  if (!mine) co_return;
  uint64_t removed = 0;
  for (const StoredObject& object : *mine) {
    // A newer epoch may give this node the object again, or its new owners may
    // still be listing: stop at once.
    if (run->abandoned || stopping_ || epochs_.latest_epoch() != view.epoch()) co_return;
    if (view.holds(object.id)) continue;
    Status status = co_await store_.remove(object.id);
    if (status) ++removed;
    if (removed % 64 == 0) co_await yield_now();
  }
  if (removed > 0) KELPIE_LOG_INFO("epoch {}: removed {} copies this node no longer owns", view.epoch(), removed);
  publish(*run);
}

}  // namespace kelpie
