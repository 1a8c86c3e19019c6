#!/usr/bin/env bash
# VDI lifecycle benchmark: what snapshots, clones and backups cost on one kelpied.
#
#   bench/lifecycle_bench.sh BUILD_DIR
#
# Starts its own kelpied (BUILD_DIR/bin/kelpied, fresh data dir, TCP NBD off, NBD
# on a Unix socket, admin on a free 127.0.0.1 port) and stops it at exit. Every
# VDI is LBENCH_VDI_SIZE (8G) with the default 4 MiB objects; fio's nbd engine
# (libnbd, one connection) writes the data, the kelpie CLI does the rest.
#
# 1. Snapshot and clone latency. For each of LBENCH_FILLS (64M 1G 4G): create a
#    VDI, write that much (sequential 1M writes, iodepth 8), then time
#    LBENCH_REPEATS (5) `kelpie vdi snapshot` and as many `kelpie vdi clone` of
#    those snapshots. The figure is the wall time of the CLI process (started
#    through timeout(1)); `kelpie node info`, timed the same way just before
#    each of them, is the floor: what any admin command costs under the load
#    of the moment. The issue's target: under 100 ms whatever
#    the amount written. The first snapshot after a fill also flushes the
#    fill's dirty objects, so the report shows it apart from the median.
# 2. Copy-on-write cost (run after step 3). The 1G VDI, with 64 MiB changed
#    and snapshot "d1" taken by step 3, is rewritten whole, so that it owns all
#    its objects again and its writes never copy: that is the plain VDI. Each
#    of LBENCH_ROUNDS (3) rounds makes a fresh clone of "d1" and runs 4k randwrite,
#    iodepth 32, LBENCH_RUNTIME (10) s, no ramp (the copies happen at the
#    start), over the first 1 GiB of the plain VDI and of the clone, in
#    alternating order. fio logs IOPS per second, so the report also shows
#    the first second, where most of the copying is.
# 3. Backup and restore. `kelpie vdi backup` of the 1G VDI's last snapshot
#    (full), then of "d1" --from it (differential: 64 x 1 MiB writes, one per
#    16 MiB), each to a file in a fresh directory under /var/tmp; then
#    `kelpie vdi restore` of both, in order, into a new VDI. Rate = stream bytes
#    (the file's size) / wall time of the CLI command.
#
# Every command has a time limit; a phase that starts after LBENCH_BUDGET (330) s
# is skipped. A failed measurement is reported and leaves a gap in the table.
# bench/lifecycle_report.py prints the table (also kept in LBENCH_DIR/report.txt,
# with the raw samples, fio JSON and kelpied's log in LBENCH_DIR/results).
#
# Environment (defaults in brackets):
#   LBENCH_DIR      scratch dir [BUILD_DIR/lifecycle-bench]; kelpied's data in it
#                   is deleted at exit unless LBENCH_KEEP_DATA=1
#   LBENCH_FILLS [64M 1G 4G]  LBENCH_VDI_SIZE [8G]  LBENCH_REPEATS [5]
#   LBENCH_ROUNDS [3]  LBENCH_RUNTIME [10]  LBENCH_BUDGET [330]
#   LBENCH_KELPIED_ARGS  extra kelpied flags ["--threads $(nproc)"]
set -euo pipefail
export LC_ALL=C # $EPOCHREALTIME with a '.', whatever the locale

readonly kStartDeadlineSeconds=30
readonly kStopDeadlineSeconds=60
readonly kCommandTimeoutSeconds=60  # snapshot, clone, create, info
readonly kStreamTimeoutSeconds=120  # one backup or restore
readonly kFillSecondsPerGiB=60      # fill time limit, and at least 30 s
readonly kCowFill=1G                # the VDI steps 2 and 3 use
readonly kCowRegion=1G              # randwrite region; rewritten to make it plain
readonly kDiffStride=15M            # 1M written, 15M skipped, ...
readonly kDiffBytes=64M             # ... 64 times: one write per 16 MiB of 1 GiB

[ $# -eq 1 ] || {
  echo "usage: $0 BUILD_DIR   (see the header of this script for the environment)" >&2
  exit 2
}
build_dir=$(realpath -m "$1")
bench_src=$(cd "$(dirname "$0")" && pwd)
read -ra fills <<<"${LBENCH_FILLS:-64M 1G 4G}"
vdi_size=${LBENCH_VDI_SIZE:-8G}
repeats=${LBENCH_REPEATS:-5}
rounds=${LBENCH_ROUNDS:-3}
runtime_s=${LBENCH_RUNTIME:-10}
budget_s=${LBENCH_BUDGET:-330}
work_dir=$(realpath -m "${LBENCH_DIR:-$build_dir/lifecycle-bench}")
kelpied_args=${LBENCH_KELPIED_ARGS:---threads $(nproc)}
kelpie=$build_dir/bin/kelpie
kelpied=$build_dir/bin/kelpied
results=$work_dir/results
data_dir=$work_dir/kelpied-data
socket=$work_dir/nbd.sock
log=$results/kelpied.log
samples=$results/samples.tsv

die() {
  echo "lbench: $*" >&2
  exit 1
}
note() { echo "lbench: $*" >&2; }

for tool in fio nbdinfo ss timeout /usr/bin/python3; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh"
done
if [ ! -x "$kelpied" ] || [ ! -x "$kelpie" ]; then
  die "$kelpied or $kelpie missing: build first"
fi
[[ " ${fills[*]} " == *" $kCowFill "* ]] ||
  die "LBENCH_FILLS must include $kCowFill (steps 2 and 3 use that VDI)"

# --- kelpied ----------------------------------------------------------------

daemon_pid=""
stream_dir=""

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_daemon() {
  local pid=$daemon_pid
  [ -n "$pid" ] || return 0
  daemon_pid=""
  local rc=0
  stop_process "$pid" kelpied || rc=$?
  [ "$rc" -eq 0 ] || note "warning: kelpied exited with status $rc (log: $log)"
}

cleanup() {
  stop_daemon
  [ -z "$stream_dir" ] || rm -rf "$stream_dir"
  [ "${LBENCH_KEEP_DATA:-0}" = 1 ] || rm -rf "$data_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Picks a free port and starts kelpied on it; another process may take the port
# between the pick and kelpied's bind, so a start that fails is retried.
start_daemon() {
  local attempt
  for attempt in 1 2 3; do
    local port
    port=$(free_port)
    export KELPIE_ADDR=127.0.0.1:$port
    # shellcheck disable=SC2086 # LBENCH_KELPIED_ARGS is a list of flags
    "$kelpied" --data "$data_dir" --nbd-listen none --nbd-unix "$socket" \
      --admin-listen "$KELPIE_ADDR" --log-file "$log" \
      $kelpied_args </dev/null >>"$log.stderr" 2>&1 &
    daemon_pid=$!
    local deadline=$((SECONDS + kStartDeadlineSeconds))
    until "$kelpie" node info >/dev/null 2>&1; do
      if ! alive "$daemon_pid" || [ "$SECONDS" -ge "$deadline" ]; then
        note "kelpied did not answer on $KELPIE_ADDR (attempt $attempt); log tail:"
        tail -n 5 "$log" "$log.stderr" >&2 || true
        stop_daemon
        continue 2
      fi
      sleep 0.1
    done
    return 0
  done
  die "kelpied did not start"
}

# --- measurements -----------------------------------------------------------

record() { printf '%s\n' "$(IFS=$'\t'; echo "$*")" >>"$samples"; }

elapsed_us=0
# LIMIT CMD...: runs CMD under timeout(1) and sets elapsed_us to its wall time.
# stdin and stdout are the caller's. Returns CMD's status (124: timed out).
timed() {
  local limit=$1
  shift
  local start=$EPOCHREALTIME rc=0
  timeout --kill-after=5 "$limit" "$@" || rc=$?
  local end=$EPOCHREALTIME
  elapsed_us=$((${end/./} - ${start/./}))
  return "$rc"
}

cli() { timed "$kCommandTimeoutSeconds" "$kelpie" "$@" >/dev/null; }

fill_limit() { # SIZE -> the time limit of writing it
  local bytes
  bytes=$(numfmt --from=iec "$1")
  local limit=$((bytes * kFillSecondsPerGiB / (1 << 30)))
  echo $((limit < 30 ? 30 : limit))
}

uri_of() { echo "nbd+unix:///$1?socket=$socket"; }

# NAME SIZE LABEL [RW [IO_SIZE]]: 1M writes (fio --rw, default sequential) over
# the first SIZE of NAME, IO_SIZE bytes of them (default SIZE); dies on failure,
# since everything after it measures this data.
fill() {
  local name=$1 size=$2 label=$3 rw=${4:-write} io_size=${5:-$2}
  local out=$results/fill-$label
  if ! timed "$(fill_limit "$size")" fio --name="fill-$label" --ioengine=nbd \
    --uri="$(uri_of "$name")" --rw="$rw" --bs=1M --iodepth=8 --size="$size" --io_size="$io_size" \
    --output-format=json --output="$out.json" >"$out.log" 2>&1; then
    tail -n 5 "$out.log" >&2
    die "writing $size to $name failed (fio output above; kelpied log: $log)"
  fi
  record fill "$label" "$elapsed_us"
}

# Snapshot and clone latency on a VDI with FILL written.
lifecycle_latency() {
  local fill_size=$1 name=v$1 i
  cli vdi create "$name" "$vdi_size" || die "kelpie vdi create $name $vdi_size failed"
  echo "lbench: write $fill_size to $name, then $repeats snapshots and $repeats clones"
  fill "$name" "$fill_size" "$fill_size"
  for ((i = 1; i <= repeats; i++)); do
    floor_latency "$fill_size" "$i"
    if cli vdi snapshot "$name" --tag "s$i"; then
      record latency snapshot "$fill_size" "$i" "$elapsed_us"
      [ "$fill_size" != "$kCowFill" ] || cow_snapshot=$name@s$i
    else
      note "FAILED: kelpie vdi snapshot $name --tag s$i"
    fi
  done
  for ((i = 1; i <= repeats; i++)); do
    floor_latency "$fill_size" $((repeats + i))
    if cli vdi clone "$name@s$i" "$name-c$i"; then
      record latency clone "$fill_size" "$i" "$elapsed_us"
    else
      note "FAILED: kelpie vdi clone $name@s$i $name-c$i"
    fi
  done
}

# KIND (backup|restore) LABEL FILE CMD...: one timed stream; backup writes FILE,
# restore reads it.
stream() {
  local kind=$1 label=$2 file=$3
  shift 3
  local rc=0
  if [ "$kind" = backup ]; then
    timed "$kStreamTimeoutSeconds" "$kelpie" "$@" >"$file" || rc=$?
  else
    timed "$kStreamTimeoutSeconds" "$kelpie" "$@" <"$file" || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    note "FAILED: kelpie $* (status $rc)"
    return 1
  fi
  record stream "$kind" "$label" "$(stat -c %s "$file")" "$elapsed_us"
}

# The snapshot of v$kCowFill that steps 2 and 3 start from: the last one made.
cow_snapshot=""

backup_restore() {
  local name=v$kCowFill full=$cow_snapshot
  stream_dir=$(mktemp -d /var/tmp/kelpie-lbench.XXXXXX)
  echo "lbench: backup $full (full)"
  local full_ok=0 diff_ok=0
  stream backup full "$stream_dir/full.kbk" vdi backup "$full" && full_ok=1
  echo "lbench: change 64 MiB of $name (1M every 16M), snapshot d1, backup --from"
  fill "$name" "$kCowFill" diff-changes "write:$kDiffStride" "$kDiffBytes"
  cli vdi snapshot "$name" --tag d1 || die "kelpie vdi snapshot $name --tag d1 failed"
  cow_snapshot=$name@d1
  stream backup diff "$stream_dir/diff.kbk" vdi backup "$name@d1" --from "$full" && diff_ok=1
  cli vdi create restored "$vdi_size" || die "kelpie vdi create restored $vdi_size failed"
  if [ $full_ok -eq 1 ]; then
    echo "lbench: restore the full stream, then the differential, into 'restored'"
    stream restore full "$stream_dir/full.kbk" vdi restore restored ||
      diff_ok=0 # a differential restore needs its base restored first
    [ $diff_ok -eq 0 ] ||
      stream restore diff "$stream_dir/diff.kbk" vdi restore restored || true
  fi
  rm -rf "$stream_dir"
  stream_dir=""
}

# One 4k randwrite run on NAME; fio JSON and per-second IOPS log in results.
randwrite() {
  local name=$1 label=$2 round=$3
  local out=$results/randwrite-$label-r$round rc=0
  echo "lbench: round $round/$rounds randwrite on $label ($name)"
  timed $((runtime_s + 60)) fio --name="randwrite-$label" --ioengine=nbd \
    --uri="$(uri_of "$name")" --rw=randwrite --bs=4k --iodepth=32 \
    --size="$kCowRegion" --time_based --runtime="$runtime_s" \
    --norandommap --randrepeat=0 --lat_percentiles=1 \
    --write_iops_log="$out" --log_avg_msec=1000 \
    --output-format=json --output="$out.json.tmp" >"$out.fio.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    note "FAILED: randwrite on $name round $round (fio status $rc)"
    tail -n 5 "$out.fio.log" >&2
    rm -f "$out.json.tmp"
    return 0
  fi
  mv "$out.json.tmp" "$out.json"
}

cow_cost() {
  local plain=v$kCowFill round
  echo "lbench: rewrite $kCowRegion of $plain so that it owns its objects again"
  fill "$plain" "$kCowRegion" plain-rewrite
  for ((round = 1; round <= rounds; round++)); do
    local clone=fresh-r$round
    if ! cli vdi clone "$cow_snapshot" "$clone"; then
      note "FAILED: kelpie vdi clone $cow_snapshot $clone"
      continue
    fi
    if ((round % 2 == 1)); then
      randwrite "$plain" plain "$round"
      randwrite "$clone" clone "$round"
    else
      randwrite "$clone" clone "$round"
      randwrite "$plain" plain "$round"
    fi
  done
}

# FILL SEQ: the floor under the load of the moment: `kelpie node info`, just
# before each timed snapshot or clone.
floor_latency() {
  if cli node info; then record latency "node info" "$1" "$2" "$elapsed_us"; fi
}

in_budget() { # PHASE: false (and a note) once the time budget is spent
  [ "$SECONDS" -lt "$budget_s" ] && return 0
  note "skipping $1: ${SECONDS}s spent, budget ${budget_s}s"
  return 1
}

json_pair() { # KEY VALUE [last]: one member of a JSON object
  /usr/bin/python3 -c 'import json, sys; print("  %s: %s%s" % (json.dumps(sys.argv[1]), json.dumps(sys.argv[2]), sys.argv[3]))' \
    "$1" "$2" "$([ "${3:-}" = last ] || echo ,)"
}

write_meta() { # LOAD_AT_START
  {
    echo "{"
    json_pair "machine" "$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
    json_pair "kernel" "$(uname -r)"
    json_pair "filesystem" "$(findmnt -no FSTYPE,SOURCE -T "$work_dir") (data), $(findmnt -no FSTYPE,SOURCE -T /var/tmp) (/var/tmp)"
    json_pair "fio" "$(fio --version)"
    json_pair "kelpied" "$("$kelpied" --version) $kelpied_args"
    json_pair "vdi_size" "$vdi_size"
    json_pair "repeats" "$repeats"
    json_pair "rounds" "$rounds"
    json_pair "runtime_s" "$runtime_s"
    json_pair "cow_region" "$kCowRegion"
    json_pair "load average (1, 5, 15 min) at start" "$1"
    json_pair "load average (1, 5, 15 min) at end" "$(cut -d' ' -f1-3 /proc/loadavg)"
    json_pair "wall time" "${SECONDS} s" last
    echo "}"
  } >"$results/meta.json"
}

# --- main -------------------------------------------------------------------

mkdir -p "$work_dir"
cd "$work_dir" # fio may leave state files in its working directory
rm -rf "$results" "$data_dir" "$socket"
mkdir -p "$results"
: >"$samples"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
SECONDS=0

start_daemon
echo "lbench: kelpied up (pid $daemon_pid, admin $KELPIE_ADDR, $kelpied_args)"
for fill_size in "${fills[@]}"; do
  in_budget "latency on a VDI with $fill_size written" || continue
  lifecycle_latency "$fill_size"
done
if [ -z "$cow_snapshot" ]; then
  note "skipping backup, restore and randwrite: no snapshot of v$kCowFill"
else
  if in_budget "backup and restore"; then backup_restore; fi
  if in_budget "randwrite on plain and clone"; then cow_cost; fi
fi
write_meta "$load_at_start"
stop_daemon

/usr/bin/python3 "$bench_src/lifecycle_report.py" "$results" | tee "$work_dir/report.txt"
echo "lbench: raw results in $results, report in $work_dir/report.txt"
