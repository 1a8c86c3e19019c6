#include "engine/dirty_log.h"

#include <fcntl.h>

#include <cstring>

#include "common/bytes.h"
#include "common/crc32c.h"
#include "engine/buffer.h"

namespace kelpie {

Task<Status> DirtyLog::open() {
  auto fd = co_await io_.open(path_, O_RDWR | O_CREAT | O_TRUNC);
  if (!fd) co_return fd.status();
  fd_ = *fd;
  size_bytes_ = 0;
  co_return Status::ok();
}

void DirtyLog::close() {
  if (fd_ >= 0) io_.close(fd_);
  fd_ = -1;
}

Task<Status> DirtyLog::append(DirtyRecord record) {
  if (!failure_.is_ok()) co_return failure_;
  pending_.push_back(record);
  uint64_t my_batch = next_batch_;
  if (!committing_) {
    committing_ = true;
    while (!pending_.empty() && failure_.is_ok()) {
      Status st = co_await commit_pending();
      if (!st.is_ok()) failure_ = st;
    }
    committing_ = false;
  }
  while (durable_batch_ < my_batch && failure_.is_ok()) co_await batch_done_.wait();
  co_return failure_;
}

Task<Status> DirtyLog::commit_pending() {
  std::vector<DirtyRecord> batch;
  batch.swap(pending_);
  uint64_t batch_id = next_batch_++;
  Buffer buf = Buffer::get(batch.size() * kRecordSize);
  std::memset(buf.data(), 0, buf.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    uint8_t* p = buf.data() + i * kRecordSize;
    batch[i].id.encode(p);
    put_le32(p + 16, batch[i].object_size);
    put_le32(p + 28, crc32c(p, 28));
  }
  Status st = co_await io_.write(fd_, buf.span(), size_bytes_, false);
  if (st.is_ok()) st = co_await io_.datasync(fd_);
  if (st.is_ok()) size_bytes_ += buf.size();
  durable_batch_ = batch_id;
  batch_done_.set();
  batch_done_.reset();
  co_return st;
}

Status DirtyLog::reset() {
  KELPIE_ASSERT(!busy());
  if (size_bytes_ == 0) return Status::ok();
  Status st = io_.truncate(fd_, 0);
  if (st.is_ok()) size_bytes_ = 0;
  return st;
}

std::vector<DirtyRecord> DirtyLog::parse(std::span<const uint8_t> bytes) {
  std::vector<DirtyRecord> records;
  for (size_t off = 0; off + kRecordSize <= bytes.size(); off += kRecordSize) {
    const uint8_t* p = bytes.data() + off;
    if (get_le32(p + 28) != crc32c(p, 28)) break;
    auto id = ObjectId::decode(p);
    if (!id) break;
    records.push_back(DirtyRecord{*id, get_le32(p + 16)});
  }
  return records;
}

}  // namespace kelpie
