#include "engine/sync.h"

namespace kelpie {
namespace {

Task<void> run_one(Task<Status> task, Status* slot, WaitGroup* group) {
  *slot = co_await std::move(task);
  group->done();
}

}  // namespace

Task<Status> when_all(std::vector<Task<Status>> tasks) {
  std::vector<Status> results(tasks.size());
  WaitGroup group;
  group.add(static_cast<int>(tasks.size()));
  for (size_t i = 0; i < tasks.size(); ++i) spawn(run_one(std::move(tasks[i]), &results[i], &group));
  co_await group.wait();
  for (auto& status : results) {
    if (!status.is_ok()) co_return status;
  }
  co_return Status::ok();
}

}  // namespace kelpie
