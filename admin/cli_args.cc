#include <string_view>

#include "admin/cli.h"

namespace kelpie::cli {
namespace {

Status usage_error(std::string message) { return Status::error(EINVAL, std::move(message)); }

}  // namespace

const char* usage_text() {
  return "usage: kelpie [--addr HOST:PORT] COMMAND [ARGS...]\n"
         "\n"
         "Commands:\n"
         "  vdi create NAME SIZE [--object-size 4M]  create a VDI (object size 1M..64M)\n"
         "  vdi list [--json]                        list VDIs and snapshots\n"
         "  vdi tree [NAME] [--json]                 show VDIs, snapshots and clones as trees\n"
         "  vdi info NAME[@TAG] [--json]             show one VDI or snapshot\n"
         "  vdi delete NAME[@TAG]                    delete a VDI with its snapshots, or one\n"
         "                                           snapshot\n"
         "  vdi resize NAME SIZE                     grow or shrink a VDI\n"
         "  vdi read NAME[@TAG] [OFFSET [LEN]]       copy bytes to stdout\n"
         "  vdi write NAME [OFFSET]                  copy stdin into the VDI\n"
         "  vdi snapshot NAME [--tag TAG]            freeze NAME as NAME@TAG (default TAG: the\n"
         "                                           next number); prints NAME@TAG\n"
         "  vdi clone NAME@TAG NEWNAME               new VDI sharing the snapshot's data\n"
         "  vdi rollback NAME@TAG                    make NAME's contents the snapshot's again\n"
         "  vdi backup NAME@TAG [--from NAME@OLD] > FILE\n"
         "                                           write a full (or differential) backup\n"
         "                                           stream of the snapshot to stdout\n"
         "  vdi restore NAME < FILE                  verify a backup stream, then write it\n"
         "                                           into NAME (same size, detached)\n"
         "  vdi check NAME [--repair] [--json]       check (and repair) the copies of a\n"
         "                                           VDI's objects\n"
         "  node info [--json]                       show the daemon\n"
         "\n"
         "Cluster commands (a kelpied started with --cluster):\n"
         "  cluster format [--copies N] [--min-copies M]\n"
         "                                           create the cluster: N copies of each\n"
         "                                           object (1..8, default 3), at least M\n"
         "                                           of them (1..N, default min(2, N))\n"
         "  cluster info [--json]                    status, epoch, warnings, epoch history\n"
         "  cluster check [--repair] [--json]        check (and repair) every object's copies\n"
         "  cluster shutdown                         stop every node cleanly\n"
         "  cluster recover force                    leave 'waiting' with the nodes up now\n"
         "  node list [--json]                       the cluster's nodes\n"
         "  node recovery [--json]                   each node's recovery progress\n"
         "  node kill ID                             stop a node (full id or unique prefix)\n"
         "\n"
         "Options:\n"
         "  --addr HOST:PORT  kelpied admin address (default $KELPIE_ADDR, else 127.0.0.1:7000)\n"
         "  --json            machine-readable output\n"
         "  --help            this text\n"
         "\n"
         "SIZE, OFFSET and LEN take K/M/G/T suffixes (powers of 1024); VDI sizes must be\n"
         "multiples of 512 bytes. restore spools its input in $TMPDIR (default /var/tmp).\n"
         "Errors are one line on stderr; exit status 1, or 2 for usage errors. The check\n"
         "commands exit 1 when problems remain unrepaired.\n";
}

Result<CliInvocation> parse_cli_args(int argc, char** argv, const char* env_address) {
  CliInvocation cli;
  std::optional<std::string> address;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      cli.words.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    std::string_view name = arg;
    std::optional<std::string> inline_value;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = std::string(arg.substr(eq + 1));
    }
    // Takes the option's value from "--name=value" or the next argument.
    auto value = [&]() -> Result<std::string> {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) return usage_error("option " + std::string(name) + " needs a value");
      return std::string(argv[++i]);
    };
    if (name == "--help" || name == "-h") {
      cli.help = true;
    } else if (name == "--version") {
      cli.version = true;
    } else if (name == "--json") {
      if (inline_value) return usage_error("option --json takes no value");
      cli.json = true;
      cli.options_seen.emplace_back(name);
    } else if (name == "--repair") {
      if (inline_value) return usage_error("option --repair takes no value");
      cli.repair = true;
      cli.options_seen.emplace_back(name);
    } else if (name == "--addr") {
      Result<std::string> text = value();
      if (!text) return text.status();
      address = *text;
    } else if (name == "--object-size" || name == "--tag" || name == "--from" ||
               name == "--copies" || name == "--min-copies") {
      Result<std::string> text = value();
      if (!text) return text.status();
      std::optional<std::string>& field = name == "--object-size" ? cli.object_size
                                          : name == "--tag"       ? cli.tag
                                          : name == "--from"      ? cli.from
                                          : name == "--copies"    ? cli.copies
                                                                  : cli.min_copies;
      field = *text;
      cli.options_seen.emplace_back(name);
    } else {
      return usage_error("unknown option '" + std::string(arg) + "' (try 'kelpie --help')");
    }
  }
  if (address) {
    cli.address = *address;
  } else if (env_address != nullptr && *env_address != '\0') {
    cli.address = env_address;
  } else {
    cli.address = kDefaultAddress;
  }
  return cli;
}

}  // namespace kelpie::cli
