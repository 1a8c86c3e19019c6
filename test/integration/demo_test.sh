#!/usr/bin/env bash
# Issue 13, case 7: `make demo` works from a clean run directory, every time. Runs
# scripts/demo.sh (what `make demo` / `make stop` run) on fresh directories and
# private ports: five times the 3-node cluster (3 copies), once NODES=1. Each
# start must print every node's URI, and each URI must serve VDI "demo" (64 MiB)
# right away; stop must end every kelpied it started.
source "$(dirname "$0")/harness.sh"

DEMO="$(dirname "$0")/../../scripts/demo.sh"
BUILD_DIR="$KELPIE_BIN_DIR/.."
TMP="$KELPIE_TEST_DIR/demo_test.files"
rm -rf "$TMP"
mkdir -p "$TMP"
kSize=$((64 << 20))

# What demo.sh started runs detached (setsid): end it whatever happened. Its own
# ports only: without them demo.sh would address a demo on the default ports.
RUN=""
NBD_BASE=""
ADMIN_BASE=""
demo_sh() { NBD_LISTEN="127.0.0.1:$NBD_BASE" ADMIN_LISTEN="127.0.0.1:$ADMIN_BASE" "$DEMO" "$@"; }
cleanup_demo() {
  [ -n "$RUN" ] || return 0
  demo_sh stop "$RUN" "$BUILD_DIR" >/dev/null 2>&1 || true
  local pid_file pid
  for pid_file in "$RUN"/*.pid; do
    [ -s "$pid_file" ] || continue
    pid=$(tr -dc '0-9' <"$pid_file")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = kelpied ]; then kill -9 "$pid" 2>/dev/null || true; fi
  done
}
trap 'cleanup_demo; cleanup_kelpied' EXIT

# Every kelpied whose pid file is in RUN has exited.
all_stopped() {
  local pid_file pid
  for pid_file in "$RUN"/*.pid; do
    [ -s "$pid_file" ] || continue
    pid=$(tr -dc '0-9' <"$pid_file")
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = kelpied ] && return 1
  done
  return 0
}

demo_round() {
  local round=$1 nodes=$2 out uri uris size
  RUN="$TMP/run$round"
  NBD_BASE=$("$SYS_PYTHON" "$(dirname "$0")/free_port.py" --count "$nodes")
  ADMIN_BASE=$("$SYS_PYTHON" "$(dirname "$0")/free_port.py" --count "$nodes")
  out="$TMP/start$round.out"
  demo_sh start "$RUN" "$BUILD_DIR" demo 64M "$nodes" "$nodes" >"$out" 2>&1 || {
    cat "$out" >&2
    tail -n 20 "$RUN"/*.log >&2 || true
    fail "round $round: demo.sh start ($nodes nodes) failed"
  }
  mapfile -t uris < <(grep -o "^nbd://127.0.0.1:[0-9]*/demo$" "$out")
  [ "${#uris[@]}" = "$nodes" ] || { cat "$out" >&2; fail "round $round: ${#uris[@]} NBD URIs printed, want $nodes"; }
  for uri in "${uris[@]}"; do
    size=$(nbdinfo --size "$uri" 2>&1) || fail "round $round: nbdinfo $uri right after start: $size"
    [ "$size" = "$kSize" ] || fail "round $round: $uri has size $size, want $kSize"
  done
  demo_sh stop "$RUN" "$BUILD_DIR" >>"$out" 2>&1 || { cat "$out" >&2; fail "round $round: demo.sh stop failed"; }
  poll_until 30 all_stopped || fail "round $round: a kelpied of $RUN still runs after demo.sh stop"
  echo "round $round: $nodes node(s) started, ${uris[*]} served $kSize bytes, stopped"
}

for round in 1 2 3 4 5; do demo_round "$round" 3; done
demo_round 6 1
echo PASS
