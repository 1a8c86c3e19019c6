#!/usr/bin/env bash
# Issue 3, test 10. A gateway is killed -9 in the middle of many overlapping writes
# from six connections (64 KiB writes to random blocks of an 8 MiB area, so
# connections write the same objects at once). Then `cluster check --repair` finds
# every object's replicas identical or repairs them and says so (exit 0), a second
# check is clean, every acknowledged write is there, and the VDI reads the same
# through every storage node and through the restarted gateway.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
start_cluster 3 3
start_node 4 --gateway
wait_serving 4
gateway_listed() { [ "$(cluster_field 1 'doc["gateways"]')" = 1 ]; }
poll_until 20 gateway_listed || cfail "cluster info does not list the gateway"
ncli 4 vdi create disk 8M

PHASE="kill -9 the gateway under overlapping writes"
acked_start "$(node_uri 4 disk)" "$LT_TMP/w.log" --connections 6 --area $((8 * M))
poll_until 60 acked_at_least "$LT_TMP/w.log" 600 || cfail "fewer than 600 writes acknowledged within 60s"
kill_node 4
STATUS=$(acked_wait "$LT_TMP/w.log")
[ "$STATUS" = 3 ] || cfail "the writers did not notice the gateway's death (status $STATUS)"
echo "$(acked_count "$LT_TMP/w.log") of $(grep -c '^S ' "$LT_TMP/w.log") writes acknowledged"

# The gateway's write attach holds until failure detection says it is gone; a
# repair is refused while a live node writes the VDI.
gateway_gone() { check_json "$(ncli 1 node list --json)" "all(m['id'] != '$(node_id 4)' for m in doc)"; }
poll_until 10 gateway_gone || cfail "the killed gateway is still listed"

PHASE="check"
status=0
ncli 1 cluster check --repair --json >"$LT_TMP/repair.json" || status=$?
cat "$LT_TMP/repair.json"
[ "$status" = 0 ] || cfail "cluster check --repair exited $status, want 0"
check_json "$(cat "$LT_TMP/repair.json")" \
  "all(i['repaired'] for i in doc['issues'])" "doc['repaired'] == len(doc['issues'])" \
  "doc['objects_checked'] >= 2" || cfail "cluster check --repair left problems or miscounted"
OUT=$(ncli 2 cluster check) || cfail "a second cluster check exits non-zero: $OUT"
check_json "$(ncli 3 cluster check --json)" "doc['issues'] == []" || cfail "a second check finds problems"

PHASE="reads"
MD5=$(export_md5 "$(node_uri 1 disk)")
for i in 2 3; do [ "$(export_md5 "$(node_uri "$i" disk)")" = "$MD5" ] || cfail "node $i reads other data"; done
acked_verify "$(node_uri 2 disk)" "$LT_TMP/w.log" --area $((8 * M))
start_node 4
wait_serving 4
poll_until 20 gateway_listed || cfail "the gateway is not listed again"
[ "$(export_md5 "$(node_uri 4 disk)")" = "$MD5" ] || cfail "the restarted gateway reads other data"
expect_all_alive
echo PASS
