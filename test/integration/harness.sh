# Shared shell helpers for integration tests. Source it; it sets `set -euo pipefail`.
#
#   start_kelpied NAME [extra kelpied flags...]  starts a daemon with its own data dir,
#       free NBD/admin ports and socket; exports KD_DATA, KD_NBD_PORT, KD_ADMIN,
#       KD_SOCK, KD_PID, KD_URI_BASE (nbd://127.0.0.1:PORT) and waits until it answers.
#   stop_kelpied      SIGTERM and wait for exit (clean shutdown).
#   kill9_kelpied     SIGKILL and wait for exit.
#   restart_kelpied   start again on the same data dir and ports.
#   kcli ARGS...      runs the kelpie CLI against this daemon.
#   poll_until DEADLINE_S CMD...  retries CMD until it succeeds or the deadline passes.
#   fail MSG          prints MSG and exits 1.
# Every daemon started here is killed when the test exits.
set -euo pipefail

: "${KELPIE_BIN_DIR:?set by CTest}"
: "${KELPIE_TEST_DIR:=/tmp/kelpie-test}"
KELPIED="$KELPIE_BIN_DIR/kelpied"
KELPIE="$KELPIE_BIN_DIR/kelpie"
SYS_PYTHON=/usr/bin/python3

fail() { echo "FAIL: $*" >&2; exit 1; }

poll_until() {
  local deadline_s=$1; shift
  local end=$((SECONDS + deadline_s))
  while ! "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.05
  done
}

# A port below the kernel's ephemeral range, never handed out twice in a run
# (free_port.py says why).
free_port() {
  "$SYS_PYTHON" "$(dirname "${BASH_SOURCE[0]}")/free_port.py"
}

KD_PIDS=()
cleanup_kelpied() {
  for p in "${KD_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup_kelpied EXIT

_launch_kelpied() {
  "$KELPIED" --data "$KD_DATA" --nbd-listen "127.0.0.1:$KD_NBD_PORT" --nbd-unix "$KD_SOCK" \
    --admin-listen "$KD_ADMIN" --log-file "$KD_DATA.log" "${KD_FLAGS[@]}" &
  KD_PID=$!
  KD_PIDS+=("$KD_PID")
  poll_until 20 "$KELPIE" --addr "$KD_ADMIN" node info || fail "kelpied did not come up (log: $KD_DATA.log)"
}

start_kelpied() {
  local name=$1; shift
  KD_FLAGS=("$@")
  mkdir -p "$KELPIE_TEST_DIR"
  KD_DATA="$KELPIE_TEST_DIR/$name.data"
  rm -rf "$KD_DATA" "$KD_DATA.log"
  KD_NBD_PORT=$(free_port)
  KD_ADMIN="127.0.0.1:$(free_port)"
  KD_SOCK="$KELPIE_TEST_DIR/$name.sock"
  KD_URI_BASE="nbd://127.0.0.1:$KD_NBD_PORT"
  export KD_DATA KD_NBD_PORT KD_ADMIN KD_SOCK KD_URI_BASE
  _launch_kelpied
}

stop_kelpied() {
  kill -TERM "$KD_PID" 2>/dev/null || true
  wait "$KD_PID" 2>/dev/null || true
}

kill9_kelpied() {
  kill -9 "$KD_PID" 2>/dev/null || true
  wait "$KD_PID" 2>/dev/null || true
}

restart_kelpied() { _launch_kelpied; }

kcli() { "$KELPIE" --addr "$KD_ADMIN" "$@"; }
