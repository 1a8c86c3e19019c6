// `vdi read` and `vdi write`: find the daemon's NBD endpoint through the admin
// API, then move the bytes with libnbd in chunks of at most 4 MiB. Requests
// are aligned to the export's advertised minimum block size; unaligned edges are
// completed by reading the surrounding blocks (read-modify-write for writes).
#include <libnbd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "admin/cli.h"
#include "admin/nbd_export.h"
#include "common/size_parse.h"

namespace kelpie::cli {
namespace {

uint64_t round_down(uint64_t value, uint64_t unit) { return value / unit * unit; }

Result<uint64_t> parse_offset(const std::string& text) { return parse_size(text); }

Status read_stdin(uint8_t* data, size_t capacity, size_t* filled) {
  while (*filled < capacity) {
    ssize_t n = ::read(STDIN_FILENO, data + *filled, capacity - *filled);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error_number = errno;
      return Status::error(error_number,
                           std::string("read from stdin: ") + std::strerror(error_number));
    }
    if (n == 0) break;
    *filled += static_cast<size_t>(n);
  }
  return Status::ok();
}

// Reads the part of the block at `block_offset` that lies inside the export into
// `data` (which holds a whole block).
Status read_block(const NbdExport& nbd, uint64_t block_offset, uint8_t* data) {
  uint64_t length = std::min(nbd.block_bytes(), nbd.size_bytes() - block_offset);
  if (nbd_pread(nbd.handle(), data, length, block_offset, 0) < 0) return nbd_status("nbd_pread");
  return Status::ok();
}

// Opens NAME's export into `nbd` (not movable: it owns the libnbd handle) and
// returns the optional OFFSET argument, checked against the export's size.
Result<uint64_t> open_at_offset(const CliInvocation& cli, Args args, NbdExport& nbd) {
  const std::string& name = args[0];
  uint64_t offset = 0;
  if (args.size() > 1) {
    Result<uint64_t> parsed = parse_offset(args[1]);
    if (!parsed) return parsed.status();
    offset = *parsed;
  }
  if (Status status = nbd.open(cli.address, name); !status) return status;
  if (offset > nbd.size_bytes()) {
    return Status::error(EINVAL, "offset " + std::to_string(offset) + " is past the end of VDI '" +
                                     name + "' (" + std::to_string(nbd.size_bytes()) + " bytes)");
  }
  return offset;
}

}  // namespace

Status run_vdi_read(const CliInvocation& cli, Args args) {
  const std::string& name = args[0];
  NbdExport nbd;
  Result<uint64_t> opened = open_at_offset(cli, args, nbd);
  if (!opened) return opened.status();
  const uint64_t offset = *opened;
  const uint64_t size = nbd.size_bytes();
  uint64_t length = size - offset;
  if (args.size() > 2) {
    Result<uint64_t> parsed = parse_offset(args[2]);
    if (!parsed) return parsed.status();
    if (*parsed > size - offset) {
      return Status::error(EINVAL, "read of " + std::to_string(*parsed) + " bytes at offset " +
                                       std::to_string(offset) + " goes past the end of VDI '" +
                                       name + "' (" + std::to_string(size) + " bytes)");
    }
    length = *parsed;
  }
  // Read whole aligned chunks covering [offset, offset + length), emit the overlap.
  const uint64_t end = offset + length;
  std::vector<uint8_t> buffer(nbd.chunk_bytes());
  for (uint64_t chunk = round_down(offset, nbd.block_bytes()); chunk < end;) {
    uint64_t chunk_length = std::min(nbd.chunk_bytes(), size - chunk);
    if (nbd_pread(nbd.handle(), buffer.data(), chunk_length, chunk, 0) < 0) {
      return nbd_status("nbd_pread");
    }
    uint64_t from = std::max(chunk, offset);
    uint64_t to = std::min(chunk + chunk_length, end);
    if (Status status = write_stdout(buffer.data() + (from - chunk), to - from); !status) {
      return status;
    }
    chunk += chunk_length;
  }
  return Status::ok();
}

Status run_vdi_write(const CliInvocation& cli, Args args) {
  const std::string& name = args[0];
  NbdExport nbd;
  Result<uint64_t> opened = open_at_offset(cli, args, nbd);
  if (!opened) return opened.status();
  const uint64_t offset = *opened;
  const uint64_t size = nbd.size_bytes();
  const uint64_t block = nbd.block_bytes();
  if (nbd.read_only()) {
    return Status::error(EROFS, "VDI '" + name + "' is exported read-only");
  }
  std::vector<uint8_t> buffer(nbd.chunk_bytes());
  std::vector<uint8_t> tail(block);
  uint64_t chunk = round_down(offset, block);  // export offset of buffer[0]
  size_t filled = offset - chunk;              // bytes of buffer[] already valid
  if (filled > 0) {
    if (Status status = read_block(nbd, chunk, buffer.data()); !status) return status;
  }
  uint64_t written = 0;
  for (;;) {
    size_t prefix = filled;
    size_t capacity = std::min<uint64_t>(buffer.size(), size - chunk);
    if (Status status = read_stdin(buffer.data(), capacity, &filled); !status) return status;
    bool at_eof = filled < capacity;
    if (!at_eof && chunk + capacity == size) {
      uint8_t probe;
      size_t probe_filled = 0;
      if (Status status = read_stdin(&probe, 1, &probe_filled); !status) return status;
      if (probe_filled > 0) {
        return Status::error(ENOSPC, "input goes past the end of VDI '" + name + "' (" +
                                         std::to_string(size) + " bytes; wrote " +
                                         std::to_string(written) + " bytes before the end)");
      }
      at_eof = true;
    }
    if (filled == prefix) break;  // no new data in this chunk
    size_t write_length = filled;
    if (filled % block != 0) {  // complete the last block from the export
      uint64_t tail_start = round_down(filled, block);
      if (Status status = read_block(nbd, chunk + tail_start, tail.data()); !status) return status;
      write_length = std::min<uint64_t>(tail_start + block, size - chunk);
      std::memcpy(buffer.data() + filled, tail.data() + (filled - tail_start),
                  write_length - filled);
    }
    if (nbd_pwrite(nbd.handle(), buffer.data(), write_length, chunk, 0) < 0) {
      return nbd_status("nbd_pwrite");
    }
    written += filled - prefix;
    if (at_eof) break;
    chunk += filled;
    filled = 0;
  }
  if (written > 0 && nbd_flush(nbd.handle(), 0) < 0) return nbd_status("nbd_flush");
  return Status::ok();
}

}  // namespace kelpie::cli
