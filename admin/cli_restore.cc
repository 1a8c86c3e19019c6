// `vdi restore NAME < FILE`: spools stdin to an unlinked temporary file, verifies the
// whole backup stream, checks that it fits NAME, and only then writes it into NAME
// over NBD.
//
// Order of changes, so that an interruption never leaves a VDI that a later
// differential restore would accept: (1) clear NAME's restored_from, (2) for a full
// stream zero every range the stream does not cover, (3) write the extents, (4) flush,
// (5) record the stream's identity as NAME's restored_from.
#include <libnbd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "admin/admin_client.h"
#include "admin/cli.h"
#include "admin/cli_transfer.h"
#include "admin/nbd_export.h"
#include "common/admin_wire.h"
#include "common/backup_stream.h"

namespace kelpie::cli {
namespace {

constexpr uint64_t kMaxZeroBytes = uint64_t{1} << 30;  // per NBD zero request

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { ::close(fd_); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string spool_directory() {
  const char* tmpdir = std::getenv("TMPDIR");
  return tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/var/tmp";
}

std::string plural(uint64_t count, const char* noun) {
  return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

// Refuses a stream that does not fit `target`: a snapshot, another size, an attached
// VDI, or a differential stream whose base is not what `target` was last restored from.
Status check_target(const VdiSummary& target, const BackupHeader& header) {
  const std::string& name = target.name;
  if (target.read_only) {
    return Status::error(EROFS, "'" + name + "' is a snapshot; restore into a writable VDI");
  }
  if (target.size_bytes != header.size_bytes) {
    return Status::error(EINVAL, "backup stream holds a VDI of " +
                                     std::to_string(header.size_bytes) + " bytes, but VDI '" +
                                     name + "' has " + std::to_string(target.size_bytes) +
                                     " bytes");
  }
  if (target.attached_connections != 0) {
    return Status::error(EBUSY, "VDI '" + name + "' is attached (" +
                                    plural(target.attached_connections, "NBD connection") +
                                    "); detach it before restoring");
  }
  if (!header.is_full() && target.restored_from != header.from_identity) {
    return Status::error(
        EINVAL,
        "stream is a difference from " + header.from_identity + ", but " + name +
            (target.restored_from.empty() ? " was never restored"
                                          : " was last restored from " + target.restored_from));
  }
  return Status::ok();
}

// What the restore changed so far, for the message when it fails part way.
struct RestoreProgress {
  uint64_t gaps = 0;
  uint64_t gaps_zeroed = 0;
  uint64_t extents = 0;
  uint64_t extents_written = 0;
  uint64_t bytes = 0;
  uint64_t bytes_written = 0;
  bool flushed = false;

  std::string describe() const {
    std::string text;
    if (gaps > 0)
      text += "zeroed " + std::to_string(gaps_zeroed) + " of " + plural(gaps, "range") +
              " outside the stream, ";
    text += "wrote " + std::to_string(extents_written) + " of " + plural(extents, "extent") + " (" +
            mib_text(bytes_written) + " of " + mib_text(bytes) + " MiB)";
    text += flushed ? ", flushed" : ", not flushed";
    return text;
  }
};

// The ranges a full stream does not cover, which must read as zeros afterwards.
std::vector<std::pair<uint64_t, uint64_t>> uncovered_ranges(const BackupStreamIndex& index) {
  std::vector<std::pair<uint64_t, uint64_t>> gaps;
  uint64_t position = 0;
  for (const BackupExtent& extent : index.extents) {
    if (extent.offset > position) gaps.emplace_back(position, extent.offset - position);
    position = extent.offset + extent.length_bytes;
  }
  if (position < index.header.size_bytes) {
    gaps.emplace_back(position, index.header.size_bytes - position);
  }
  return gaps;
}

Status zero_range(const NbdExport& nbd, uint64_t offset, uint64_t length,
                  std::vector<uint8_t>& zeros) {
  const bool can_zero = nbd_can_zero(nbd.handle()) == 1;
  const uint64_t step = can_zero ? kMaxZeroBytes : nbd.chunk_bytes();
  if (!can_zero && zeros.size() < step) zeros.assign(step, 0);
  for (uint64_t position = offset; position < offset + length;) {
    uint64_t piece = std::min(step, offset + length - position);
    int rc = can_zero ? nbd_zero(nbd.handle(), piece, position, 0)
                      : nbd_pwrite(nbd.handle(), zeros.data(), piece, position, 0);
    if (rc < 0) return nbd_status(can_zero ? "nbd_zero" : "nbd_pwrite");
    position += piece;
  }
  return Status::ok();
}

Status apply_stream(int stream_fd, const BackupStreamIndex& index, const NbdExport& nbd,
                    RestoreProgress& done) {
  Progress progress("restore", index.data_bytes);
  if (index.header.is_full()) {
    std::vector<uint8_t> zeros;
    std::vector<std::pair<uint64_t, uint64_t>> gaps = uncovered_ranges(index);
    done.gaps = gaps.size();
    for (const auto& [offset, length] : gaps) {
      if (Status status = zero_range(nbd, offset, length, zeros); !status) return status;
      ++done.gaps_zeroed;
    }
  }
  std::vector<uint8_t> buffer(kMaxBackupExtentBytes);
  for (const BackupExtent& extent : index.extents) {
    Status read = read_backup_extent(stream_fd, extent, buffer);
    if (!read) return with_errno_text(read);
    for (uint64_t done_bytes = 0; done_bytes < extent.length_bytes;) {
      uint64_t piece = std::min<uint64_t>(nbd.chunk_bytes(), extent.length_bytes - done_bytes);
      if (nbd_pwrite(nbd.handle(), buffer.data() + done_bytes, piece, extent.offset + done_bytes,
                     0) < 0) {
        return nbd_status("nbd_pwrite");
      }
      done_bytes += piece;
      done.bytes_written += piece;
      progress.add(piece);
    }
    ++done.extents_written;
  }
  if (nbd_flush(nbd.handle(), 0) < 0) return nbd_status("nbd_flush");
  done.flushed = true;
  progress.finish(index.extents.size(), index.data_bytes);
  return Status::ok();
}

}  // namespace

Status run_vdi_restore(const CliInvocation& cli, Args args) {
  const std::string& name = args[0];
  if (name.find('@') != std::string::npos) {
    return Status::error(EROFS, "'" + name + "' is a snapshot; restore into a writable VDI");
  }
  if (::isatty(STDIN_FILENO)) {
    return Status::error(
        EINVAL, "refusing to read a backup stream from a terminal; redirect stdin from a file");
  }
  Result<int> spooled = spool_backup_stream(STDIN_FILENO, spool_directory());
  if (!spooled) return with_errno_text(spooled.status());
  UniqueFd stream(*spooled);
  Result<BackupStreamIndex> index = verify_backup_stream(stream.get());
  if (!index) return with_errno_text(index.status());

  Result<AdminClient> client = AdminClient::connect(cli.address);
  if (!client) return client.status();
  Result<VdiSummary> target = decode_vdi(client->call("vdi.info", {{"name", name}}), cli.address);
  if (!target) return target.status();
  if (Status status = check_target(*target, index->header); !status) return status;
  NbdExport nbd;
  if (Status status = nbd.connect(*client, name); !status) return status;
  if (nbd.read_only()) return Status::error(EROFS, "VDI '" + name + "' is exported read-only");
  if (nbd.size_bytes() != index->header.size_bytes) {
    return Status::error(EAGAIN, "VDI '" + name + "' changed size to " +
                                     std::to_string(nbd.size_bytes()) +
                                     " bytes; nothing was changed");
  }

  RestoreProgress done{.extents = index->extents.size(), .bytes = index->data_bytes};
  Status cleared =
      client->call("vdi.set_restored_from", {{"name", name}, {"identity", ""}}).status();
  if (!cleared) return cleared;
  Status applied = apply_stream(stream.get(), *index, nbd, done);
  if (applied) {
    // A fresh connection: the data may have taken longer than the admin idle timeout.
    Result<AdminClient> recorder = AdminClient::connect(cli.address);
    applied = recorder ? recorder
                             ->call("vdi.set_restored_from",
                                    {{"name", name}, {"identity", index->header.to_identity}})
                             .status()
                       : recorder.status();
    if (!applied) {
      return Status::error(applied.code(),
                           "restored VDI '" + name +
                               "' completely, but could not record it: " + applied.message() +
                               " (a differential restore onto it will be refused)");
    }
    return Status::ok();
  }
  return Status::error(applied.code(), "restore into VDI '" + name +
                                           "' failed: " + applied.message() +
                                           "; done before the failure: " + done.describe() + "; '" +
                                           name + "' now holds a partial restore");
}

}  // namespace kelpie::cli
