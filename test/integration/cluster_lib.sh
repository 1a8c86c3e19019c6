# shellcheck shell=bash
# Helpers for the cluster integration tests (issues 3 and 4): several kelpied on
# this host sharing one membership (a `local` state directory, or ZooKeeper). Source it after
# harness.sh; it also sources lifecycle_lib.sh (qio, export_md5, check_json,
# json_get). Nodes are numbered from 1; every node keeps its data directory,
# ports and log across restarts.
#
#   start_cluster N [COPIES [MIN]]  N storage nodes, formatted (COPIES 3, MIN
#                             min(2, COPIES)); returns once every node reports
#                             the format epoch and "running", and serves.
#   start_node I [FLAGS...]   starts (or restarts) node I; FLAGS (e.g. --gateway)
#                             are remembered for later restarts of I. Returns once
#                             its admin port answers: it may not serve yet.
#   wait_serving I [DEADLINE_S]  node I serves VDI commands and NBD (its VDI
#                             directory is open; before, it answers "the node is
#                             starting" and NBD connects are refused).
#   kill_node I / stop_node I kill -9 / SIGTERM, and wait for the exit.
#   sigstop_node I / sigcont_node I
#   kill_all_nodes            kill -9 every running node at once, wait for all.
#   ncli I ARGS...            the kelpie CLI against node I.
#   node_admin I / node_nbd I / node_uri I VDI / node_id I
#   up_nodes                  numbers of the nodes started and not killed/stopped.
#   cluster_epoch             the epoch the first up node reports.
#   wait_epoch_at_least E [DEADLINE_S]   every up node reports epoch >= E, running.
#   wait_settled STORAGE [DEADLINE_S]    every up node reports the same epoch,
#                             "running" and STORAGE storage nodes; prints nothing.
#   wait_recovery_done [DEADLINE_S]      every storage node "done" at the current epoch.
#   copies_of_vdi VDI         `vdi check VDI --json` finds no issue; prints the
#                             number of copies every object has (fails otherwise).
#   wait_copies VDI N [DEADLINE_S]       polls until copies_of_vdi VDI is N.
#   fio_run OUT URI SIZE FLAGS...  fio's nbd engine with crc32c verify headers
#                             (bsrange 4k-64k, iodepth 16, randrepeat); fails unless
#                             fio exits 0 with no job error. fio_start/fio_wait: the
#                             same in the background (FIO_PID).
#   acked_start URI LOG ARGS... / acked_wait / acked_verify URI LOG ARGS...
#                             cluster_acked_io.py write in the background (ACKED_PID),
#                             its exit status (0 done, 3 server went away), and verify.
#   acked_count LOG           writes acknowledged so far; acked_at_least LOG N.
#   expect_all_alive          fails if a node that should run has exited.
#   dump_logs                 the tail of every node's log (called on failure).
#   cluster_spec              the --cluster value every node gets.
# Every daemon started here is killed (-9) when the test exits; a test that sets
# its own EXIT trap calls cluster_cleanup from it.
#
# The membership driver comes from KELPIE_MEMBERSHIP (CTest sets it per entry):
#   local      (default) a state directory $CL_DIR/state shared by the nodes.
#   zookeeper  start_cluster starts a private ZooKeeper (zookeeper_lib.sh) in
#              $CL_DIR/zookeeper on a free loopback port; every node gets
#              zookeeper:127.0.0.1:PORT/kelpie/<test> with a session timeout of
#              CL_ZK_SESSION_MS (default 3000) ms. The server stops when the test exits.
# shellcheck disable=SC2034  # used by the tests

source "$(dirname "${BASH_SOURCE[0]}")/lifecycle_lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/zookeeper_lib.sh"

KELPIE_MEMBERSHIP=${KELPIE_MEMBERSHIP:-local}
case "$KELPIE_MEMBERSHIP" in
  local | zookeeper) ;;
  *) echo "FAIL: KELPIE_MEMBERSHIP must be local or zookeeper, not '$KELPIE_MEMBERSHIP'" >&2; exit 1 ;;
esac
CL_ZK_SESSION_MS=${CL_ZK_SESSION_MS:-3000}

# fd 8 is the test's stderr, so failures inside a poll_until predicate (whose
# output poll_until discards) still show.
exec 8>&2
CL_NAME=$(basename "$0" | sed 's/\.[a-z]*$//')
[ "$KELPIE_MEMBERSHIP" = local ] || CL_NAME="${CL_NAME}_zk"
CL_DIR="$KELPIE_TEST_DIR/$CL_NAME.cluster"
CL_STATE="$CL_DIR/state"
CL_PID=()
CL_ADMIN=()
CL_NBD_PORT=()
CL_FLAGS=()
CL_ID=()
CL_UP=()       # 1 while the node runs and is not SIGSTOPped
kMaxNodes=16

cluster_cleanup() {
  local i
  for i in "${!CL_PID[@]}"; do
    [ -n "${CL_PID[$i]}" ] || continue
    kill -CONT "${CL_PID[$i]}" 2>/dev/null || true
    kill -9 "${CL_PID[$i]}" 2>/dev/null || true
  done
  cleanup_kelpied
}
trap cluster_cleanup EXIT

dump_logs() {
  local i
  exec 3>&2 2>&8
  for i in "${!CL_PID[@]}"; do
    echo "---- node $i (${CL_ID[$i]:-?}) log tail: $CL_DIR/n$i.log" >&2
    tail -n 25 "$CL_DIR/n$i.log" >&2 2>/dev/null || true
    [ -s "$CL_DIR/n$i.out" ] && { echo "---- node $i stdout/stderr:" >&2; tail -n 10 "$CL_DIR/n$i.out" >&2; }
  done
  if [ "$KELPIE_MEMBERSHIP" = zookeeper ] && [ -n "$ZK_DIR" ]; then
    echo "---- zookeeper ($ZK_ADDR) output tail: $ZK_DIR/zookeeper.out" >&2
    tail -n 10 "$ZK_DIR/zookeeper.out" >&2 2>/dev/null || true
  fi
  exec 2>&3 3>&-
  return 0
}

cluster_spec() {
  if [ "$KELPIE_MEMBERSHIP" = zookeeper ]; then
    zookeeper_spec "kelpie/$CL_NAME" "$CL_ZK_SESSION_MS"
  else
    echo "local:$CL_STATE"
  fi
}

expect_all_alive() {
  local i
  for i in $(up_nodes); do node_alive "$i" || cfail "node $i (${CL_ID[$i]}) exited unexpectedly"; done
}

# Every failure (also those of lifecycle_lib's helpers) shows each node's log tail.
fail() {
  dump_logs
  echo "FAIL: $*" >&8
  exit 1
}
cfail() { fail "$@"; }

ncli() {
  local i=$1; shift
  "$KELPIE" --addr "${CL_ADMIN[$i]}" "$@"
}

node_admin() { echo "${CL_ADMIN[$1]}"; }
node_nbd() { echo "127.0.0.1:${CL_NBD_PORT[$1]}"; }
node_uri() { echo "nbd://127.0.0.1:${CL_NBD_PORT[$1]}/$2"; }
node_id() { echo "${CL_ID[$1]}"; }
node_alive() { [ -n "${CL_PID[$1]:-}" ] && kill -0 "${CL_PID[$1]}" 2>/dev/null; }

up_nodes() {
  local i out=()
  for i in "${!CL_UP[@]}"; do [ "${CL_UP[$i]}" = 1 ] && out+=("$i"); done
  echo "${out[@]}"
}

first_up() {
  local nodes
  read -ra nodes <<<"$(up_nodes)"
  [ "${#nodes[@]}" -gt 0 ] || fail "no node is up"
  echo "${nodes[0]}"
}

start_node() {
  local i=$1; shift
  [ "$i" -ge 1 ] && [ "$i" -le $kMaxNodes ] || fail "node number $i out of range"
  if [ -z "${CL_ADMIN[$i]:-}" ]; then
    CL_ADMIN[$i]="127.0.0.1:$(free_port)"
    CL_NBD_PORT[$i]=$(free_port)
    CL_FLAGS[$i]="$*"
  fi
  node_alive "$i" && fail "node $i is already running"
  local flags
  read -ra flags <<<"${CL_FLAGS[$i]}"
  mkdir -p "$CL_DIR"
  "$KELPIED" --data "$CL_DIR/n$i" --cluster "$(cluster_spec)" \
    --nbd-listen "127.0.0.1:${CL_NBD_PORT[$i]}" --nbd-unix "$CL_DIR/n$i.sock" \
    --admin-listen "${CL_ADMIN[$i]}" --threads 1 --log-file "$CL_DIR/n$i.log" \
    "${flags[@]}" </dev/null >>"$CL_DIR/n$i.out" 2>&1 &
  CL_PID[$i]=$!
  KD_PIDS+=("${CL_PID[$i]}")
  local end=$((SECONDS + 20))
  until ncli "$i" node info >/dev/null 2>&1; do
    node_alive "$i" || cfail "node $i exited while starting (log: $CL_DIR/n$i.log)"
    [ $SECONDS -lt $end ] || cfail "node $i did not answer on ${CL_ADMIN[$i]} within 20s"
    sleep 0.05
  done
  CL_ID[$i]=$(json_get "$(ncli "$i" node info --json)" 'doc["node_uuid"]')
  CL_UP[$i]=1
  echo "node $i: pid ${CL_PID[$i]} id ${CL_ID[$i]} admin ${CL_ADMIN[$i]} nbd $(node_nbd "$i") ${CL_FLAGS[$i]}"
}

# Waits (bounded) for node I's process to end; fails past the deadline.
_wait_exit() {
  local i=$1 deadline_s=$2 end=$((SECONDS + $2))
  while node_alive "$i"; do
    [ $SECONDS -lt $end ] || cfail "node $i (pid ${CL_PID[$i]}) still running ${deadline_s}s later"
    sleep 0.05
  done
  wait "${CL_PID[$i]}" 2>/dev/null || true
}

kill_node() {
  echo "kill -9 node $1 (${CL_ID[$1]})"
  kill -9 "${CL_PID[$1]}" 2>/dev/null || true
  CL_UP[$1]=0
  _wait_exit "$1" 10
}

stop_node() {
  echo "SIGTERM node $1 (${CL_ID[$1]})"
  kill -TERM "${CL_PID[$1]}" 2>/dev/null || true
  CL_UP[$1]=0
  _wait_exit "$1" 30
}

kill_all_nodes() {
  local i pids=()
  for i in $(up_nodes); do pids+=("${CL_PID[$i]}"); CL_UP[$i]=0; done
  echo "kill -9 all nodes (pids ${pids[*]})"
  kill -9 "${pids[@]}" 2>/dev/null || true
  for i in "${!CL_PID[@]}"; do _wait_exit "$i" 10; done
}

sigstop_node() { echo "SIGSTOP node $1"; kill -STOP "${CL_PID[$1]}"; CL_UP[$1]=0; }
sigcont_node() { echo "SIGCONT node $1"; kill -CONT "${CL_PID[$1]}"; CL_UP[$1]=1; }

# `vdi info` answers from the open VDI directory only: a VDI, or "not found".
_serving() {
  local answer
  answer=$(ncli "$1" vdi info serving-probe 2>&1 >/dev/null) || [[ "$answer" == *"not found"* ]]
}

wait_serving() {
  local i=$1 deadline_s=${2:-30}
  poll_until "$deadline_s" _serving "$i" ||
    cfail "node $i does not serve within ${deadline_s}s: $(ncli "$i" vdi info serving-probe 2>&1)"
}

cluster_field() {
  local i=$1 expr=$2 json
  json=$(ncli "$i" cluster info --json 2>/dev/null) || return 1
  json_get "$json" "$expr"
}

cluster_epoch() { cluster_field "$(first_up)" 'doc["epoch"]'; }

_all_at_least() {
  local e=$1 i
  for i in $(up_nodes); do
    [ "$(cluster_field "$i" 'doc["status"]')" = running ] || return 1
    [ "$(cluster_field "$i" 'doc["epoch"]')" -ge "$e" ] || return 1
  done
}

wait_epoch_at_least() {
  local e=$1 deadline_s=${2:-30}
  poll_until "$deadline_s" _all_at_least "$e" ||
    cfail "not every up node ($(up_nodes)) reached epoch $e within ${deadline_s}s: $(_epochs)"
}

_epochs() {
  local i
  for i in $(up_nodes); do
    echo -n "node $i: $(cluster_field "$i" '(doc["status"], doc["epoch"], doc["storage_nodes"])' 2>&1); "
  done
}

_settled() {
  local storage=$1 i epoch="" e
  for i in $(up_nodes); do
    [ "$(cluster_field "$i" 'doc["status"]')" = running ] || return 1
    [ "$(cluster_field "$i" 'doc["storage_nodes"]')" = "$storage" ] || return 1
    e=$(cluster_field "$i" 'doc["epoch"]') || return 1
    [ -z "$epoch" ] || [ "$epoch" = "$e" ] || return 1
    epoch=$e
  done
}

wait_settled() {
  local storage=$1 deadline_s=${2:-30}
  poll_until "$deadline_s" _settled "$storage" ||
    cfail "the up nodes ($(up_nodes)) did not agree on an epoch with $storage storage nodes within ${deadline_s}s: $(_epochs)"
}

_recovery_done() {
  local i epoch storage json
  i=$(first_up)
  epoch=$(cluster_field "$i" 'doc["epoch"]') || return 1
  storage=$(cluster_field "$i" 'doc["storage_nodes"]') || return 1
  json=$(ncli "$i" node recovery --json 2>/dev/null) || return 1
  check_json "$json" "len(doc) == $storage" \
    "all(r['epoch'] == $epoch and r['state'] == 'done' for r in doc)" 2>/dev/null
}

wait_recovery_done() {
  local deadline_s=${1:-60}
  poll_until "$deadline_s" _recovery_done || {
    ncli "$(first_up)" node recovery --json >&2 || true
    cfail "recovery not done on every node within ${deadline_s}s: $(_epochs)"
  }
}

# Prints the copies per object of VDI, or a reason on stderr and status 1.
_copies() {
  local vdi=$1 json status=0
  json=$(ncli "$(first_up)" vdi check "$vdi" --json 2>"$CL_DIR/check.err") || status=$?
  if [ "$status" != 0 ] && [ -z "$json" ]; then
    echo "vdi check $vdi exited $status: $(cat "$CL_DIR/check.err")" >&2
    return 1
  fi
  "$SYS_PYTHON" - "$json" "$status" <<'PY'
import json, sys
doc, status = json.loads(sys.argv[1]), int(sys.argv[2])
objects, copies = doc["objects_checked"], doc["copies_checked"]
if doc["issues"] or status != 0:
    print(f"vdi check exit {status}, issues: {json.dumps(doc['issues'])[:2000]}", file=sys.stderr)
    sys.exit(1)
if objects == 0 or copies % objects:
    print(f"{copies} copies of {objects} objects", file=sys.stderr)
    sys.exit(1)
print(copies // objects)
PY
}

copies_of_vdi() {
  local n
  n=$(_copies "$1") || cfail "vdi check $1 does not show every object with the same number of good copies"
  echo "$n"
}

_copies_are() { [ "$(_copies "$1" 2>/dev/null)" = "$2" ]; }

wait_copies() {
  local vdi=$1 want=$2 deadline_s=${3:-60}
  poll_until "$deadline_s" _copies_are "$vdi" "$want" || {
    _copies "$vdi" >&2 || true
    cfail "VDI $vdi: objects do not have $want good copies within ${deadline_s}s"
  }
  echo "VDI $vdi: every object has $want copies (vdi check)"
}

start_cluster() {
  local n=$1 copies=${2:-3} min=${3:-}
  [ -n "$min" ] || min=$((copies < 2 ? copies : 2))
  rm -rf "$CL_DIR"
  mkdir -p "$CL_DIR"
  if [ "$KELPIE_MEMBERSHIP" = zookeeper ]; then
    start_zookeeper "$CL_DIR/zookeeper" || cfail "could not start ZooKeeper"
  fi
  local i
  for ((i = 1; i <= n; i++)); do start_node "$i"; done
  ncli 1 cluster format --copies "$copies" --min-copies "$min" ||
    cfail "cluster format --copies $copies --min-copies $min failed"
  wait_settled "$n"
  for ((i = 1; i <= n; i++)); do wait_serving "$i"; done
  echo "cluster of $n ($KELPIE_MEMBERSHIP: $(cluster_spec)): epoch $(cluster_epoch), copies $copies, min $min"
}

# Usage: fio_start OUT URI SIZE FLAGS...  runs fio in the background (FIO_PID);
# fio_wait OUT checks it like fio_run.
fio_start() {
  local out=$1 uri=$2 size=$3; shift 3
  echo "$uri $*" >"$out.what"
  fio --name=verify --ioengine=nbd --uri="$uri" --bsrange=4k-64k --iodepth=16 \
    --size="$size" --verify=crc32c --verify_fatal=1 --randrepeat=1 --verify_state_save=0 \
    --output-format=json "$@" >"$out" 2>"$out.err" &
  FIO_PID=$!
}

fio_wait() {
  local out=$1 status=0
  wait "$FIO_PID" || status=$?
  "$SYS_PYTHON" - "$out" "$status" <<'PY' || { cat "$out.err" >&2; cfail "fio $(cat "$out.what") failed"; }
import json, sys
text = open(sys.argv[1]).read()
status = int(sys.argv[2])
try:
    job = json.loads(text[text.index("{"):])["jobs"][0]
except ValueError:
    print(f"fio exit {status}, no JSON report", file=sys.stderr)
    sys.exit(1)
print(f"fio: exit={status} error={job['error']} written={job['write']['io_bytes']} read={job['read']['io_bytes']}")
sys.exit(0 if status == 0 and job["error"] == 0 else 1)
PY
}

fio_run() {
  fio_start "$@"
  fio_wait "$1"
}

ACKED_IO="$(dirname "${BASH_SOURCE[0]}")/cluster_acked_io.py"

acked_start() {
  local uri=$1 log=$2; shift 2
  rm -f "$log" "$log.status" "$log.pid"
  # The exit status goes to a file: acked_wait often runs in a $(...) subshell,
  # where `wait` can not reap the writer. ACKED_PID is the writer itself.
  { local st=0
    "$SYS_PYTHON" "$ACKED_IO" write "$uri" "$log" "$@" 2>"$log.err" &
    echo $! >"$log.pid"
    wait $! || st=$?
    echo "$st" >"$log.status"; } &
  poll_until 10 test -s "$log.pid" || cfail "acked writer did not start"
  ACKED_PID=$(cat "$log.pid")
}

# Prints the writer's exit status: 0 (all writes done) or 3 (its server went away).
acked_wait() {
  local status
  poll_until 120 test -s "$1.status" || cfail "acked writer did not end within 120s"
  status=$(cat "$1.status")
  [ "$status" = 0 ] || [ "$status" = 3 ] || { cat "$1.err" >&2; cfail "acked writer crashed ($status)"; }
  echo "$status"
}

acked_count() { grep -c '^A ' "$1" 2>/dev/null || true; }
acked_at_least() {
  kill -0 "$ACKED_PID" 2>/dev/null || cfail "acked writer ended early: $(cat "$1.err")"
  [ "$(acked_count "$1")" -ge "$2" ]
}

acked_verify() {
  local uri=$1 log=$2; shift 2
  "$SYS_PYTHON" "$ACKED_IO" verify "$uri" "$log" "$@" ||
    cfail "$PHASE: acknowledged writes wrong through $uri"
}
