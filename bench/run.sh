#!/usr/bin/env bash
# Block-I/O benchmark: the same fio jobs against kelpied and two reference
# NBD servers exporting a raw file on the same filesystem, in one run.
#
#   bench/run.sh BUILD_DIR          (what `make bench` runs)
#
# Servers, each started here on its own Unix socket and stopped at exit:
#   kelpied   BUILD_DIR/bin/kelpied, one node, fresh data dir, TCP NBD off,
#             admin on 127.0.0.1:$BENCH_ADMIN_PORT; VDI "bench" via kelpie
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
# With the defaults that is 3 x 6 x 3 x 12 s = ~11 min plus the fills.
# Nothing syncs: the writes land in the servers' caches (the page cache for
# the references), which is what a writeback-cached guest sees.
#
# Output: bench/report.py prints medians over rounds (IOPS, MiB/s, mean and
# p99 completion latency, kelpied / best reference), the servers' CPU use,
# and their idle and peak RSS (VmRSS after start, VmHWM at the end). The raw
# fio JSON, server logs and the report are kept in BENCH_DIR.
#
# Environment (defaults in brackets):
#   BENCH_SERVERS   servers to run, in order ["kelpied qemu-nbd nbdkit"]
#   BENCH_JOBS      subset of the job names above [all]
#   BENCH_ROUNDS [3]  BENCH_RUNTIME [10]  BENCH_RAMP [2]
#   BENCH_SIZE [4G]   BENCH_WORKSET [2G]
#   BENCH_DIR       scratch dir for images, sockets, results [BUILD_DIR/bench]
#   BENCH_ADMIN_PORT  kelpied's admin port [7100]
#   BENCH_KELPIED_ARGS  extra kelpied flags ["--threads $(nproc)"]
set -euo pipefail

readonly kStartDeadlineSeconds=30
readonly kStopDeadlineSeconds=60
readonly kFillTimeoutSeconds=900
readonly kAllJobs="randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32 read-1m-qd8 write-1m-qd8"
readonly kExportName=bench

[ $# -eq 1 ] || {
  echo "usage: $0 BUILD_DIR   (see the header of this script for the environment)" >&2
  exit 2
}
build_dir=$(realpath -m "$1")
bench_src=$(cd "$(dirname "$0")" && pwd)
read -ra servers <<<"${BENCH_SERVERS:-kelpied qemu-nbd nbdkit}"
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
    kelpied)
      if [ ! -x "$build_dir/bin/kelpied" ] || [ ! -x "$build_dir/bin/kelpie" ]; then
        die "$build_dir/bin/kelpied or kelpie missing: build first, or set BENCH_SERVERS"
      fi ;;
    qemu-nbd | nbdkit) ;;
    *) die "unknown server '$server' (known: kelpied qemu-nbd nbdkit)" ;;
  esac
done

# --- server lifecycle -------------------------------------------------------

declare -A server_pid=()

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

status_kb() { # PID FIELD -> value in kB of FIELD in /proc/PID/status
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

cpu_ticks() { # PID -> utime + stime of the whole process, in clock ticks
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true
}

socket_of() { echo "$work_dir/$1.sock"; }
uri_of() { echo "nbd+unix:///$kExportName?socket=$(socket_of "$1")"; }

stop_server() {
  local server=$1 pid=${server_pid[$1]:-}
  [ -n "$pid" ] || return 0
  unset "server_pid[$server]"
  local rc=0
  stop_process "$pid" "$server" || rc=$?
  # 143 = exited on our SIGTERM, which is how qemu-nbd and nbdkit stop.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 143 ]; then
    note "warning: $server exited with status $rc (log: $work_dir/$server.log)"
  fi
}

cleanup() {
  local server
  for server in "${!server_pid[@]}"; do stop_server "$server"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for_export() { # SERVER: polls until the export answers, or dies
  local server=$1 pid=${server_pid[$1]} deadline=$((SECONDS + kStartDeadlineSeconds))
  until nbdinfo --size "$(uri_of "$server")" >/dev/null 2>&1; do
    if ! alive "$pid" || [ "$SECONDS" -ge "$deadline" ]; then
      note "$server did not serve $(uri_of "$server") within ${kStartDeadlineSeconds}s; log tail:"
      tail -n 20 "$work_dir/$server.log" >&2 || true
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
  server_pid[qemu-nbd]=$!
}

start_nbdkit() {
  local image=$work_dir/nbdkit.raw
  truncate -s "$export_size" "$image"
  nbdkit --foreground --exit-with-parent --unix "$(socket_of nbdkit)" \
    file file="$image" </dev/null >"$work_dir/nbdkit.log" 2>&1 &
  server_pid[nbdkit]=$!
}

start_kelpied() {
  local kelpie=$build_dir/bin/kelpie
  if ss -Hltn "sport = :$admin_port" 2>/dev/null | grep -q .; then
    die "port $admin_port is taken: set BENCH_ADMIN_PORT"
  fi
  export KELPIE_ADDR=127.0.0.1:$admin_port
  # Its stdout/stderr join its own log: start-up errors are printed, not logged.
  # shellcheck disable=SC2094
  "$build_dir/bin/kelpied" --data "$work_dir/kelpied-data" \
    --nbd-listen none --nbd-unix "$(socket_of kelpied)" \
    --admin-listen "$KELPIE_ADDR" --log-file "$work_dir/kelpied.log" \
    "${kelpied_args[@]}" </dev/null >>"$work_dir/kelpied.log" 2>&1 &
  server_pid[kelpied]=$!
  local deadline=$((SECONDS + kStartDeadlineSeconds))
  until "$kelpie" node info >/dev/null 2>&1; do
    if ! alive "${server_pid[kelpied]}" || [ "$SECONDS" -ge "$deadline" ]; then
      note "kelpied's admin port did not answer within ${kStartDeadlineSeconds}s; log tail:"
      tail -n 20 "$work_dir/kelpied.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  "$kelpie" vdi create "$kExportName" "$export_size" >/dev/null ||
    die "kelpie vdi create $kExportName $export_size failed"
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
  local pid=${server_pid[$server]:-}
  local out=$results/$job/$server-r$round
  mkdir -p "$results/$job"
  if [ -z "$pid" ] || ! alive "$pid"; then
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
  ticks_before=$(cpu_ticks "$pid")
  start_ns=$(date +%s%N)
  local definition
  read -ra definition <<<"$(job_args "$job")"
  timeout --kill-after=10 "$limit" fio --name="$job" --ioengine=nbd \
    --uri="$(uri_of "$server")" "${definition[@]}" "${timing[@]}" \
    --lat_percentiles=1 --output-format=json --output="$out.json.tmp" \
    >"$out.fio.log" 2>&1 || rc=$?
  ticks_after=$(cpu_ticks "$pid")
  end_ns=$(date +%s%N)
  if [ "$rc" -ne 0 ]; then
    note "FAILED: $job on $server round $round (fio status $rc$([ "$rc" -eq 124 ] && echo ', timed out'))"
    sed 's/^/  fio: /' "$out.fio.log" | tail -n 5 >&2
    rm -f "$out.json.tmp"
    if ! alive "$pid"; then
      note "$server (pid $pid) is gone; log tail:"
      tail -n 20 "$work_dir/$server.log" >&2 || true
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
rm -rf "$results" "$work_dir/kelpied-data" "$work_dir"/*.raw "$work_dir"/*.sock "$work_dir"/*.log
mkdir -p "$results"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A idle_rss_kb=()
for server in "${servers[@]}"; do
  "start_${server//-/_}"
  wait_for_export "$server"
  idle_rss_kb[$server]=$(status_kb "${server_pid[$server]}" VmRSS)
  echo "bench: $server up (pid ${server_pid[$server]}, RSS ${idle_rss_kb[$server]} kB)"
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
  json_pair "load average (1, 5, 15 min) at start" "$load_at_start"
  json_pair "load average (1, 5, 15 min) at end" "$(cut -d' ' -f1-3 /proc/loadavg)" last
  echo "  },"
  echo "  \"memory_kb\": {"
  first=1
  for server in "${servers[@]}"; do
    pid=${server_pid[$server]:-}
    peak=""
    [ -n "$pid" ] && peak=$(status_kb "$pid" VmHWM)
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
