#!/usr/bin/env bash
# Starts and stops the single-node demo daemon behind `make demo` / `make stop`.
#
#   scripts/demo.sh start RUN_DIR BUILD_DIR NAME SIZE
#   scripts/demo.sh stop  RUN_DIR BUILD_DIR
#
# start: runs BUILD_DIR/bin/kelpied detached, with its data, NBD socket, pid
#   file and log under RUN_DIR; waits (deadline) until the admin port answers;
#   creates VDI NAME of SIZE unless it exists; prints the export's NBD URI on
#   a line of its own. If a kelpied from RUN_DIR already runs, it is reused.
# stop: SIGTERM (kelpied flushes dirty objects and exits), waits, and only
#   past the deadline SIGKILLs; exits 0 when nothing was running.
#
# Optional environment: NBD_LISTEN (default 127.0.0.1:10809) and
# ADMIN_LISTEN (default 127.0.0.1:7000) move the TCP listeners, e.g. to run a
# second demo beside the first.
set -euo pipefail

readonly kStartDeadlineSeconds=20
readonly kStopDeadlineSeconds=30
nbd_listen=${NBD_LISTEN:-127.0.0.1:10809}
admin_listen=${ADMIN_LISTEN:-127.0.0.1:7000}

die() {
  echo "demo: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 start RUN_DIR BUILD_DIR NAME SIZE | stop RUN_DIR BUILD_DIR" >&2
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
  [ $# -eq 4 ] || usage
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
  ensure_vdi "$kelpie" "$name" "$size"
  print_uris "$name" "$socket"
}

stop() {
  [ $# -eq 2 ] || usage
  local run_dir pid_file pid
  run_dir=$(realpath -m "$1")
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

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) usage ;;
esac
