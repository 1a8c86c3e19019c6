#!/usr/bin/env bash
# Starts and stops the demo behind `make demo` / `make stop`.
#
#   scripts/demo.sh start RUN_DIR BUILD_DIR NAME SIZE [NODES [COPIES]]
#   scripts/demo.sh stop  RUN_DIR BUILD_DIR
#
# NODES 1 (and COPIES 1): one plain kelpied without --cluster, as below.
# NODES > 1: a cluster on this host: NODES kelpied sharing the `local` membership
#   state directory RUN_DIR/state, node I with data in RUN_DIR/nI, log
#   RUN_DIR/nI.log, NBD on port 10809+I-1 and admin on 7000+I-1 (node 1 has the
#   single node's addresses; NBD_LISTEN and ADMIN_LISTEN move the bases); formatted with COPIES copies (min-copies
#   min(2, COPIES)) unless formatted already; once every node serves VDI commands
#   (deadline), VDI NAME is created and every node's NBD URI printed. stop: `kelpie cluster shutdown`, then waits for every
#   node to exit (SIGKILL past the deadline).
#
# start: runs BUILD_DIR/bin/kelpied detached, with its data, NBD socket, pid
#   file and log under RUN_DIR; waits (deadline) until the admin port answers
#   and the node serves VDI commands; creates VDI NAME of SIZE unless it exists; prints the export's NBD URI on
#   a line of its own. If a kelpied from RUN_DIR already runs, it is reused.
# stop: SIGTERM (kelpied flushes dirty objects and exits), waits, and only
#   past the deadline SIGKILLs; exits 0 when nothing was running.
#
# Optional environment: NBD_LISTEN (default 127.0.0.1:10809) and
# ADMIN_LISTEN (default 127.0.0.1:7000) move the TCP listeners, e.g. to run a
# second demo beside the first.
set -euo pipefail

readonly kStartDeadlineSeconds=20
# From the admin port answering until the node serves VDI commands (a cluster node
# first waits for its first epoch and opens the shared VDI directory).
readonly kServeDeadlineSeconds=60
readonly kStopDeadlineSeconds=30
nbd_listen=${NBD_LISTEN:-127.0.0.1:10809}
admin_listen=${ADMIN_LISTEN:-127.0.0.1:7000}

die() {
  echo "demo: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 start RUN_DIR BUILD_DIR NAME SIZE [NODES [COPIES]] | stop RUN_DIR BUILD_DIR" >&2
  exit 2
}

# True if PID is a live process; a zombie (our own child that exited during
# start-up, not reaped yet) counts as gone.
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ -n "$state" ] && [ "$state" != Z ]
}

# Prints the pid from RUN_DIR's pid file if that process is alive and is a
# kelpied (guards against a stale file whose pid was reused); else nothing.
running_pid() {
  local pid_file=$1 pid comm
  [ -s "$pid_file" ] || return 0
  pid=$(tr -dc '0-9' <"$pid_file")
  [ -n "$pid" ] || return 0
  alive "$pid" || return 0
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  [ "$comm" = kelpied ] || return 0
  echo "$pid"
}

print_uris() {
  local name=$1 socket=$2
  echo "nbd://${nbd_listen}/${name}"
  echo "(or over the Unix socket: nbd+unix:///${name}?socket=${socket})"
}

# Waits until the node at ADDR serves VDI commands: `vdi info NAME` finds NAME or
# says it is not found. Other answers ("the node is starting", "the cluster is not
# formatted yet", no answer) mean not yet; past DEADLINE (a $SECONDS value) it
# fails with the node's last answer.
wait_serving() {
  local kelpie=$1 addr=$2 name=$3 what=$4 deadline=$5 answer
  until answer=$("$kelpie" --addr "$addr" vdi info "$name" 2>&1 >/dev/null); do
    case "$answer" in *"not found"*) return 0 ;; esac
    [ "$SECONDS" -lt "$deadline" ] ||
      die "$what does not serve VDI commands after ${kServeDeadlineSeconds}s: ${answer:-no answer}"
    sleep 0.2
  done
}

ensure_vdi() {
  local kelpie=$1 name=$2 size=$3
  if "$kelpie" vdi info "$name" >/dev/null 2>&1; then
    echo "demo: VDI '$name' exists"
  else
    "$kelpie" vdi create "$name" "$size" >/dev/null || die "could not create VDI '$name' of $size"
    echo "demo: created VDI '$name' ($size)"
  fi
}

start() {
  [ $# -ge 4 ] && [ $# -le 6 ] || usage
  local nodes=${5:-1} copies=${6:-1}
  [[ "$nodes" =~ ^[1-8]$ ]] || die "NODES must be 1..8"
  [[ "$copies" =~ ^[1-8]$ ]] && [ "$copies" -le "$nodes" ] || die "COPIES must be 1..NODES"
  if [ "$nodes" -gt 1 ]; then
    start_cluster "$@"
    return
  fi
  [ ! -s "$1/cluster.nodes" ] || die "a cluster demo runs from $1; 'make stop' first"
  local run_dir build_dir name size
  run_dir=$(realpath -m "$1")
  build_dir=$(realpath -m "$2")
  name=$3
  size=$4
  local kelpied=$build_dir/bin/kelpied kelpie=$build_dir/bin/kelpie
  local pid_file=$run_dir/kelpied.pid log_file=$run_dir/kelpied.log socket=$run_dir/nbd.sock
  [ -x "$kelpied" ] || die "$kelpied not found: build first (make build)"
  [ -x "$kelpie" ] || die "$kelpie not found: build first (make build)"
  export KELPIE_ADDR=$admin_listen

  local pid
  pid=$(running_pid "$pid_file")
  if [ -n "$pid" ]; then
    echo "demo: kelpied already running from $run_dir (pid $pid)"
    wait_serving "$kelpie" "$admin_listen" "$name" "kelpied (pid $pid)" $((SECONDS + kServeDeadlineSeconds))
    ensure_vdi "$kelpie" "$name" "$size"
    print_uris "$name" "$socket"
    return 0
  fi

  mkdir -p "$run_dir"
  rm -f "$pid_file"
  # setsid: the daemon leaves make's session, so a ^C there does not reach it.
  # In a non-interactive shell the background job is no group leader, so
  # setsid execs in place and $! is kelpied's own pid. Its stdout/stderr
  # join its own log, so start-up errors printed before logging begins show.
  # shellcheck disable=SC2094
  setsid "$kelpied" --data "$run_dir/data" --nbd-unix "$socket" \
    --nbd-listen "$nbd_listen" --admin-listen "$admin_listen" \
    --pid-file "$pid_file" --log-file "$log_file" \
    </dev/null >>"$log_file" 2>&1 &
  pid=$!

  local deadline=$((SECONDS + kStartDeadlineSeconds))
  until "$kelpie" node info >/dev/null 2>&1; do
    if ! alive "$pid"; then
      echo "demo: kelpied exited during start-up; last lines of $log_file:" >&2
      tail -n 20 "$log_file" >&2 || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: kelpied (pid $pid) did not answer on $admin_listen within" \
        "${kStartDeadlineSeconds}s; last lines of $log_file:" >&2
      tail -n 20 "$log_file" >&2 || true
      echo "demo: it is still running; 'make stop' ends it" >&2
      # Keep a pid file so that `make stop` can find it.
      [ -s "$pid_file" ] || echo "$pid" >"$pid_file"
      exit 1
    fi
    sleep 0.2
  done
  [ -s "$pid_file" ] || echo "$pid" >"$pid_file"
  echo "demo: kelpied running (pid $pid), data in $run_dir/data, log in $log_file"
  wait_serving "$kelpie" "$admin_listen" "$name" "kelpied (pid $pid; log $log_file)" \
    $((SECONDS + kServeDeadlineSeconds))
  ensure_vdi "$kelpie" "$name" "$size"
  print_uris "$name" "$socket"
}

stop() {
  [ $# -eq 2 ] || usage
  local run_dir pid_file pid
  run_dir=$(realpath -m "$1")
  if [ -s "$run_dir/cluster.nodes" ]; then
    stop_cluster "$run_dir" "$(realpath -m "$2")"
    return
  fi
  pid_file=$run_dir/kelpied.pid
  pid=$(running_pid "$pid_file")
  if [ -z "$pid" ]; then
    echo "demo: no kelpied running from $run_dir"
    rm -f "$pid_file"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + kStopDeadlineSeconds))
  while alive "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: warning: kelpied (pid $pid) still running ${kStopDeadlineSeconds}s" \
        "after SIGTERM; sending SIGKILL (unflushed writes are lost)" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pid_file"
  echo "demo: kelpied (pid $pid) stopped"
}

# ---- a cluster on this host -------------------------------------------------

# Node I listens on the port of NBD_LISTEN / ADMIN_LISTEN plus I-1.
node_admin() { echo "${admin_listen%:*}:$((${admin_listen##*:} + $1 - 1))"; }
node_nbd() { echo "${nbd_listen%:*}:$((${nbd_listen##*:} + $1 - 1))"; }

cluster_status() {
  "$1" --addr "$2" cluster info --json 2>/dev/null |
    sed -n 's/^ *"status": "\([a-z]*\)".*/\1/p'
}

start_cluster() {
  local run_dir build_dir name=$3 size=$4 nodes=$5 copies=$6
  run_dir=$(realpath -m "$1")
  build_dir=$(realpath -m "$2")
  local kelpied=$build_dir/bin/kelpied kelpie=$build_dir/bin/kelpie
  [ -x "$kelpied" ] || die "$kelpied not found: build first (make build)"
  [ -x "$kelpie" ] || die "$kelpie not found: build first (make build)"
  if [ -s "$run_dir/kelpied.pid" ] && [ -n "$(running_pid "$run_dir/kelpied.pid")" ]; then
    die "a single-node demo runs from $run_dir; 'make stop' first"
  fi
  if [ -s "$run_dir/cluster.nodes" ] && [ "$(cat "$run_dir/cluster.nodes")" != "$nodes" ]; then
    die "$run_dir holds a cluster of $(cat "$run_dir/cluster.nodes") nodes; 'make stop' and remove $run_dir first"
  fi
  mkdir -p "$run_dir"
  echo "$nodes" >"$run_dir/cluster.nodes"
  local i pid deadline
  for ((i = 1; i <= nodes; i++)); do
    pid=$(running_pid "$run_dir/n$i.pid")
    if [ -n "$pid" ]; then
      echo "demo: node $i already running (pid $pid)"
      continue
    fi
    # shellcheck disable=SC2094
    setsid "$kelpied" --data "$run_dir/n$i" --cluster "local:$run_dir/state" \
      --nbd-listen "$(node_nbd "$i")" --nbd-unix "$run_dir/n$i.sock" \
      --admin-listen "$(node_admin "$i")" --pid-file "$run_dir/n$i.pid" \
      --log-file "$run_dir/n$i.log" </dev/null >>"$run_dir/n$i.log" 2>&1 &
    pid=$!
    deadline=$((SECONDS + kStartDeadlineSeconds))
    until "$kelpie" --addr "$(node_admin "$i")" node info >/dev/null 2>&1; do
      alive "$pid" || { tail -n 20 "$run_dir/n$i.log" >&2; die "node $i exited during start-up"; }
      [ "$SECONDS" -lt "$deadline" ] ||
        { tail -n 20 "$run_dir/n$i.log" >&2; die "node $i did not answer within ${kStartDeadlineSeconds}s ('make stop' ends it)"; }
      sleep 0.2
    done
    [ -s "$run_dir/n$i.pid" ] || echo "$pid" >"$run_dir/n$i.pid"
    echo "demo: node $i running (pid $pid), data in $run_dir/n$i, log in $run_dir/n$i.log"
  done
  export KELPIE_ADDR
  KELPIE_ADDR=$(node_admin 1)
  if [ "$(cluster_status "$kelpie" "$KELPIE_ADDR")" = unformatted ]; then
    "$kelpie" cluster format --copies "$copies" --min-copies $((copies < 2 ? copies : 2)) >/dev/null ||
      die "cluster format failed"
    echo "demo: formatted the cluster with $copies copies"
  fi
  # Every node, not only node 1: each one's URI is printed below. A node answers
  # "the node is starting" until it has the first epoch and the VDI directory open.
  deadline=$((SECONDS + kServeDeadlineSeconds))
  for ((i = 1; i <= nodes; i++)); do
    wait_serving "$kelpie" "$(node_admin "$i")" "$name" "node $i (log $run_dir/n$i.log)" "$deadline"
  done
  echo "demo: every node serves VDI commands"
  ensure_vdi "$kelpie" "$name" "$size"
  "$kelpie" node list
  for ((i = 1; i <= nodes; i++)); do echo "nbd://$(node_nbd "$i")/${name}"; done
  echo "(any node serves it; one node at a time may have it attached for writing)"
}

stop_cluster() {
  local run_dir=$1 build_dir=$2 nodes i pid pids=() admin=""
  nodes=$(cat "$run_dir/cluster.nodes")
  for ((i = 1; i <= nodes; i++)); do
    pid=$(running_pid "$run_dir/n$i.pid")
    [ -n "$pid" ] || continue
    pids+=("$pid")
    [ -n "$admin" ] || admin=$(node_admin "$i")
  done
  if [ ${#pids[@]} -eq 0 ]; then
    echo "demo: no cluster node running from $run_dir"
    rm -f "$run_dir/cluster.nodes"
    return 0
  fi
  "$build_dir/bin/kelpie" --addr "$admin" cluster shutdown ||
    { echo "demo: cluster shutdown failed; sending SIGTERM" >&2; kill -TERM "${pids[@]}" 2>/dev/null || true; }
  local deadline=$((SECONDS + kStopDeadlineSeconds))
  for pid in "${pids[@]}"; do
    while alive "$pid"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "demo: warning: kelpied (pid $pid) still running ${kStopDeadlineSeconds}s after" \
          "the shutdown; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  done
  for ((i = 1; i <= nodes; i++)); do rm -f "$run_dir/n$i.pid"; done
  rm -f "$run_dir/cluster.nodes"
  echo "demo: cluster of $nodes nodes stopped (pids ${pids[*]})"
}

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) usage ;;
esac
