#include "engine/buffer.h"

#include <bit>
#include <cstdlib>
#include <vector>

#include "common/status.h"

namespace kelpie {
namespace {

constexpr size_t kMinShift = 12;
constexpr size_t kMaxShift = 31;

struct Pool {
  std::vector<uint8_t*> free[kMaxShift + 1];
  size_t idle_bytes = 0;
  ~Pool() {
    for (auto& list : free)
      for (uint8_t* p : list) std::free(p);
  }
};

thread_local Pool pool;

}  // namespace

Buffer Buffer::get(size_t size) {
  size_t shift = std::max<size_t>(kMinShift, std::bit_width(size > 0 ? size - 1 : 0));
  KELPIE_ASSERT(shift <= kMaxShift);
  Buffer b;
  auto& list = pool.free[shift];
  if (!list.empty()) {
    b.data_ = list.back();
    list.pop_back();
    pool.idle_bytes -= size_t{1} << shift;
  } else {
    b.data_ = static_cast<uint8_t*>(std::aligned_alloc(4096, size_t{1} << shift));
    KELPIE_ASSERT(b.data_ != nullptr);
  }
  b.capacity_ = size_t{1} << shift;
  b.size_ = size;
  return b;
}

void Buffer::release() {
  if (data_ == nullptr) return;
  size_t shift = std::bit_width(capacity_ - 1);
  if (pool.idle_bytes + capacity_ <= kPoolCapBytes) {
    pool.free[shift].push_back(data_);
    pool.idle_bytes += capacity_;
  } else {
    std::free(data_);
  }
  data_ = nullptr;
  capacity_ = size_ = 0;
}

}  // namespace kelpie
