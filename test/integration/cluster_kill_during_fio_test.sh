#!/usr/bin/env bash
# Issue 3, test 1. Three nodes, 3 copies. fio's nbd engine writes a VDI through
# node 1 with crc32c verify headers; a third of the way in, node 3 is killed -9.
# The writes go on in the next epoch (2 copies): fio finishes without an error and
# its verify pass, and a verify-only pass through node 2, find every block. Then
# node 3 restarts: recovery brings every object back to 3 copies (`vdi check`),
# and the whole VDI has one md5 through each of the three nodes.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

SIZE=128M
OBJECTS=32   # 128 MiB of 4 MiB objects

start_cluster 3 3
ncli 1 vdi create disk "$SIZE"
EPOCH0=$(cluster_epoch)

allocated() { json_get "$(ncli 1 vdi info disk --json)" 'doc["allocated_objects"]'; }
allocated_at_least() {
  kill -0 "$FIO_PID" 2>/dev/null || cfail "fio ended early: $(tail -n 3 "$LT_TMP/write.json.err")"
  [ "$(allocated)" -ge "$1" ]
}

# Sequential writes make progress visible as allocated objects; the write rate is
# capped so the node is killed, and the new epoch made, while fio still writes.
JOB=(--rw=write --rate=,16m)
PHASE="writes"
fio_start "$LT_TMP/write.json" "$(node_uri 1 disk)" "$SIZE" "${JOB[@]}" --do_verify=1
poll_until 60 allocated_at_least $((OBJECTS / 3)) || cfail "fio did not write a third of the VDI within 60s"
kill -0 "$FIO_PID" 2>/dev/null || cfail "fio ended before a third of the VDI was written"
kill_node 3
wait_settled 2 10
EPOCH1=$(cluster_epoch)
[ "$EPOCH1" -gt "$EPOCH0" ] || cfail "epoch $EPOCH1 after the kill, want above $EPOCH0"
AT_EPOCH=$(allocated)
kill -0 "$FIO_PID" 2>/dev/null ||
  cfail "fio ended before the epoch without node 3 was made; nothing was written in it"
echo "epoch $EPOCH1 made with $AT_EPOCH of $OBJECTS objects written; fio still writing"
fio_wait "$LT_TMP/write.json"
[ "$(allocated)" = "$OBJECTS" ] || cfail "only $(allocated) of $OBJECTS objects allocated after fio"

PHASE="verify after the kill"
fio_run "$LT_TMP/verify2.json" "$(node_uri 2 disk)" "$SIZE" --rw=write --verify_only=1
MD5=$(export_md5 "$(node_uri 1 disk)")
wait_recovery_done 60
COPIES=$(copies_of_vdi disk)
[ "$COPIES" = 2 ] || cfail "want 2 copies with node 3 down, have $COPIES"
echo "2 copies with node 3 down"

PHASE="node 3 returns"
start_node 3
wait_settled 3 20
[ "$(cluster_epoch)" -gt "$EPOCH1" ] || cfail "no new epoch for node 3's return"
wait_recovery_done 120
wait_copies disk 3 60
fio_run "$LT_TMP/verify3.json" "$(node_uri 3 disk)" "$SIZE" --rw=write --verify_only=1
for i in 1 2 3; do
  got=$(export_md5 "$(node_uri "$i" disk)")
  [ "$got" = "$MD5" ] || cfail "md5 through node $i is $got, want $MD5"
done
echo "md5 $MD5 through every node"
expect_all_alive
echo PASS
