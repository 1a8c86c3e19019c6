#!/usr/bin/env bash
# Issue 4, test 3. Three nodes on the zookeeper driver, 3 copies; fio's nbd engine
# writes a VDI through node 1 with crc32c verify headers. A quarter of the way in
# ZooKeeper is restarted (SIGTERM, start again on the same port and data); half way
# in it is killed -9 and started again. fio finishes without an I/O error and its
# verify pass finds every block; no node was failed by the outages (the epoch did
# not move: their sessions outlived them). Membership works afterwards: node 3 is
# killed and the others make a new epoch without it; it returns and recovers, and
# the VDI has one md5 through every node.
export KELPIE_MEMBERSHIP=zookeeper
# ZooKeeper's own log (WARN and up, in its zookeeper.out) needs an slf4j binding on
# the class path; without one the server logs nothing.
export ZK_CLASSPATH=${ZK_CLASSPATH:-/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar}
export CL_ZK_SESSION_MS=${CL_ZK_SESSION_MS:-4000}
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

SIZE=128M
OBJECTS=32   # 128 MiB of 4 MiB objects

start_cluster 3 3
ncli 1 vdi create disk "$SIZE"
EPOCH0=$(cluster_epoch)
ncli 1 cluster info | grep -q 'zookeeper:' || cfail "cluster info does not show the zookeeper driver"

allocated() { json_get "$(ncli 1 vdi info disk --json)" 'doc["allocated_objects"]'; }
allocated_at_least() {
  kill -0 "$FIO_PID" 2>/dev/null || cfail "fio ended early: $(tail -n 3 "$LT_TMP/write.json.err")"
  [ "$(allocated)" -ge "$1" ]
}
fio_running() { kill -0 "$FIO_PID" 2>/dev/null || cfail "fio ended before ZooKeeper was back"; }

# Every node answers, in the epoch it had, with ZooKeeper serving again.
_back() {
  local i
  zookeeper_up || return 1
  for i in $(up_nodes); do
    [ "$(cluster_field "$i" 'doc["status"]')" = running ] || return 1
    [ "$(cluster_field "$i" 'doc["epoch"]')" = "$EPOCH0" ] || return 1
  done
}

# Sequential writes make progress visible as allocated objects; the rate is capped
# so that both outages fall inside the write phase.
PHASE="writes, ZooKeeper restarted"
fio_start "$LT_TMP/write.json" "$(node_uri 1 disk)" "$SIZE" --rw=write --rate=,4m --do_verify=1
poll_until 60 allocated_at_least $((OBJECTS / 4)) || cfail "fio did not write a quarter of the VDI within 60s"
START=$SECONDS
restart_zookeeper || cfail "ZooKeeper did not restart"
fio_running
poll_until 30 _back || cfail "the nodes are not back on ZooKeeper in epoch $EPOCH0 within 30s: $(_epochs)"
echo "ZooKeeper restarted: every node back in epoch $EPOCH0 $((SECONDS - START))s after the stop; $(allocated) of $OBJECTS objects written"

PHASE="writes, ZooKeeper killed -9 and started again"
poll_until 60 allocated_at_least $((OBJECTS / 2)) || cfail "fio did not write half the VDI within 60s"
START=$SECONDS
kill_zookeeper || cfail "could not kill ZooKeeper"
fio_running
restart_zookeeper || cfail "ZooKeeper did not start again"
fio_running
poll_until 30 _back || cfail "the nodes are not back on ZooKeeper in epoch $EPOCH0 within 30s: $(_epochs)"
echo "ZooKeeper crashed and restarted: every node back in epoch $EPOCH0 $((SECONDS - START))s after the kill; $(allocated) of $OBJECTS objects written"
fio_wait "$LT_TMP/write.json"
"$SYS_PYTHON" - "$LT_TMP/write.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
print(f"fio: the slowest write took {job['write']['clat_ns']['max'] / 1e6:.0f} ms "
      f"(mean {job['write']['clat_ns']['mean'] / 1e6:.1f} ms) across both outages")
PY
[ "$(allocated)" = "$OBJECTS" ] || cfail "only $(allocated) of $OBJECTS objects allocated after fio"
fio_run "$LT_TMP/verify2.json" "$(node_uri 2 disk)" "$SIZE" --rw=write --verify_only=1
MD5=$(export_md5 "$(node_uri 1 disk)")

PHASE="membership after the restarts"
kill_node 3
START=$SECONDS
wait_settled 2 30
EPOCH1=$(cluster_epoch)
[ "$EPOCH1" -gt "$EPOCH0" ] || cfail "epoch $EPOCH1 after killing node 3, want above $EPOCH0"
echo "epoch $EPOCH1 without node 3, $((SECONDS - START))s after the kill"
ncli 1 cluster info
start_node 3
wait_settled 3 30
[ "$(cluster_epoch)" -gt "$EPOCH1" ] || cfail "no new epoch for node 3's return"
wait_recovery_done 120
wait_copies disk 3 60
for i in 1 2 3; do
  got=$(export_md5 "$(node_uri "$i" disk)")
  [ "$got" = "$MD5" ] || cfail "md5 through node $i is $got, want $MD5"
done
echo "md5 $MD5 through every node; epoch $(cluster_epoch)"
expect_all_alive
echo PASS
