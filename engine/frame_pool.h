// Per-thread free lists for coroutine frames and other small fixed-size blocks.
//
// Contract: frame_allocate(n) returns memory for n bytes, aligned for any type;
// frame_free(p, n) must get the same n. Blocks may be freed on a thread other
// than the one that allocated them; they then join that thread's free list.
// Each list keeps at most a bounded number of blocks, so idle memory is bounded.
#pragma once

#include <cstddef>

namespace kelpie {

void* frame_allocate(size_t size);
void frame_free(void* p, size_t size);

}  // namespace kelpie
