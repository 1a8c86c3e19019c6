// Buffer: a 4 KiB-aligned byte buffer from a per-thread pool.
//
// Contract: Buffer::get(n) returns a buffer of at least n bytes (capacity rounded
// up to a power of two, minimum 4 KiB). Freed buffers return to the pool of the
// thread that frees them. Each thread's pool keeps at most kPoolCapBytes of idle
// buffers, so a burst of large requests (a kernel client may have 128 x 32 MiB in
// flight) grows memory only for as long as it lasts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

namespace kelpie {

class Buffer {
 public:
  static constexpr size_t kPoolCapBytes = size_t{64} << 20;

  Buffer() = default;
  static Buffer get(size_t size);
  Buffer(Buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        capacity_(std::exchange(o.capacity_, 0)),
        size_(std::exchange(o.size_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      capacity_ = std::exchange(o.capacity_, 0);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  ~Buffer() { release(); }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  void release();
  uint8_t* data_ = nullptr;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

}  // namespace kelpie
