// kelpied: the node daemon. Parses flags, opens the Node, serves until SIGTERM/SIGINT.
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "common/log.h"
#include "daemon/admin_server.h"
#include "daemon/node.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace {

constexpr char kUsage[] =
    "usage: kelpied --data DIR [--nbd-listen HOST:PORT|none] [--nbd-unix PATH|none]\n"
    "               [--admin-listen HOST:PORT] [--threads N] [--poll-us N] [--log-level LEVEL]\n"
    "               [--log-file FILE] [--pid-file FILE]\n"
    "               [--cluster local:STATE_DIR|zookeeper:HOST:PORT[,...]/PATH[?session_timeout_ms=N]\n"
    "                [--listen HOST:PORT|unix:PATH] [--zone ZONE] [--vnodes N|auto] [--gateway]\n"
    "                [--full-ratio R] [--unreachable-timeout SECONDS]]\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "kelpied: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

struct Flags {
  kelpie::NodeOptions node;
  std::string log_level = "info";
  std::string log_file;
  std::string pid_file;
};

Flags parse_flags(int argc, char** argv) {
  Flags flags;
  bool full_ratio_set = false;
  bool unreachable_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--version") {
      std::printf("kelpied %s\n", KELPIE_VERSION);
      std::exit(0);
    }
    if (arg == "--gateway") {
      flags.node.gateway = true;
      continue;
    }
    if (i + 1 >= argc) usage_error("option " + arg + " needs a value");
    std::string value = argv[++i];
    if (arg == "--data") {
      flags.node.data_dir = value;
    } else if (arg == "--nbd-listen") {
      flags.node.nbd_tcp = value;
    } else if (arg == "--nbd-unix") {
      flags.node.nbd_unix = value;
    } else if (arg == "--admin-listen") {
      flags.node.admin_address = value;
    } else if (arg == "--threads") {
      char* end = nullptr;
      long n = std::strtol(value.c_str(), &end, 10);
      if (*end != '\0' || n < 1 || n > 256) usage_error("--threads must be a number from 1 to 256");
      flags.node.threads = static_cast<unsigned>(n);
    } else if (arg == "--poll-us") {
      // The longest adaptive poll of a reactor before it sleeps (engine/reactor.h).
      char* end = nullptr;
      long n = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || n < 0 || n > 1000) {
        usage_error("--poll-us must be a number of microseconds from 0 to 1000 (0: never poll)");
      }
      flags.node.poll_us = static_cast<unsigned>(n);
    } else if (arg == "--log-level") {
      if (value != "trace" && value != "debug" && value != "info" && value != "warn" &&
          value != "error" && value != "critical") {
        usage_error("--log-level must be trace, debug, info, warn, error or critical");
      }
      flags.log_level = value;
    } else if (arg == "--log-file") {
      flags.log_file = value;
    } else if (arg == "--pid-file") {
      flags.pid_file = value;
    } else if (arg == "--cluster") {
      if (value.rfind("local:", 0) != 0 && value.rfind("zookeeper:", 0) != 0) {
        usage_error("--cluster must be local:STATE_DIR or zookeeper:HOST:PORT[,...]/PATH");
      }
      if (value == "local:") usage_error("--cluster local: needs a state directory");
      flags.node.cluster = value;
    } else if (arg == "--listen") {
      flags.node.listen = value;
    } else if (arg == "--zone") {
      flags.node.zone = value;
    } else if (arg == "--vnodes") {
      flags.node.vnodes = value;
    } else if (arg == "--full-ratio") {
      // New objects are refused above this share of the data filesystem (rule 4).
      char* end = nullptr;
      double ratio = std::strtod(value.c_str(), &end);
      if (*end != '\0' || !(ratio > 0.0 && ratio <= 1.0)) {
        usage_error("--full-ratio must be a number in (0, 1] (1 turns the check off)");
      }
      flags.node.full_ratio = ratio;
      full_ratio_set = true;
    } else if (arg == "--unreachable-timeout") {
      // A storage peer every call to which failed this long is reported unreachable;
      // two members' reports evict it (cluster/peer_reachability.h).
      char* end = nullptr;
      long seconds = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || seconds < 1 || seconds > 3600) {
        usage_error("--unreachable-timeout must be a number of seconds from 1 to 3600");
      }
      flags.node.unreachable_timeout = std::chrono::seconds(seconds);
      unreachable_set = true;
    } else {
      usage_error("unknown option " + arg);
    }
  }
  if (flags.node.data_dir.empty()) usage_error("--data DIR is required");
  if (flags.node.gateway && flags.node.cluster.empty()) usage_error("--gateway needs --cluster");
  if (flags.node.cluster.empty() &&
      (!flags.node.listen.empty() || !flags.node.zone.empty() || flags.node.vnodes != "auto")) {
    usage_error("--listen, --zone and --vnodes need --cluster");
  }
  if (full_ratio_set && (flags.node.cluster.empty() || flags.node.gateway)) {
    usage_error("--full-ratio is for storage nodes of a cluster (--cluster without --gateway)");
  }
  if (unreachable_set && flags.node.cluster.empty()) usage_error("--unreachable-timeout needs --cluster");
  // Test-only fault hook (cluster/peer_transport.h): never set in production.
  if (const char* file = std::getenv("KELPIE_TEST_REFUSE_PEERS_FILE"); file != nullptr && *file != '\0') {
    flags.node.test_refuse_peers_file = file;
  }
  return flags;
}

void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags = parse_flags(argc, argv);
  if (::mkdir(flags.node.data_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    std::fprintf(stderr, "kelpied: cannot create %s: %s\n", flags.node.data_dir.c_str(), std::strerror(errno));
    return 1;
  }
  char resolved[PATH_MAX];
  if (::realpath(flags.node.data_dir.c_str(), resolved) != nullptr) flags.node.data_dir = resolved;
  kelpie::init_logging(flags.log_level, flags.log_file);

  // Signals are taken by sigwait() below; every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  // An NBD server on the host of its own kernel client must not wait on reclaim.
  prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);

  kelpie::Node node(flags.node);
  if (kelpie::Status st = node.open(); !st.is_ok()) {
    std::fprintf(stderr, "kelpied: %s\n", st.to_string().c_str());
    KELPIE_LOG_CRITICAL("start-up failed: {}", st.to_string());
    return 1;
  }
  kelpie::AdminServer admin(node, flags.node.admin_address);
  if (kelpie::Status st = admin.start(); !st.is_ok()) {
    std::fprintf(stderr, "kelpied: %s\n", st.to_string().c_str());
    KELPIE_LOG_CRITICAL("start-up failed: {}", st.to_string());
    return 1;
  }
  if (!flags.pid_file.empty()) std::ofstream(flags.pid_file) << ::getpid() << "\n";
  KELPIE_LOG_INFO("ready; admin on {}", flags.node.admin_address);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  KELPIE_LOG_INFO("signal {}: shutting down", signal_number);
  admin.stop();
  node.close();
  if (!flags.pid_file.empty()) ::unlink(flags.pid_file.c_str());
  KELPIE_LOG_INFO("clean shutdown");
  return 0;
}
