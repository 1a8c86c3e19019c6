#!/usr/bin/env bash
# ZooKeeper membership at scale (issue 4): 1,000 lightweight members of one
# cluster on one local ZooKeeper, then 10 of them killed.
#
#   bench/zk_scale_bench.sh BUILD_DIR          (`make bench` runs it)
#
# Members are BUILD_DIR/bin/zk_scale_members processes (bench/zk_scale_members.cc):
# each holds many real ZookeeperMembership drivers (one ZooKeeper session each,
# storage members without storage). ZooKeeper is a private server on loopback
# (test/integration/zookeeper_lib.sh: maxClientCnxns=0, tickTime 500 ms).
#
# 1. Join: ZKB_PROCS (5) processes hold ZKB_MEMBERS - ZKB_KILL members between
#    them; once they joined, one more process joins the last ZKB_KILL (10), so
#    none of those leads. Figure: time until every process joined.
# 2. Format (member 0): epoch 1 lists every member. Figure: from the epoch's
#    creation until the last member delivered it.
# 3. A cluster operation: member 0 rewrites the shared blob vdis.json
#    (update_shared, ZKB_BLOB_BYTES, 16 KiB), ZKB_UPDATES (3) times. Figure: from
#    the call until the last other member was told (on_shared_changed).
#    Then ZKB_IDLE_S (10) s with no change: the CPU the members and ZooKeeper use
#    just staying in touch (ticks, the lease).
# 4. Churn: member 0 evicts members 1..ZKB_CHURN1 (6) one after the other; each
#    comes back by itself (2 epochs each); ZooKeeper's znode count and data size (`mntr`), and the
#    RSS and CPU time of every process, are taken; then ZKB_CHURN2 (6) more.
#    Figures: both snapshots (nothing may grow per epoch), the CPU an epoch costs
#    the members and ZooKeeper, and the spread of "epoch created -> every member
#    delivered it".
#    ZKB_EPOCHS_KEPT is the driver's default, 64: a member keeps the newest epoch in
#    full and the older ones as what changed, so its memory does not grow with the
#    epochs it keeps (until commit 25da20f it kept 64 full records: ~16 GB for 1,000
#    members here). A value under 24 (e.g. 8) shows P/epochs staying bounded within
#    the churn.
# 5. Kill: kill -9 the process of ZKB_KILL members. Figure: from the kill until
#    every surviving member delivered the epoch without them (their sessions
#    expire after ZKB_SESSION_MS, 10 s, then the leader appends it), and from
#    that epoch's creation until the last member had it (target: < 5 s).
# 6. Memory: RSS of each member process over its members; ZooKeeper's RSS.
#    Session expirations (the drivers' "expired" log lines) are counted too.
#
# Every wait has a deadline. Results (each process's report lines, mntr
# snapshots, report.txt) go to ZKB_DIR (BUILD_DIR/zk-scale-bench).
#
# Environment (defaults in brackets): ZKB_MEMBERS [1000] ZKB_PROCS [5]
#   ZKB_KILL [10] ZKB_SESSION_MS [10000] ZKB_BLOB_BYTES [16384] ZKB_UPDATES [3]
#   ZKB_CHURN1 [6] ZKB_CHURN2 [6] ZKB_EPOCHS_KEPT [64] ZKB_IDLE_S [10]
#   ZKB_TRACK_MEMBERS [0] (1: every member
#   watches the member list) ZKB_DIR
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD=$(cd "$1" && pwd)
TOOL="$BUILD/bin/zk_scale_members"
[ -x "$TOOL" ] || { echo "no $TOOL: build first (make build)" >&2; exit 1; }
MEMBERS=${ZKB_MEMBERS:-1000}
PROCS=${ZKB_PROCS:-5}
KILL=${ZKB_KILL:-10}
SESSION_MS=${ZKB_SESSION_MS:-10000}
BLOB_BYTES=${ZKB_BLOB_BYTES:-16384}
UPDATES=${ZKB_UPDATES:-3}
CHURN1=${ZKB_CHURN1:-6}
CHURN2=${ZKB_CHURN2:-6}
EPOCHS_KEPT=${ZKB_EPOCHS_KEPT:-64}
IDLE_S=${ZKB_IDLE_S:-10}
TRACK=${ZKB_TRACK_MEMBERS:-0}
DIR=${ZKB_DIR:-$BUILD/zk-scale-bench}
SYS_PYTHON=/usr/bin/python3

note() { echo "zk-scale: $*" >&2; }
now_ms() { date +%s%3N; }

rm -rf "$DIR"
mkdir -p "$DIR"
# 1,000 sessions are 1,000 sockets in ZooKeeper and in the member processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
[ "$(ulimit -n)" -ge $((MEMBERS + 512)) ] || note "warning: open files limited to $(ulimit -n)"

PIDS=()   # member processes, index = process number; the last holds the KILL members
FDS=()    # their command pipes (write ends)
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  stop_zookeeper >/dev/null 2>&1 || true
}
trap cleanup EXIT
# ZooKeeper's own log (WARN and up, in its zookeeper.out) needs an slf4j binding on
# the class path; without one the server logs nothing.
export ZK_CLASSPATH=${ZK_CLASSPATH:-/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar}
# shellcheck source=../test/integration/zookeeper_lib.sh
source "$(dirname "$0")/../test/integration/zookeeper_lib.sh"
start_zookeeper "$DIR/zookeeper" >&2
SPEC=$(zookeeper_spec kelpie/scale "$SESSION_MS")
note "spec $SPEC; $MEMBERS members in $PROCS+1 processes; session timeout $SESSION_MS ms"

# wait_for DEADLINE_S WHAT CMD...: polls CMD until true; fails the bench past the deadline.
wait_for() {
  local deadline_s=$1 what=$2; shift 2
  local end=$((SECONDS + deadline_s)) p
  until "$@"; do
    for p in "${!PIDS[@]}"; do
      [ "$p" = "${KILLED:-}" ] || kill -0 "${PIDS[$p]}" 2>/dev/null ||
        { tail -n 5 "$DIR/err.$p" >&2; note "FAIL: member process $p exited"; exit 1; }
    done
    [ $SECONDS -lt $end ] || { note "FAIL: $what not within ${deadline_s}s"; exit 1; }
    sleep 0.1
  done
}

start_proc() {
  local p=$1 count=$2 fd track=()
  [ "$TRACK" = 1 ] && track=(--track-members)
  mkfifo "$DIR/cmd.$p"
  "$TOOL" --spec "$SPEC" --members "$count" --log "$DIR/members.$p.log" "${track[@]}" \
    --epochs-kept "$EPOCHS_KEPT" \
    <"$DIR/cmd.$p" >"$DIR/out.$p" 2>"$DIR/err.$p" &
  PIDS[$p]=$!
  disown "${PIDS[$p]}"  # no "Killed" from bash for the one killed on purpose
  exec {fd}>"$DIR/cmd.$p"
  FDS[$p]=$fd
}
send() { echo "$2" >&"${FDS[$1]}"; }
has_line() { grep -q "$2" "$DIR/out.$1" 2>/dev/null; }
all_have() {
  local pattern=$1 p
  for p in "${!PIDS[@]}"; do
    [ "$p" = "${KILLED:-}" ] && continue
    has_line "$p" "$pattern" || return 1
  done
}
mntr() { zk_four_letter mntr >"$DIR/mntr.$1"; }
# snapshot STEP: RSS (KiB) and CPU time (clock ticks, user + system) of every member
# process and of ZooKeeper, one line each: "STEP WHO RSS_KB CPU_TICKS EPOCH" (the
# latest epoch every member of process 0 has).
snapshot() {
  local p pid epoch
  epoch=$(awk '$1 == "epoch" {e = $2} END {print e + 0}' "$DIR/out.0")
  for p in "${!PIDS[@]}" zookeeper; do
    if [ "$p" = zookeeper ]; then pid=$ZK_PID; else pid=${PIDS[$p]}; fi
    [ "$p" = "${KILLED:-}" ] && continue
    echo "$1 $p $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status") $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') $epoch"
  done >>"$DIR/snapshots"
}

# 1. Join.
BIG=$((MEMBERS - KILL))
START=$(now_ms)
for ((p = 0; p < PROCS; p++)); do
  count=$((BIG / PROCS + (p < BIG % PROCS ? 1 : 0)))
  start_proc "$p" "$count"
done
wait_for 600 "every member joined" all_have '^joined '
start_proc "$PROCS" "$KILL"
wait_for 120 "the last $KILL members joined" all_have '^joined '
echo "join $START $(now_ms)" >"$DIR/times"
note "$MEMBERS members joined in $(($(now_ms) - START)) ms"

# 2. Format.
START=$(now_ms)
send 0 "format 3 2"
wait_for 120 "epoch 1 at every member" all_have '^epoch 1 '
echo "format $START $(now_ms)" >>"$DIR/times"
mntr format
snapshot format
note "format: epoch 1 at every member"

# 3. Cluster operations.
for ((u = 1; u <= UPDATES; u++)); do
  send 0 "update vdis.json $BLOB_BYTES"
  wait_for 60 "vdis.json change $u at every member" all_have "^shared vdis.json $u "
done
note "vdis.json updated $UPDATES times"

# Idle: what 1,000 members cost when nothing changes (a measuring window, not a wait).
snapshot idle0
sleep "$IDLE_S"
snapshot idle1

# 4. Churn.
snapshot churn0
send 0 "churn $CHURN1"
churned() { [ "$(grep -c '^churned ' "$DIR/out.0")" -ge "$1" ]; }
wait_for $((CHURN1 * 60)) "churn 1" churned 1
EPOCH=$(awk '$1 == "epoch" {e = $2} END {print e}' "$DIR/out.0")
wait_for 60 "epoch $EPOCH at every member" all_have "^epoch $EPOCH "
mntr churn1
snapshot churn1
send 0 "churn $CHURN2"
wait_for $((CHURN2 * 60)) "churn 2" churned 2
EPOCH=$(awk '$1 == "epoch" {e = $2} END {print e}' "$DIR/out.0")
wait_for 60 "epoch $EPOCH at every member" all_have "^epoch $EPOCH "
mntr churn2
snapshot churn2
note "churn done: epoch $EPOCH"

# 5. Kill.
KILLED=$PROCS
KILL_MS=$(now_ms)
kill -9 "${PIDS[$KILLED]}"
echo "kill $KILL_MS" >>"$DIR/times"
wait_for $((SESSION_MS / 1000 + 90)) "an epoch of $BIG nodes at every surviving member" all_have " nodes $BIG "
mntr kill
note "the epoch without the killed members reached every survivor"

for ((p = 0; p < PROCS; p++)); do send "$p" quit; done
for ((p = 0; p < PROCS; p++)); do
  end=$((SECONDS + 60))
  while kill -0 "${PIDS[$p]}" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
done

"$SYS_PYTHON" "$(dirname "$0")/zk_scale_report.py" "$DIR" "$MEMBERS" "$KILL" "$SESSION_MS" "$EPOCHS_KEPT" "$IDLE_S" |
  tee "$DIR/report.txt"
