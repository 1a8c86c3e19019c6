// `vdi snapshot`, `vdi clone`, `vdi rollback`: one request each. Snapshot names are
// checked here (NAME@TAG) so that a mistyped one never reaches the daemon.
#include <cstdio>

#include "admin/cli.h"
#include "common/admin_wire.h"

namespace kelpie::cli {

Status run_vdi_snapshot(const CliInvocation& cli, Args args) {
  Result<VdiSummary> snapshot = decode_vdi(
      call_daemon(cli, "vdi.snapshot", {{"name", args[0]}, {"tag", cli.tag.value_or("")}}),
      cli.address);
  if (!snapshot) return snapshot.status();
  std::printf("%s\n", display_name(*snapshot).c_str());
  return flush_stdout();
}

Status run_vdi_clone(const CliInvocation& cli, Args args) {
  if (Status status = require_snapshot_name(args[0]); !status) return status;
  return call_daemon(cli, "vdi.clone", {{"snapshot", args[0]}, {"new_name", args[1]}}).status();
}

Status run_vdi_rollback(const CliInvocation& cli, Args args) {
  if (Status status = require_snapshot_name(args[0]); !status) return status;
  return call_daemon(cli, "vdi.rollback", {{"snapshot", args[0]}}).status();
}

}  // namespace kelpie::cli
