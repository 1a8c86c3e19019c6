// `vdi backup NAME@TAG [--from NAME@OLD] > FILE`: asks the daemon which extents the
// snapshot holds (or changed since OLD), reads them from the snapshot's read-only
// NBD export and writes them to stdout as a backup stream (common/backup_stream.h).
#include <libnbd.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <vector>

#include "admin/admin_client.h"
#include "admin/cli.h"
#include "admin/cli_transfer.h"
#include "admin/nbd_export.h"
#include "common/admin_wire.h"
#include "common/backup_stream.h"

namespace kelpie::cli {
namespace {

using nlohmann::json;

Status malformed_plan(const AdminClient& client, const std::string& what) {
  return Status::error(EBADMSG,
                       "malformed backup plan from kelpied at " + client.address() + ": " + what);
}

// Collects the plan's pages (see vdi.backup_plan in daemon/admin_server.h).
Result<BackupPlan> fetch_backup_plan(AdminClient& client, const std::string& to,
                                     const std::string& from) {
  BackupPlan plan;
  uint64_t extent_count = 0;
  do {
    const size_t first = plan.extents.size();
    Result<json> reply =
        client.call("vdi.backup_plan", {{"to", to}, {"from", from}, {"first_extent", first}});
    if (!reply) return reply.status();
    Result<BackupPlan> page = backup_plan_from_json(*reply);
    if (!page) return malformed_plan(client, page.status().message());
    Result<uint64_t> count = json_u64_field(*reply, "extent_count");
    if (!count) return malformed_plan(client, count.status().message());
    if (first == 0) {
      extent_count = *count;
      plan = std::move(*page);
      continue;
    }
    if (page->to_identity != plan.to_identity || page->from_identity != plan.from_identity ||
        page->size_bytes != plan.size_bytes || *count != extent_count) {
      return Status::error(EAGAIN, "snapshot '" + to + "' changed while its backup plan was read");
    }
    if (page->extents.empty()) return malformed_plan(client, "a page holds no extents");
    plan.extents.insert(plan.extents.end(), page->extents.begin(), page->extents.end());
  } while (plan.extents.size() < extent_count);
  if (plan.extents.size() != extent_count) {
    return malformed_plan(client, "more extents than its extent_count");
  }
  // The stream writer would refuse these too, but with a message about the stream.
  uint64_t end = 0;
  for (const auto& [offset, length] : plan.extents) {
    if (length == 0 || offset < end || offset > plan.size_bytes ||
        length > plan.size_bytes - offset) {
      return malformed_plan(client, "extent [" + std::to_string(offset) + ", +" +
                                        std::to_string(length) + ") is empty, out of order " +
                                        "or past the end");
    }
    end = offset + length;
  }
  return plan;
}

uint64_t plan_bytes(const BackupPlan& plan) {
  uint64_t bytes = 0;
  for (const auto& extent : plan.extents) bytes += extent.second;
  return bytes;
}

// Reads every extent of the plan from `nbd` and appends it to the stream.
Status copy_extents(const NbdExport& nbd, const BackupPlan& plan, BackupStreamWriter& writer,
                    Progress& progress) {
  const uint64_t chunk_bytes = std::min<uint64_t>(nbd.chunk_bytes(), kMaxBackupExtentBytes);
  std::vector<uint8_t> buffer(chunk_bytes);
  for (const auto& [offset, length] : plan.extents) {
    for (uint64_t position = offset; position < offset + length;) {
      uint64_t piece = std::min(chunk_bytes, offset + length - position);
      if (nbd_pread(nbd.handle(), buffer.data(), piece, position, 0) < 0) {
        return nbd_status("nbd_pread");
      }
      Status added = writer.add_extent(position, std::span(buffer.data(), piece));
      if (!added) return with_errno_text(added);
      progress.add(piece);
      position += piece;
    }
  }
  return with_errno_text(writer.finish());
}

}  // namespace

Status run_vdi_backup(const CliInvocation& cli, Args args) {
  const std::string& to = args[0];
  const std::string from = cli.from.value_or("");
  if (Status status = require_snapshot_name(to); !status) return status;
  if (cli.from) {
    if (Status status = require_snapshot_name(from); !status) return status;
  }
  if (::isatty(STDOUT_FILENO)) {
    return Status::error(
        EINVAL, "refusing to write a backup stream to a terminal; redirect stdout to a file");
  }
  // A reader that goes away becomes EPIPE from write(2), reported like any error.
  (void)std::signal(SIGPIPE, SIG_IGN);
  Result<AdminClient> client = AdminClient::connect(cli.address);
  if (!client) return client.status();
  Result<BackupPlan> plan = fetch_backup_plan(*client, to, from);
  if (!plan) return plan.status();
  NbdExport nbd;
  if (Status status = nbd.connect(*client, to); !status) return status;
  if (nbd.size_bytes() != plan->size_bytes) {
    return Status::error(EIO, "NBD export '" + to + "' has " + std::to_string(nbd.size_bytes()) +
                                  " bytes, but its backup plan " +
                                  std::to_string(plan->size_bytes));
  }
  BackupStreamWriter writer(STDOUT_FILENO);
  Status header = writer.write_header({.size_bytes = plan->size_bytes,
                                       .object_size_bytes = plan->object_size_bytes,
                                       .to_identity = plan->to_identity,
                                       .from_identity = plan->from_identity});
  if (!header) return with_errno_text(header);
  const uint64_t total_bytes = plan_bytes(*plan);
  Progress progress("backup", total_bytes);
  if (Status status = copy_extents(nbd, *plan, writer, progress); !status) {
    return Status::error(status.code(), status.message() + " (backup stream incomplete: " +
                                            mib_text(writer.data_bytes()) + " of " +
                                            mib_text(total_bytes) + " MiB written)");
  }
  progress.finish(writer.extent_count(), writer.data_bytes());
  return Status::ok();
}

}  // namespace kelpie::cli
