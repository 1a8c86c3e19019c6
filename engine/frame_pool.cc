#include "engine/frame_pool.h"

#include <new>

namespace kelpie {
namespace {

constexpr size_t kGranule = 64;
constexpr size_t kClasses = 64;             // blocks up to 4 KiB are pooled
constexpr size_t kMaxCachedPerClass = 1024;  // bound on idle memory per thread

struct FreeBlock {
  FreeBlock* next;
};

struct FreeLists {
  FreeBlock* head[kClasses] = {};
  size_t count[kClasses] = {};
  ~FreeLists() {
    for (size_t c = 0; c < kClasses; ++c) {
      while (head[c] != nullptr) {
        FreeBlock* b = head[c];
        head[c] = b->next;
        ::operator delete(b);
      }
    }
  }
};

thread_local FreeLists lists;

size_t class_of(size_t size) { return (size + kGranule - 1) / kGranule - 1; }

}  // namespace

void* frame_allocate(size_t size) {
  size_t c = class_of(size);
  if (c >= kClasses) return ::operator new(size);
  if (FreeBlock* b = lists.head[c]) {
    lists.head[c] = b->next;
    --lists.count[c];
    return b;
  }
  return ::operator new((c + 1) * kGranule);
}

void frame_free(void* p, size_t size) {
  size_t c = class_of(size);
  if (c >= kClasses || lists.count[c] >= kMaxCachedPerClass) {
    ::operator delete(p);
    return;
  }
  auto* b = static_cast<FreeBlock*>(p);
  b->next = lists.head[c];
  lists.head[c] = b;
  ++lists.count[c];
}

}  // namespace kelpie
