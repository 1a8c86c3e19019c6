# shellcheck shell=bash
# A private ZooKeeper server for a test (issue 4): Debian's `zookeeper` package
# (the real server, /usr/share/java/zookeeper.jar), run as a plain java process on
# loopback with its own data directory. No zookeeperd system service is needed or
# touched. Works with `set -euo pipefail`; needs only bash, java and python3.
#
#   start_zookeeper DIR [PORT]  starts a standalone server whose config, data and
#                       log live in DIR (made; emptied first), on 127.0.0.1:PORT
#                       (default: a free port; pass the old port to keep it across
#                       a restart). Returns once it serves requests (`srvr` shows
#                       its mode; deadline ZK_START_DEADLINE_S, default 30 s). Exports
#                       ZK_DIR, ZK_PORT, ZK_ADDR (127.0.0.1:PORT) and ZK_PID.
#   stop_zookeeper      SIGTERM, then SIGKILL after 10 s; waits for the exit.
#                       Keeps DIR (a restart finds its data again). Safe to call
#                       twice or when none runs.
#   kill_zookeeper      SIGKILL at once (a crash); waits for the exit.
#   restart_zookeeper   stop_zookeeper, then the same server again: same DIR, port
#                       and data (sessions survive if the client reconnects within
#                       their timeout).
#   zookeeper_up        true while the server serves requests (`srvr` shows
#                       "Mode:"; `ruok` says "imok" before it is ready).
#   zk_four_letter CMD  prints the answer to a four-letter word (ruok, srvr, mntr).
#   zookeeper_spec PATH [TIMEOUT_MS]  prints zookeeper:127.0.0.1:PORT/PATH, with
#                       ?session_timeout_ms=TIMEOUT_MS when given (kelpied --cluster).
#
# The server is also stopped when the test exits: start_zookeeper chains
# stop_zookeeper after whatever EXIT trap is set when it runs (so daemons are
# killed before their ZooKeeper goes; set yours first, or call stop_zookeeper
# from it); ZK_NO_EXIT_TRAP=1 leaves the server
# running past the shell (the C++ test fixture stops it by ZK_PID itself).
# Server output: DIR/zookeeper.out.

ZK_DIR=""
ZK_PORT=""
ZK_ADDR=""
ZK_PID=""
: "${ZK_START_DEADLINE_S:=30}"
ZK_JAVA=${ZK_JAVA:-/usr/bin/java}
ZK_CLASSPATH=${ZK_CLASSPATH:-/usr/share/java/zookeeper.jar}

_zk_python() { "${SYS_PYTHON:-/usr/bin/python3}" "$@"; }

_zk_free_port() {
  _zk_python "$(dirname "${BASH_SOURCE[0]}")/free_port.py"
}

zk_four_letter() {
  _zk_python - "$ZK_PORT" "$1" <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(sys.argv[2].encode())
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    sys.stdout.write(out.decode(errors="replace"))
except OSError as e:
    print(f"zookeeper on port {sys.argv[1]}: {e}", file=sys.stderr)
    sys.exit(1)
PY
}

zookeeper_up() {
  [ -n "$ZK_PORT" ] || return 1
  zk_four_letter srvr 2>/dev/null | grep -q '^Mode: '

}

_zk_alive() { [ -n "$ZK_PID" ] && kill -0 "$ZK_PID" 2>/dev/null; }

_zk_launch() {
  [ -x "$ZK_JAVA" ] || { echo "FAIL: no java at $ZK_JAVA (install zookeeper: scripts/install-deps.sh)" >&2; return 1; }
  [ -r "${ZK_CLASSPATH%%:*}" ] || { echo "FAIL: no $ZK_CLASSPATH (install zookeeper: scripts/install-deps.sh)" >&2; return 1; }
  cat >"$ZK_DIR/zoo.cfg" <<EOF
tickTime=500
initLimit=10
syncLimit=5
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,mntr,stat,cons
minSessionTimeout=1000
maxSessionTimeout=60000
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
  cat >"$ZK_DIR/log4j.properties" <<'EOF'
log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %m%n
EOF
  mkdir -p "$ZK_DIR/data"
  # setsid: the server is not in the test's process group, so a ^C to the test
  # does not hit it before the trap stops it; its pid is java itself.
  setsid "$ZK_JAVA" -Xmx256m -XX:+UseSerialGC -Dzookeeper.log.dir="$ZK_DIR" \
    -Dlog4j.configuration="file:$ZK_DIR/log4j.properties" \
    -Dzookeeper.admin.enableServer=false -Dzookeeper.jmx.log4j.disable=true \
    -cp "$ZK_CLASSPATH" org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_DIR/zoo.cfg" \
    </dev/null >>"$ZK_DIR/zookeeper.out" 2>&1 &
  ZK_PID=$!
  echo "$ZK_PID" >"$ZK_DIR/zookeeper.pid"
  local end=$((SECONDS + ZK_START_DEADLINE_S))
  until zookeeper_up; do
    if ! _zk_alive; then
      tail -n 20 "$ZK_DIR/zookeeper.out" >&2 || true
      echo "FAIL: zookeeper exited while starting (see $ZK_DIR/zookeeper.out)" >&2
      return 1
    fi
    if [ $SECONDS -ge $end ]; then
      tail -n 20 "$ZK_DIR/zookeeper.out" >&2 || true
      echo "FAIL: zookeeper did not serve on $ZK_ADDR within ${ZK_START_DEADLINE_S}s" >&2
      return 1
    fi
    sleep 0.1
  done
  export ZK_DIR ZK_PORT ZK_ADDR ZK_PID
  echo "zookeeper: pid $ZK_PID on $ZK_ADDR (dir $ZK_DIR)"
}

start_zookeeper() {
  local dir=${1:?start_zookeeper DIR [PORT]} port=${2:-}
  _zk_alive && stop_zookeeper
  ZK_DIR=$dir
  rm -rf "$ZK_DIR"
  mkdir -p "$ZK_DIR"
  ZK_DIR=$(cd "$ZK_DIR" && pwd)
  ZK_PORT=${port:-$(_zk_free_port)}
  ZK_ADDR="127.0.0.1:$ZK_PORT"
  if [ -z "${_ZK_TRAP_SET:-}" ] && [ -z "${ZK_NO_EXIT_TRAP:-}" ]; then
    _ZK_TRAP_SET=1
    local previous
    previous=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
    # shellcheck disable=SC2064  # the previous trap is expanded now, on purpose
    trap "${previous:-:}; stop_zookeeper >/dev/null 2>&1 || true" EXIT
  fi
  _zk_launch
}

_zk_wait_exit() {
  local deadline_s=$1 end=$((SECONDS + $1))
  while _zk_alive; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.05
  done
  wait "$ZK_PID" 2>/dev/null || true
}

stop_zookeeper() {
  _zk_alive || { ZK_PID=""; return 0; }
  kill -TERM "$ZK_PID" 2>/dev/null || true
  if ! _zk_wait_exit 10; then
    kill -9 "$ZK_PID" 2>/dev/null || true
    _zk_wait_exit 10 || { echo "FAIL: zookeeper pid $ZK_PID does not exit" >&2; return 1; }
  fi
  echo "zookeeper stopped (pid $ZK_PID)"
  ZK_PID=""
}

kill_zookeeper() {
  _zk_alive || { ZK_PID=""; return 0; }
  kill -9 "$ZK_PID" 2>/dev/null || true
  _zk_wait_exit 10 || { echo "FAIL: zookeeper pid $ZK_PID does not exit" >&2; return 1; }
  echo "zookeeper killed (pid $ZK_PID)"
  ZK_PID=""
}

restart_zookeeper() {
  [ -n "$ZK_DIR" ] || { echo "FAIL: restart_zookeeper before start_zookeeper" >&2; return 1; }
  stop_zookeeper
  _zk_launch
}

zookeeper_spec() {
  local path=${1:?zookeeper_spec PATH [TIMEOUT_MS]} timeout_ms=${2:-}
  path=${path#/}
  echo "zookeeper:$ZK_ADDR/$path${timeout_ms:+?session_timeout_ms=$timeout_ms}"
}
