#!/usr/bin/env bash
# Recovery benchmark (issue 3): how fast a cluster re-replicates after losing a
# node, and how much client read speed it keeps meanwhile.
#
#   bench/recovery_bench.sh BUILD_DIR          (`make bench` runs it)
#
# Starts kNodes (4) kelpied on this host (BUILD_DIR/bin/kelpied, --cluster
# local:DIR sharing one state dir, --threads 1 each, peers and NBD on Unix
# sockets, admin on free 127.0.0.1 ports), formats them with kCopies (3)
# copies, and stops them at exit (`kelpie cluster shutdown`, then SIGTERM and
# SIGKILL past a deadline). All client I/O is fio's nbd engine through node 1.
#
# 1. Fill: VDI "rbench" (RBENCH_VDI_SIZE, 4 MiB objects); sequential 1 MiB
#    writes, iodepth 8, over its first RBENCH_DATA (2G): every object of that
#    range gets kCopies copies.
# 2. Before: 4k randread, iodepth RBENCH_IODEPTH (32), over the same range,
#    RBENCH_RAMP (2) s ramp + RBENCH_RUNTIME (10) s.
# 3. During: the same randread, started afresh with IOPS logged every second
#    (Unix-time stamps); after RBENCH_LEAD (3) s, `kill -9` node
#    RBENCH_KILL_NODE (2, never node 1). Once a second `kelpie node recovery
#    --json` and `cluster info --json` through node 1 are recorded, until every
#    node of an epoch newer than the kill's reports "done" (or
#    RBENCH_RECOVERY_DEADLINE, 300 s, passes); then fio is stopped (SIGINT).
#    Figures (bench/recovery_report.py):
#    - re-replication rate: the sum over nodes of "done" objects x the object
#      size, over the wall time from the kill to "every node done";
#    - randread IOPS during recovery: mean of the per-second IOPS from the
#      kill to "every node done", as a share of step 2's IOPS (issue 3's
#      target: >= 50%). The seconds before the kill in the same run are shown
#      too, as a second baseline.
#    The polling costs one kelpie and one python3 process per second, on the
#    same 2 cores.
# 4. Check (RBENCH_CHECK=1, the default): `kelpie vdi check rbench --json`
#    (bounded by kCheckTimeoutSeconds) must find every object with kCopies
#    good copies on the survivors.
#
# Every wait has a deadline. Results (fio JSON and logs, the polls, node logs,
# report.txt) stay in RBENCH_DIR/results; the nodes' data is deleted at exit
# unless RBENCH_KEEP_DATA=1.
#
# Environment (defaults in brackets):
#   RBENCH_DIR [BUILD_DIR/recovery-bench]  RBENCH_DATA [2G]  RBENCH_VDI_SIZE [4G]
#   RBENCH_RUNTIME [10]  RBENCH_RAMP [2]  RBENCH_IODEPTH [32]  RBENCH_LEAD [3]
#   RBENCH_KILL_NODE [2]  RBENCH_RECOVERY_DEADLINE [300]  RBENCH_CHECK [1]
#   RBENCH_NODE_ARGS  extra flags of each node ["--threads 1"]
set -euo pipefail
export LC_ALL=C # $EPOCHREALTIME with a '.', whatever the locale

readonly kNodes=4
readonly kCopies=3
readonly kStartDeadlineSeconds=30
readonly kStopDeadlineSeconds=60
readonly kSettleDeadlineSeconds=30
readonly kFillSecondsPerGiB=120 # fill time limit, and at least 60 s
readonly kCheckTimeoutSeconds=300
readonly kVdi=rbench

[ $# -eq 1 ] || {
  echo "usage: $0 BUILD_DIR   (see the header of this script for the environment)" >&2
  exit 2
}
build_dir=$(realpath -m "$1")
bench_src=$(cd "$(dirname "$0")" && pwd)
work_dir=$(realpath -m "${RBENCH_DIR:-$build_dir/recovery-bench}")
data_size=${RBENCH_DATA:-2G}
vdi_size=${RBENCH_VDI_SIZE:-4G}
runtime_s=${RBENCH_RUNTIME:-10}
ramp_s=${RBENCH_RAMP:-2}
iodepth=${RBENCH_IODEPTH:-32}
lead_s=${RBENCH_LEAD:-3}
kill_node=${RBENCH_KILL_NODE:-2}
recovery_deadline_s=${RBENCH_RECOVERY_DEADLINE:-300}
check=${RBENCH_CHECK:-1}
read -ra node_args <<<"${RBENCH_NODE_ARGS:---threads 1}"
kelpie=$build_dir/bin/kelpie
kelpied=$build_dir/bin/kelpied
results=$work_dir/results
state_dir=$work_dir/state

die() {
  echo "rbench: $*" >&2
  exit 1
}
note() { echo "rbench: $*" >&2; }

for tool in fio nbdinfo ss timeout /usr/bin/python3; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh"
done
if [ ! -x "$kelpied" ] || [ ! -x "$kelpie" ]; then
  die "$kelpied or $kelpie missing: build first"
fi
if ! [[ "$kill_node" =~ ^[0-9]+$ ]] || [ "$kill_node" -lt 2 ] || [ "$kill_node" -gt "$kNodes" ]; then
  die "RBENCH_KILL_NODE must be 2..$kNodes (node 1 serves the client)"
fi

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- the cluster ------------------------------------------------------------

node_pid=()   # index = node number
node_admin=()

node_socket() { echo "$work_dir/n$1.sock"; }
node_uri() { echo "nbd+unix:///$kVdi?socket=$(node_socket "$1")"; }
ncli() {
  local i=$1
  shift
  timeout --kill-after=5 30 "$kelpie" --addr "${node_admin[i]}" "$@"
}
up_admins() { # admin addresses of the nodes still running
  local i
  for i in "${!node_pid[@]}"; do
    [ -z "${node_pid[i]}" ] || echo -n "${node_admin[i]} "
  done
}

stop_cluster() {
  local i pids=()
  for i in "${!node_pid[@]}"; do [ -z "${node_pid[i]}" ] || pids+=("${node_pid[i]}"); done
  [ "${#pids[@]}" -gt 0 ] || return 0
  if alive "${node_pid[1]:-0}"; then
    # SIGTERM one by one would make each survivor start a new epoch and recover.
    ncli 1 cluster shutdown >/dev/null 2>&1 ||
      note "warning: kelpie cluster shutdown failed; stopping the nodes one by one"
    local pid deadline=$((SECONDS + kStopDeadlineSeconds))
    for pid in "${pids[@]}"; do
      while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    done
  fi
  for i in "${!node_pid[@]}"; do
    [ -n "${node_pid[i]}" ] || continue
    local rc=0
    stop_process "${node_pid[i]}" "node $i" || rc=$?
    [ "$rc" -eq 0 ] || note "warning: node $i exited with status $rc (log: $results/n$i.log)"
    node_pid[i]=""
  done
}

fio_pid=""
cleanup() {
  if [ -n "$fio_pid" ]; then
    kill -INT "$fio_pid" 2>/dev/null || true
    wait "$fio_pid" 2>/dev/null || true
  fi
  stop_cluster
  if [ "${RBENCH_KEEP_DATA:-0}" != 1 ]; then
    local i
    for ((i = 1; i <= kNodes; i++)); do rm -rf "$work_dir/n$i"; done
    rm -rf "$state_dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_cluster() {
  local i
  for ((i = 1; i <= kNodes; i++)); do
    local attempt
    for attempt in 1 2 3; do
      # Another process may take the port between the pick and kelpied's bind.
      node_admin[i]=127.0.0.1:$(free_port)
      if start_cluster_node "$kelpied" "$kelpie" "$work_dir/n$i" "$state_dir" \
        "$(node_socket "$i")" "${node_admin[i]}" "$results/n$i.log" "${node_args[@]}"; then
        node_pid[i]=$started_pid
        continue 2
      fi
      stop_process "$started_pid" "node $i" || true
      note "node $i did not start (attempt $attempt)"
    done
    die "node $i did not start"
  done
  ncli 1 cluster format --copies "$kCopies" >/dev/null ||
    die "kelpie cluster format --copies $kCopies failed"
  local admins
  read -ra admins <<<"$(up_admins)"
  wait_cluster_settled "$kSettleDeadlineSeconds" "$kelpie" "$kNodes" "${admins[@]}" >/dev/null ||
    die "the $kNodes nodes did not all report 'running' within ${kSettleDeadlineSeconds}s"
  echo "rbench: $kNodes nodes up (pids ${node_pid[*]}), copies $kCopies"
}

# --- fio --------------------------------------------------------------------

# fio_randread OUT EXTRA...: the randread job of steps 2 and 3, in the
# background (fio_pid); its JSON goes to OUT.json.
fio_randread_start() {
  local out=$1
  shift
  fio --name=randread --ioengine=nbd --uri="$(node_uri 1)" --rw=randread --bs=4k \
    --iodepth="$iodepth" --size="$data_size" --time_based --norandommap --randrepeat=0 \
    --lat_percentiles=1 --output-format=json --output="$out.json" "$@" \
    >"$out.fio.log" 2>&1 &
  fio_pid=$!
}

# fio_wait OUT LIMIT_S [interrupted]: waits for fio_pid (SIGINT, then SIGKILL
# past LIMIT_S). "interrupted": we sent SIGINT, so fio's status 128 is a success.
fio_wait() {
  local out=$1 deadline=$((SECONDS + $2)) interrupted=${3:-} rc=0
  while alive "$fio_pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      note "fio ($out) still running after ${2}s: stopping it"
      kill -INT "$fio_pid" 2>/dev/null || true
      sleep 5
      kill -KILL "$fio_pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  wait "$fio_pid" || rc=$?
  fio_pid=""
  [ "$interrupted" != interrupted ] || [ "$rc" -ne 128 ] || rc=0
  if [ "$rc" -ne 0 ]; then
    sed 's/^/  fio: /' "$out.fio.log" | tail -n 5 >&2
    die "fio ($out) failed with status $rc"
  fi
}

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# --- main -------------------------------------------------------------------

mkdir -p "$work_dir"
cd "$work_dir" # fio may leave state files in its working directory
rm -rf "$results" "$state_dir" "$work_dir"/n[0-9]* "$work_dir"/*.sock
mkdir -p "$results"
meta=$results/meta.tsv
record() { printf '%s\t%s\n' "$1" "$2" >>"$meta"; }
record nodes "$kNodes"
record copies "$kCopies"
record node_args "${node_args[*]}"
record data "$data_size"
record iodepth "$iodepth"
record kill_node "$kill_node"
record load_at_start "$(cut -d' ' -f1-3 /proc/loadavg)"
record kelpied "$("$kelpied" --version)"

start_cluster
ncli 1 vdi create "$kVdi" "$vdi_size" >/dev/null || die "kelpie vdi create $kVdi $vdi_size failed"
object_size=$(json_get "$(ncli 1 vdi info "$kVdi" --json)" 'doc["object_size_bytes"]') ||
  die "no object size in kelpie vdi info $kVdi --json"
record object_size "$object_size"

fill_limit=$(($(numfmt --from=iec "$data_size") * kFillSecondsPerGiB / (1 << 30)))
[ "$fill_limit" -ge 60 ] || fill_limit=60
echo "rbench: fill: $data_size, sequential 1M writes, iodepth 8, through node 1"
timeout --kill-after=10 "$fill_limit" fio --name=fill --ioengine=nbd --uri="$(node_uri 1)" \
  --rw=write --bs=1M --iodepth=8 --size="$data_size" --output-format=json \
  --output="$results/fill.json" >"$results/fill.fio.log" 2>&1 ||
  die "fill failed or took over ${fill_limit}s: $(tail -n 3 "$results/fill.fio.log")"

echo "rbench: before: 4k randread, iodepth $iodepth, ${ramp_s}s ramp + ${runtime_s}s"
fio_randread_start "$results/before" --runtime="$runtime_s" --ramp_time="$ramp_s"
fio_wait "$results/before" $((runtime_s + ramp_s + 60))

epoch_before=$(json_get "$(ncli 1 cluster info --json)" 'doc["epoch"]') || die "no epoch from node 1"
record epoch_before "$epoch_before"
victim=$(json_get "$(ncli "$kill_node" node info --json)" 'doc["node_uuid"]') || die "no uuid of node $kill_node"
record killed_uuid "$victim"

echo "rbench: during: the same randread; kill -9 node $kill_node after ${lead_s}s"
max_fio_s=$((lead_s + recovery_deadline_s + 30))
fio_randread_start "$results/during" --runtime="$max_fio_s" \
  --write_iops_log="$results/during" --log_avg_msec=1000 --log_unix_epoch=1
record fio_start_ms "$(now_ms)"
sleep "$lead_s" # a fixed lead-in of measured I/O, not a wait for a condition
alive "$fio_pid" || die "fio stopped before the kill: $(tail -n 3 "$results/during.fio.log")"

victim_pid=${node_pid[kill_node]}
disown "$victim_pid" # bash would print a "Killed" job line; alive() still sees it go
kill -KILL "$victim_pid"
kill_ms=$(now_ms)
record kill_ms "$kill_ms"
node_pid[kill_node]=""
gone_deadline=$((SECONDS + 10))
while alive "$victim_pid"; do
  [ "$SECONDS" -lt "$gone_deadline" ] || die "node $kill_node (pid $victim_pid) outlived kill -9 by 10 s"
  sleep 0.05
done

# One poll a second: node 1's view of the epoch and of every node's recovery.
# poll.py appends the poll to polls.jsonl and prints "EPOCH DONE" (DONE 1
# once every storage node of an epoch after the kill reports "done" at it).
polls=$results/polls.jsonl
poll_once() {
  local info recovery
  info=$(ncli 1 cluster info --json 2>/dev/null) || info=null
  recovery=$(ncli 1 node recovery --json 2>/dev/null) || recovery=null
  /usr/bin/python3 - "$(now_ms)" "$epoch_before" "$info" "$recovery" "$polls" <<'PY'
import json, sys
t_ms, epoch_before, info, recovery, path = sys.argv[1:]
info, recovery = json.loads(info), json.loads(recovery)
with open(path, "a") as out:
    out.write(json.dumps({"t_ms": int(t_ms), "info": info, "recovery": recovery}) + "\n")
epoch = info["epoch"] if info else 0
done = bool(info and recovery and epoch > int(epoch_before)
            and info["status"] == "running"
            and len(recovery) == info["storage_nodes"]
            and all(r["epoch"] == epoch and r["state"] == "done" for r in recovery))
print(epoch, int(done))
PY
}

deadline=$((SECONDS + recovery_deadline_s))
done_ms=""
while [ "$SECONDS" -lt "$deadline" ]; do
  read -r epoch finished <<<"$(poll_once)"
  if [ "$finished" = 1 ]; then
    done_ms=$(now_ms)
    record epoch_after "$epoch"
    break
  fi
  alive "$fio_pid" || { note "fio stopped during recovery"; break; }
  sleep 1
done
record done_ms "${done_ms:-}"
[ -n "$done_ms" ] || note "recovery not done within ${recovery_deadline_s}s (or fio stopped)"
kill -INT "$fio_pid" 2>/dev/null || true
fio_wait "$results/during" 30 interrupted
record load_at_end "$(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$check" = 1 ] && [ -n "$done_ms" ]; then
  echo "rbench: check: kelpie vdi check $kVdi --json (limit ${kCheckTimeoutSeconds}s)"
  start_s=$SECONDS
  rc=0
  timeout --kill-after=5 "$kCheckTimeoutSeconds" "$kelpie" --addr "${node_admin[1]}" \
    vdi check "$kVdi" --json >"$results/check.json" 2>"$results/check.err" || rc=$?
  record check_status "$rc"
  record check_s $((SECONDS - start_s))
fi

stop_cluster
/usr/bin/python3 "$bench_src/recovery_report.py" "$results" | tee "$work_dir/report.txt"
echo "rbench: raw results in $results, report in $work_dir/report.txt"
