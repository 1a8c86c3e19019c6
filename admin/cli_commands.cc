// The admin commands (one request each to the daemon, then output) and the helpers
// the other command files share.
#include <bit>
#include <cstdio>

#include "admin/admin_client.h"
#include "admin/cli.h"
#include "common/admin_wire.h"
#include "common/size_parse.h"

namespace kelpie::cli {
namespace {

using nlohmann::json;

constexpr uint64_t kSectorBytes = 512;
constexpr unsigned kMinObjectShift = 20;  // 1 MiB
constexpr unsigned kMaxObjectShift = 26;  // 64 MiB

Result<uint64_t> parse_vdi_size(const std::string& text) {
  Result<uint64_t> size = parse_size(text);
  if (!size) return size.status();
  if (*size % kSectorBytes != 0) {
    return Status::error(EINVAL, "size must be a multiple of 512 bytes");
  }
  return size;
}

Result<uint32_t> parse_object_shift(const std::string& text) {
  Result<uint64_t> size = parse_size(text);
  if (!size) return size.status();
  if (!std::has_single_bit(*size) || *size < (uint64_t{1} << kMinObjectShift) ||
      *size > (uint64_t{1} << kMaxObjectShift)) {
    return Status::error(EINVAL, "object size must be a power of two from 1M to 64M");
  }
  return static_cast<uint32_t>(std::countr_zero(*size));
}

}  // namespace

Result<json> call_daemon(const CliInvocation& cli, std::string_view op, json arguments,
                         int reply_timeout_s) {
  Result<AdminClient> client = AdminClient::connect(cli.address);
  if (!client) return client.status();
  if (reply_timeout_s > 0) client->set_reply_timeout_s(reply_timeout_s);
  return client->call(op, std::move(arguments));
}

Status malformed_reply(const std::string& address, const std::string& what) {
  return Status::error(EBADMSG, "malformed reply from kelpied at " + address + ": " + what);
}

Result<VdiSummary> decode_vdi(const Result<json>& reply, const std::string& address) {
  if (!reply) return reply.status();
  Result<VdiSummary> vdi = vdi_from_json(reply.value());
  if (!vdi) {
    return Status::error(
        EBADMSG, "malformed reply from kelpied at " + address + ": " + vdi.status().message());
  }
  return vdi;
}

Result<std::vector<VdiSummary>> list_vdis(const CliInvocation& cli) {
  Result<json> reply = call_daemon(cli, "vdi.list", json::object());
  if (!reply) return reply.status();
  auto vdis_field = reply->find("vdis");
  if (vdis_field == reply->end() || !vdis_field->is_array()) {
    return Status::error(EBADMSG, "malformed reply from kelpied at " + cli.address);
  }
  std::vector<VdiSummary> vdis;
  for (const json& entry : *vdis_field) {
    Result<VdiSummary> vdi = decode_vdi(entry, cli.address);
    if (!vdi) return vdi.status();
    vdis.push_back(std::move(*vdi));
  }
  return vdis;
}

void print_json(const json& value) { std::printf("%s\n", dump_json(value, 2).c_str()); }

Status require_snapshot_name(const std::string& name) {
  size_t at = name.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == name.size()) {
    return Status::error(EINVAL, "'" + name + "' is not a snapshot (expected NAME@TAG)");
  }
  return Status::ok();
}

Status run_vdi_create(const CliInvocation& cli, Args args) {
  Result<uint64_t> size = parse_vdi_size(args[1]);
  if (!size) return size.status();
  uint32_t object_shift = 22;
  if (cli.object_size) {
    Result<uint32_t> shift = parse_object_shift(*cli.object_size);
    if (!shift) return shift.status();
    object_shift = *shift;
  }
  Result<json> reply = call_daemon(
      cli, "vdi.create", {{"name", args[0]}, {"size", *size}, {"object_shift", object_shift}});
  return reply.status();
}

Status run_vdi_list(const CliInvocation& cli, Args) {
  Result<std::vector<VdiSummary>> vdis = list_vdis(cli);
  if (!vdis) return vdis.status();
  sort_vdis(*vdis);
  if (cli.json) {
    json list = json::array();
    for (const VdiSummary& vdi : *vdis) list.push_back(vdi_to_json(vdi));
    print_json(list);
  } else {
    print_vdi_table(*vdis);
  }
  return flush_stdout();
}

Status run_vdi_info(const CliInvocation& cli, Args args) {
  Result<VdiSummary> vdi =
      decode_vdi(call_daemon(cli, "vdi.info", {{"name", args[0]}}), cli.address);
  if (!vdi) return vdi.status();
  if (cli.json) {
    print_json(vdi_to_json(*vdi));
  } else {
    print_vdi_info(*vdi);
  }
  return flush_stdout();
}

Status run_vdi_delete(const CliInvocation& cli, Args args) {
  return call_daemon(cli, "vdi.delete", {{"name", args[0]}}).status();
}

Status run_vdi_resize(const CliInvocation& cli, Args args) {
  Result<uint64_t> size = parse_vdi_size(args[1]);
  if (!size) return size.status();
  return call_daemon(cli, "vdi.resize", {{"name", args[0]}, {"size", *size}}).status();
}

Status run_node_info(const CliInvocation& cli, Args) {
  Result<json> reply = call_daemon(cli, "node.info", json::object());
  if (!reply) return reply.status();
  Result<NodeSummary> node = node_from_json(*reply);
  if (!node) {
    return Status::error(
        EBADMSG, "malformed reply from kelpied at " + cli.address + ": " + node.status().message());
  }
  if (cli.json) {
    print_json(node_to_json(*node));
  } else {
    print_node_info(*node);
  }
  return flush_stdout();
}

}  // namespace kelpie::cli
