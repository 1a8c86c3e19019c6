# shellcheck shell=bash disable=SC2154 # the constants below come from the caller
# Shared by the benchmark scripts (sourced). Callers define note(),
# kStopDeadlineSeconds and kStartDeadlineSeconds before calling these.

# alive PID: true while the process runs; a zombie (exited, not reaped) is gone.
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ -n "$state" ] && [ "$state" != Z ]
}

# stop_process PID LABEL: SIGTERM, SIGKILL after kStopDeadlineSeconds (with a
# warning), then reap it; returns its exit status.
stop_process() {
  local pid=$1 label=$2
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + kStopDeadlineSeconds))
    while alive "$pid"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        note "warning: $label (pid $pid) ignored SIGTERM for ${kStopDeadlineSeconds}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  fi
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

# --- kelpied clusters on this host ------------------------------------------
# A kelpied cluster here is N daemons sharing one `local` membership state
# directory, one reactor thread each, peers on Unix sockets in their data
# directories, NBD on a Unix socket, admin on 127.0.0.1 (as
# test/integration/cluster_lib.sh starts them).

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_taken() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# json_get JSON EXPR: prints EXPR evaluated over doc = the parsed JSON;
# status 1 (and nothing printed) if JSON does not parse or EXPR fails.
json_get() {
  /usr/bin/python3 -c 'import json, sys
try:
    doc = json.loads(sys.argv[1])
    print(eval(sys.argv[2]))
except Exception:
    sys.exit(1)' "$1" "$2" 2>/dev/null
}

# start_cluster_node KELPIED KELPIE DATA STATE SOCKET ADMIN LOG [FLAGS...]:
# starts one node in the background, sets started_pid, and returns once its
# admin port answers; status 1 (log tail on stderr) if it exits or does not
# answer within kStartDeadlineSeconds.
started_pid=""
start_cluster_node() {
  local kelpied=$1 kelpie=$2 data=$3 state=$4 socket=$5 admin=$6 log=$7
  shift 7
  # Its stdout/stderr join its own log: start-up errors are printed, not logged.
  # shellcheck disable=SC2094
  "$kelpied" --data "$data" --cluster "local:$state" --nbd-listen none \
    --nbd-unix "$socket" --admin-listen "$admin" --log-file "$log" \
    "$@" </dev/null >>"$log" 2>&1 &
  started_pid=$!
  local deadline=$((SECONDS + kStartDeadlineSeconds))
  until "$kelpie" --addr "$admin" node info >/dev/null 2>&1; do
    if ! alive "$started_pid" || [ "$SECONDS" -ge "$deadline" ]; then
      note "kelpied ($data) did not answer on $admin within ${kStartDeadlineSeconds}s; log tail:"
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

# cluster_settled KELPIE STORAGE ADMIN...: every node through its ADMIN reports
# status "running", STORAGE storage nodes and the same epoch; prints that epoch.
cluster_settled() {
  local kelpie=$1 storage=$2 admin json line epoch=""
  shift 2
  for admin in "$@"; do
    json=$("$kelpie" --addr "$admin" cluster info --json 2>/dev/null) || return 1
    line=$(json_get "$json" '"%s %d %d" % (doc["status"], doc["storage_nodes"], doc["epoch"])') || return 1
    [ "${line% *}" = "running $storage" ] || return 1
    [ -z "$epoch" ] || [ "$epoch" = "${line##* }" ] || return 1
    epoch=${line##* }
  done
  echo "$epoch"
}

# wait_cluster_settled DEADLINE_S KELPIE STORAGE ADMIN...: polls cluster_settled
# until it holds (prints the epoch) or DEADLINE_S passes (status 1).
wait_cluster_settled() {
  local deadline=$((SECONDS + $1))
  shift
  until cluster_settled "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
