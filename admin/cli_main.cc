// kelpie: the admin CLI. Finds the command, checks its arguments and options, runs
// it, and turns a failure into one line "kelpie: <message>" on stderr.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "admin/cli.h"

namespace kelpie::cli {
namespace {

struct CommandSpec {
  std::string_view group;
  std::string_view verb;
  std::string_view arguments;  // usage after "kelpie GROUP VERB"
  size_t min_arguments;
  size_t max_arguments;
  std::initializer_list<std::string_view> options;
  Status (*run)(const CliInvocation&, Args);
  // Optional checks of the arguments and option values that need no daemon; a
  // failure is a usage error (exit 2).
  Status (*check)(const CliInvocation&, Args) = nullptr;
};

const CommandSpec kCommands[] = {
    {"vdi", "create", "NAME SIZE [--object-size 4M]", 2, 2, {"--object-size"}, run_vdi_create},
    {"vdi", "list", "[--json]", 0, 0, {"--json"}, run_vdi_list},
    {"vdi", "tree", "[NAME] [--json]", 0, 1, {"--json"}, run_vdi_tree},
    {"vdi", "info", "NAME[@TAG] [--json]", 1, 1, {"--json"}, run_vdi_info},
    {"vdi", "delete", "NAME[@TAG]", 1, 1, {}, run_vdi_delete},
    {"vdi", "resize", "NAME SIZE", 2, 2, {}, run_vdi_resize},
    {"vdi", "read", "NAME[@TAG] [OFFSET [LEN]]", 1, 3, {}, run_vdi_read},
    {"vdi", "write", "NAME [OFFSET]", 1, 2, {}, run_vdi_write},
    {"vdi", "snapshot", "NAME [--tag TAG]", 1, 1, {"--tag"}, run_vdi_snapshot},
    {"vdi", "clone", "NAME@TAG NEWNAME", 2, 2, {}, run_vdi_clone},
    {"vdi", "rollback", "NAME@TAG", 1, 1, {}, run_vdi_rollback},
    {"vdi", "backup", "NAME@TAG [--from NAME@OLD] > FILE", 1, 1, {"--from"}, run_vdi_backup},
    {"vdi", "restore", "NAME < FILE", 1, 1, {}, run_vdi_restore},
    {"vdi", "check", "NAME [--repair] [--json]", 1, 1, {"--repair", "--json"}, run_vdi_check},
    {"node", "info", "[--json]", 0, 0, {"--json"}, run_node_info},
    {"node", "list", "[--json]", 0, 0, {"--json"}, run_node_list},
    {"node", "recovery", "[--json]", 0, 0, {"--json"}, run_node_recovery},
    {"node", "kill", "ID", 1, 1, {}, run_node_kill},
    {"cluster", "format", "[--copies N] [--min-copies M] [--json]", 0, 0,
     {"--copies", "--min-copies", "--json"}, run_cluster_format, check_cluster_format},
    {"cluster", "info", "[--json]", 0, 0, {"--json"}, run_cluster_info},
    {"cluster", "check", "[--repair] [--json]", 0, 0, {"--repair", "--json"}, run_cluster_check},
    {"cluster", "shutdown", "", 0, 0, {}, run_cluster_shutdown},
    {"cluster", "recover", "force", 1, 1, {}, run_cluster_recover, check_cluster_recover},
};

int fail(int exit_code, const std::string& message) {
  std::fprintf(stderr, "kelpie: %s\n", message.c_str());
  return exit_code;
}

std::string command_usage(const CommandSpec& command) {
  std::string usage = "usage: kelpie " + std::string(command.group) + " " +
                      std::string(command.verb);
  if (!command.arguments.empty()) usage += " " + std::string(command.arguments);
  return usage;
}

int run(int argc, char** argv) {
  Result<CliInvocation> parsed = parse_cli_args(argc, argv, std::getenv("KELPIE_ADDR"));
  if (!parsed) return fail(kExitUsage, parsed.status().message());
  const CliInvocation& cli = *parsed;
  if (cli.help) {
    std::fputs(usage_text(), stdout);
    return kExitOk;
  }
  if (cli.version) {
    std::printf("kelpie %s\n", KELPIE_VERSION);
    return kExitOk;
  }
  if (cli.words.empty()) return fail(kExitUsage, "missing command (try 'kelpie --help')");
  const std::string& group = cli.words[0];
  bool group_known = std::any_of(std::begin(kCommands), std::end(kCommands),
                                 [&](const CommandSpec& c) { return c.group == group; });
  if (!group_known) {
    return fail(kExitUsage, "unknown command '" + group + "' (try 'kelpie --help')");
  }
  if (cli.words.size() < 2) {
    return fail(kExitUsage, "missing subcommand after '" + group + "' (try 'kelpie --help')");
  }
  const std::string& verb = cli.words[1];
  const CommandSpec* command = nullptr;
  for (const CommandSpec& candidate : kCommands) {
    if (candidate.group == group && candidate.verb == verb) command = &candidate;
  }
  if (command == nullptr) {
    return fail(kExitUsage, "unknown command '" + group + " " + verb + "' (try 'kelpie --help')");
  }
  Args arguments = Args(cli.words).subspan(2);
  if (arguments.size() < command->min_arguments) {
    return fail(kExitUsage, "missing arguments; " + command_usage(*command));
  }
  if (arguments.size() > command->max_arguments) {
    return fail(kExitUsage, "too many arguments; " + command_usage(*command));
  }
  for (const std::string& option : cli.options_seen) {
    if (std::find(command->options.begin(), command->options.end(), option) ==
        command->options.end()) {
      return fail(kExitUsage, "option " + option + " does not apply; " + command_usage(*command));
    }
  }
  if (command->check != nullptr) {
    if (Status usage = command->check(cli, arguments); !usage) {
      return fail(kExitUsage, usage.message());
    }
  }
  Status status = command->run(cli, arguments);
  if (!status) {
    return fail(kExitError,
                status.message().empty() ? std::strerror(status.code()) : status.message());
  }
  return kExitOk;
}

}  // namespace
}  // namespace kelpie::cli

int main(int argc, char** argv) { return kelpie::cli::run(argc, argv); }
