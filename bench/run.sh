#!/usr/bin/env bash
# Block-I/O benchmark: the same fio jobs against kelpied (one node, and a
# 3-node cluster with 3 copies) and two reference NBD servers exporting a raw
# file on the same filesystem, in one run.
#
#   bench/run.sh BUILD_DIR          (what `make bench` runs)
#
# Servers, each started here on its own Unix socket and stopped at exit:
#   kelpied   BUILD_DIR/bin/kelpied, one node (no --cluster: 1 copy), fresh
#             data dir, TCP NBD off, admin on 127.0.0.1:$BENCH_ADMIN_PORT;
#             VDI "bench" via kelpie
#   kelpied-3n  three kelpied on this host (--cluster local:DIR sharing one
#             state dir, --threads 1 each, peers on Unix sockets, admin on
#             the three ports after BENCH_ADMIN_PORT), `cluster format
#             --copies 3`; fio talks to node 1's NBD Unix socket, so node 1 is
#             the gateway and every write goes to all three. Its CPU and
#             memory figures are the sums over the three processes.
#   qemu-nbd  --cache=writeback --aio=io_uring --shared=16 --format=raw
#   nbdkit    file plugin (default cache, 16 threads)
# Every export is BENCH_SIZE (4G); the jobs touch only the first
# BENCH_WORKSET (2G) of it. fio's nbd engine (libnbd) is the client,
# one connection per job.
#
# Sequence: start all servers; fill the working set on each (sequential 1M
# writes, iodepth 8); then BENCH_ROUNDS rounds, each running every job once
# on every server, the order of servers rotated each round so no server is
# always first. Jobs (time-based, BENCH_RAMP s ramp, BENCH_RUNTIME s):
#   randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32
#   read-1m-qd8 write-1m-qd8
# With the defaults that is 3 x 6 x 4 x 12 s = ~15 min plus the fills.
# Nothing syncs: the writes land in the servers' caches (the page cache for
# the references), which is what a writeback-cached guest sees.
#
# Output: bench/report.py prints medians over rounds (IOPS, MiB/s, mean and
# p99 completion latency, each kelpied target / best reference, and issue
# 3's targets for kelpied-3n), the servers' CPU use,
# and their idle and peak RSS (VmRSS after start, VmHWM at the end). The raw
# fio JSON, server logs and the report are kept in BENCH_DIR.
#
# Environment (defaults in brackets):
#   BENCH_SERVERS   servers to run, in order ["kelpied kelpied-3n qemu-nbd nbdkit"]
#   BENCH_JOBS      subset of the job names above [all]
#   BENCH_ROUNDS [3]  BENCH_RUNTIME [10]  BENCH_RAMP [2]
#   BENCH_SIZE [4G]   BENCH_WORKSET [2G]
#   BENCH_DIR       scratch dir for images, sockets, results [BUILD_DIR/bench]
#   BENCH_ADMIN_PORT  kelpied's admin port [7100]; kelpied-3n's nodes take
#                   the next three
#   BENCH_KELPIED_ARGS  extra kelpied flags ["--threads $(nproc)"]
#   BENCH_CLUSTER_ARGS  extra flags of each kelpied-3n node ["--threads 1"]
#   BENCH_KEEP_DATA=1   keep the data dirs and images at exit (deleted otherwise)
set -euo pipefail

readonly kStartDeadlineSeconds=30
readonly kStopDeadlineSeconds=60
readonly kFillTimeoutSeconds=900
readonly kAllJobs="randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32 read-1m-qd8 write-1m-qd8"
readonly kExportName=bench
readonly kClusterNodes=3
readonly kClusterCopies=3

[ $# -eq 1 ] || {
  echo "usage: $0 BUILD_DIR   (see the header of this script for the environment)" >&2
  exit 2
}
build_dir=$(realpath -m "$1")
bench_src=$(cd "$(dirname "$0")" && pwd)
read -ra servers <<<"${BENCH_SERVERS:-kelpied kelpied-3n qemu-nbd nbdkit}"
read -ra jobs <<<"${BENCH_JOBS:-$kAllJobs}"
rounds=${BENCH_ROUNDS:-3}
runtime_s=${BENCH_RUNTIME:-10}
ramp_s=${BENCH_RAMP:-2}
export_size=${BENCH_SIZE:-4G}
workset=${BENCH_WORKSET:-2G}
work_dir=$(realpath -m "${BENCH_DIR:-$build_dir/bench}")
admin_port=${BENCH_ADMIN_PORT:-7100}
# Explicit, since kelpied's default divides the cores by the kelpied
# processes running on the host (a demo or a test would halve it).
read -ra kelpied_args <<<"${BENCH_KELPIED_ARGS:---threads $(nproc)}"
read -ra cluster_args <<<"${BENCH_CLUSTER_ARGS:---threads 1}"
results=$work_dir/results

die() {
  echo "bench: $*" >&2
  exit 1
}
note() { echo "bench: $*" >&2; }

for tool in fio nbdinfo qemu-nbd nbdkit /usr/bin/python3; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh"
done
for job in "${jobs[@]}"; do
  [[ " $kAllJobs " == *" $job "* ]] || die "unknown job '$job' (known: $kAllJobs)"
done
for server in "${servers[@]}"; do
  case "$server" in
    kelpied | kelpied-3n)
      if [ ! -x "$build_dir/bin/kelpied" ] || [ ! -x "$build_dir/bin/kelpie" ]; then
        die "$build_dir/bin/kelpied or kelpie missing: build first, or set BENCH_SERVERS"
      fi ;;
    qemu-nbd | nbdkit) ;;
    *) die "unknown server '$server' (known: kelpied kelpied-3n qemu-nbd nbdkit)" ;;
  esac
done

# --- server lifecycle -------------------------------------------------------

# Each server's processes (one, or kClusterNodes for kelpied-3n), space-separated.
declare -A server_pids=()

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

status_kb() { # FIELD PID... -> sum in kB of FIELD in /proc/PID/status, or ""
  local field=$1 pid value total=0
  shift
  for pid in "$@"; do
    value=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null) || true
    [ -n "$value" ] || return 0
    total=$((total + value))
  done
  echo "$total"
}

cpu_ticks() { # PID... -> utime + stime of the processes, in clock ticks, or ""
  local pid value total=0
  for pid in "$@"; do
    value=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || true
    [ -n "$value" ] || return 0
    total=$((total + value))
  done
  echo "$total"
}

socket_of() { echo "$work_dir/$1.sock"; } # kelpied-3n: node 1's
uri_of() { echo "nbd+unix:///$kExportName?socket=$(socket_of "$1")"; }
node_socket() { # NODE (of kelpied-3n)
  if [ "$1" -eq 1 ]; then socket_of kelpied-3n; else echo "$work_dir/kelpied-3n-n$1.sock"; fi
}
node_admin() { echo "127.0.0.1:$((admin_port + $1))"; } # NODE (of kelpied-3n)
all_node_admins() {
  local i
  for ((i = 1; i <= kClusterNodes; i++)); do echo -n "$(node_admin "$i") "; done
}
logs_of() { # SERVER -> its log files
  if [ "$1" = kelpied-3n ]; then
    local i
    for ((i = 1; i <= kClusterNodes; i++)); do echo "$work_dir/kelpied-3n-n$i.log"; done
  else
    echo "$work_dir/$1.log"
  fi
}
tail_logs() { # SERVER
  local log
  for log in $(logs_of "$1"); do tail -n 20 "$log" >&2 || true; done
}

server_alive() { # SERVER: true while every process of it runs
  local pid pids=${server_pids[$1]:-}
  [ -n "$pids" ] || return 1
  for pid in $pids; do alive "$pid" || return 1; done
}

stop_server() {
  local server=$1 pids=${server_pids[$1]:-} pid
  [ -n "$pids" ] || return 0
  if [ "$server" = kelpied-3n ] && server_alive "$server"; then
    # SIGTERM one by one would make each survivor start a new epoch and recover.
    timeout 30 "$build_dir/bin/kelpie" --addr "$(node_admin 1)" cluster shutdown >/dev/null 2>&1 ||
      note "warning: kelpie cluster shutdown failed; stopping the nodes one by one"
    local deadline=$((SECONDS + kStopDeadlineSeconds))
    for pid in $pids; do
      while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    done
  fi
  unset "server_pids[$server]"
  for pid in $pids; do
    local rc=0
    stop_process "$pid" "$server" || rc=$?
    # 143 = exited on our SIGTERM, which is how qemu-nbd and nbdkit stop.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 143 ]; then
      note "warning: $server (pid $pid) exited with status $rc (log: $(logs_of "$server" | tr '\n' ' '))"
    fi
  done
}

cleanup() {
  local server
  for server in "${!server_pids[@]}"; do stop_server "$server"; done
  [ "${BENCH_KEEP_DATA:-0}" = 1 ] || rm -rf "$work_dir/kelpied-data" "$work_dir"/kelpied-3n-n*/ "$work_dir/kelpied-3n-state" "$work_dir"/*.raw
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for_export() { # SERVER: polls until the export answers, or dies
  local server=$1 deadline=$((SECONDS + kStartDeadlineSeconds))
  until nbdinfo --size "$(uri_of "$server")" >/dev/null 2>&1; do
    if ! server_alive "$server" || [ "$SECONDS" -ge "$deadline" ]; then
      note "$server did not serve $(uri_of "$server") within ${kStartDeadlineSeconds}s; log tail:"
      tail_logs "$server"
      exit 1
    fi
    sleep 0.2
  done
}

start_qemu_nbd() {
  local image=$work_dir/qemu-nbd.raw
  truncate -s "$export_size" "$image"
  qemu-nbd --cache=writeback --aio=io_uring --shared=16 --format=raw \
    --persistent --export-name="$kExportName" --socket="$(socket_of qemu-nbd)" \
    "$image" </dev/null >"$work_dir/qemu-nbd.log" 2>&1 &
  server_pids[qemu-nbd]=$!
}

start_nbdkit() {
  local image=$work_dir/nbdkit.raw
  truncate -s "$export_size" "$image"
  nbdkit --foreground --exit-with-parent --unix "$(socket_of nbdkit)" \
    file file="$image" </dev/null >"$work_dir/nbdkit.log" 2>&1 &
  server_pids[nbdkit]=$!
}

start_kelpied() {
  local kelpie=$build_dir/bin/kelpie
  if port_taken "$admin_port"; then
    die "port $admin_port is taken: set BENCH_ADMIN_PORT"
  fi
  export KELPIE_ADDR=127.0.0.1:$admin_port
  # Its stdout/stderr join its own log: start-up errors are printed, not logged.
  # shellcheck disable=SC2094
  "$build_dir/bin/kelpied" --data "$work_dir/kelpied-data" \
    --nbd-listen none --nbd-unix "$(socket_of kelpied)" \
    --admin-listen "$KELPIE_ADDR" --log-file "$work_dir/kelpied.log" \
    "${kelpied_args[@]}" </dev/null >>"$work_dir/kelpied.log" 2>&1 &
  server_pids[kelpied]=$!
  local deadline=$((SECONDS + kStartDeadlineSeconds))
  until "$kelpie" node info >/dev/null 2>&1; do
    if ! server_alive kelpied || [ "$SECONDS" -ge "$deadline" ]; then
      note "kelpied's admin port did not answer within ${kStartDeadlineSeconds}s; log tail:"
      tail -n 20 "$work_dir/kelpied.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  "$kelpie" vdi create "$kExportName" "$export_size" >/dev/null ||
    die "kelpie vdi create $kExportName $export_size failed"
}

start_kelpied_3n() {
  local kelpie=$build_dir/bin/kelpie i pids=() admins
  read -ra admins <<<"$(all_node_admins)"
  for ((i = 1; i <= kClusterNodes; i++)); do
    if port_taken "${admins[i - 1]##*:}"; then
      die "port ${admins[i - 1]##*:} (kelpied-3n node $i) is taken: set BENCH_ADMIN_PORT"
    fi
    start_cluster_node "$build_dir/bin/kelpied" "$kelpie" "$work_dir/kelpied-3n-n$i" \
      "$work_dir/kelpied-3n-state" "$(node_socket "$i")" "${admins[i - 1]}" \
      "$work_dir/kelpied-3n-n$i.log" "${cluster_args[@]}" || {
      server_pids[kelpied-3n]="${pids[*]} $started_pid"
      die "kelpied-3n node $i did not start"
    }
    pids+=("$started_pid")
  done
  server_pids[kelpied-3n]="${pids[*]}"
  "$kelpie" --addr "${admins[0]}" cluster format --copies "$kClusterCopies" >/dev/null ||
    die "kelpie cluster format --copies $kClusterCopies failed"
  wait_cluster_settled "$kStartDeadlineSeconds" "$kelpie" "$kClusterNodes" "${admins[@]}" >/dev/null || {
    tail_logs kelpied-3n
    die "kelpied-3n: the nodes did not all report 'running' with $kClusterNodes storage nodes within ${kStartDeadlineSeconds}s"
  }
  # A node answers "the node is starting" until it has opened the VDI directory.
  local answer end=$((SECONDS + kStartDeadlineSeconds))
  until answer=$("$kelpie" --addr "${admins[0]}" vdi create "$kExportName" "$export_size" 2>&1 >/dev/null); do
    case "$answer" in *"is starting"*) ;; *) die "kelpie vdi create $kExportName $export_size (kelpied-3n) failed: $answer" ;; esac
    [ $SECONDS -lt $end ] || die "kelpied-3n node 1 still starting after ${kStartDeadlineSeconds}s"
    sleep 0.1
  done
}

# --- fio --------------------------------------------------------------------

job_args() { # JOB -> the fio flags that define it
  case "$1" in
    randread-4k-qd1) echo "--rw=randread --bs=4k --iodepth=1" ;;
    randread-4k-qd32) echo "--rw=randread --bs=4k --iodepth=32" ;;
    randwrite-4k-qd1) echo "--rw=randwrite --bs=4k --iodepth=1" ;;
    randwrite-4k-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
    read-1m-qd8) echo "--rw=read --bs=1M --iodepth=8" ;;
    write-1m-qd8) echo "--rw=write --bs=1M --iodepth=8" ;;
    fill) echo "--rw=write --bs=1M --iodepth=8" ;;
  esac
}

# Runs JOB on SERVER; the fio JSON goes to results/JOB/SERVER-rROUND.json and
# "CPU-ticks ticks-per-second wall-ms" of the server during the run beside it. A failed or hung fio, or a
# server that died, is reported and leaves no JSON: the table shows a gap.
run_fio() {
  local server=$1 job=$2 round=$3
  local pids
  read -ra pids <<<"${server_pids[$server]:-}"
  local out=$results/$job/$server-r$round
  mkdir -p "$results/$job"
  if ! server_alive "$server"; then
    note "skipping $job on $server: server is not running"
    return 0
  fi
  local limit timing=(--size="$workset")
  if [ "$job" = fill ]; then
    limit=$kFillTimeoutSeconds
  else
    timing+=(--time_based --runtime="$runtime_s" --ramp_time="$ramp_s" --norandommap --randrepeat=0)
    limit=$((runtime_s + ramp_s + 60))
  fi
  local ticks_before ticks_after start_ns end_ns rc=0
  ticks_before=$(cpu_ticks "${pids[@]}")
  start_ns=$(date +%s%N)
  local definition
  read -ra definition <<<"$(job_args "$job")"
  timeout --kill-after=10 "$limit" fio --name="$job" --ioengine=nbd \
    --uri="$(uri_of "$server")" "${definition[@]}" "${timing[@]}" \
    --lat_percentiles=1 --output-format=json --output="$out.json.tmp" \
    >"$out.fio.log" 2>&1 || rc=$?
  ticks_after=$(cpu_ticks "${pids[@]}")
  end_ns=$(date +%s%N)
  if [ "$rc" -ne 0 ]; then
    note "FAILED: $job on $server round $round (fio status $rc$([ "$rc" -eq 124 ] && echo ', timed out'))"
    sed 's/^/  fio: /' "$out.fio.log" | tail -n 5 >&2
    rm -f "$out.json.tmp"
    if ! server_alive "$server"; then
      note "$server (pids ${pids[*]}) is gone, or part of it; log tail:"
      tail_logs "$server"
    fi
    return 0
  fi
  mv "$out.json.tmp" "$out.json"
  if [ -n "$ticks_before" ] && [ -n "$ticks_after" ]; then
    echo "$((ticks_after - ticks_before)) $(getconf CLK_TCK) $(((end_ns - start_ns) / 1000000))" >"$out.cpu"
  fi
}

# --- main -------------------------------------------------------------------

echo "bench: servers: ${servers[*]}; jobs: ${jobs[*]}"
echo "bench: ${rounds} rounds x ${#jobs[@]} jobs x ${#servers[@]} servers x" \
  "$((runtime_s + ramp_s))s ~= $((rounds * ${#jobs[@]} * ${#servers[@]} * (runtime_s + ramp_s) / 60)) min, plus fills"
mkdir -p "$work_dir"
cd "$work_dir" # fio may leave state files in its working directory
rm -rf "$results" "$work_dir/kelpied-data" "$work_dir"/kelpied-3n-n*/ "$work_dir/kelpied-3n-state" \
  "$work_dir"/*.raw "$work_dir"/*.sock "$work_dir"/*.log
mkdir -p "$results"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A idle_rss_kb=()
for server in "${servers[@]}"; do
  "start_${server//-/_}"
  wait_for_export "$server"
  # shellcheck disable=SC2086 # a list of pids
  idle_rss_kb[$server]=$(status_kb VmRSS ${server_pids[$server]})
  echo "bench: $server up (pid ${server_pids[$server]}, RSS ${idle_rss_kb[$server]} kB)"
done

for server in "${servers[@]}"; do
  echo "bench: fill $workset on $server"
  run_fio "$server" fill 1
done

for ((round = 1; round <= rounds; round++)); do
  for job in "${jobs[@]}"; do
    order=()
    for ((i = 0; i < ${#servers[@]}; i++)); do
      order+=("${servers[(i + round - 1) % ${#servers[@]}]}")
    done
    echo "bench: round $round/$rounds $job: ${order[*]}"
    for server in "${order[@]}"; do run_fio "$server" "$job" "$round"; done
  done
done

json_pair() { # KEY VALUE [last]: one member of a JSON object
  /usr/bin/python3 -c 'import json, sys; print("    %s: %s%s" % (json.dumps(sys.argv[1]), json.dumps(sys.argv[2]), sys.argv[3]))' \
    "$1" "$2" "$([ "${3:-}" = last ] || echo ,)"
}

# Memory figures while the servers still run; then stop them (the trap would
# too) so that a server failing to stop shows up before the report.
{
  echo "{"
  echo "  \"servers\": [$(printf '"%s",' "${servers[@]}" | sed 's/,$//')],"
  echo "  \"jobs\": [$(printf '"%s",' "${jobs[@]}" | sed 's/,$//')],"
  echo "  \"rounds\": $rounds, \"runtime_s\": $runtime_s, \"ramp_s\": $ramp_s,"
  echo "  \"export_size\": \"$export_size\", \"workset\": \"$workset\","
  echo "  \"environment\": {"
  json_pair "machine" "$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
  json_pair "kernel" "$(uname -r)"
  json_pair "filesystem" "$(findmnt -no FSTYPE,SOURCE,OPTIONS -T "$work_dir" | cut -c1-80)"
  json_pair "fio" "$(fio --version)"
  json_pair "qemu-nbd" "$(qemu-nbd --version | head -1)"
  json_pair "nbdkit" "$(nbdkit --version)"
  [[ " ${servers[*]} " != *" kelpied "* ]] ||
    json_pair "kelpied" "$("$build_dir/bin/kelpied" --version) ${kelpied_args[*]}"
  [[ " ${servers[*]} " != *" kelpied-3n "* ]] ||
    json_pair "kelpied-3n" "$kClusterNodes x $("$build_dir/bin/kelpied" --version) ${cluster_args[*]} --cluster local:DIR, copies $kClusterCopies; fio through node 1; CPU and RSS summed over the $kClusterNodes processes"
  json_pair "load average (1, 5, 15 min) at start" "$load_at_start"
  json_pair "load average (1, 5, 15 min) at end" "$(cut -d' ' -f1-3 /proc/loadavg)" last
  echo "  },"
  echo "  \"memory_kb\": {"
  first=1
  for server in "${servers[@]}"; do
    peak=""
    # shellcheck disable=SC2086 # a list of pids
    [ -n "${server_pids[$server]:-}" ] && peak=$(status_kb VmHWM ${server_pids[$server]})
    [ $first -eq 1 ] || echo ","
    first=0
    printf '    "%s": {"idle_rss": %s, "peak_rss": %s}' "$server" \
      "${idle_rss_kb[$server]:-null}" "${peak:-null}"
  done
  echo ""
  echo "  }"
  echo "}"
} >"$results/meta.json"
for server in "${servers[@]}"; do stop_server "$server"; done

/usr/bin/python3 "$bench_src/report.py" "$results" | tee "$work_dir/report.txt"
echo "bench: raw results in $results, report in $work_dir/report.txt"
