#!/usr/bin/env bash
# Issue 3, test 5. Whole-cluster crash: every node of a 3-node cluster is killed -9
# at once while four connections write. Restarted, the cluster waits for all the
# nodes of its last epoch (VDI commands say so) and then runs: an image copied in
# before the crash has its md5 through every node, every acknowledged write is
# there, and `cluster check --repair` leaves every object's replicas identical.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
start_cluster 3 3
ncli 1 vdi create img 64M
ncli 1 vdi create live 32M
head -c $((64 * M)) /dev/urandom >"$LT_TMP/image"
WANT=$(file_md5 "$LT_TMP/image")
nbdcopy --connections=4 "$LT_TMP/image" "$(node_uri 2 img)" || cfail "nbdcopy into img failed"
[ "$(export_md5 "$(node_uri 1 img)")" = "$WANT" ] || cfail "img md5 wrong before the crash"

PHASE="crash under writes"
acked_start "$(node_uri 1 live)" "$LT_TMP/live.log" --connections 4 --area $((32 * M))
poll_until 60 acked_at_least "$LT_TMP/live.log" 300 || cfail "fewer than 300 writes acknowledged within 60s"
kill_all_nodes
STATUS=$(acked_wait "$LT_TMP/live.log")
[ "$STATUS" = 3 ] || cfail "the writer did not notice the crash (status $STATUS)"
echo "$(acked_count "$LT_TMP/live.log") writes acknowledged before the crash"

PHASE="restart: waiting for the last epoch's nodes"
start_node 1
start_node 2
is_waiting() { [ "$(cluster_field "$1" 'doc["status"]')" = waiting ]; }
poll_until 20 is_waiting 1 || cfail "node 1 is not 'waiting' with node 3 missing: $(ncli 1 cluster info)"
poll_until 20 is_waiting 2 || cfail "node 2 is not 'waiting' with node 3 missing"
REFUSAL_STDIN=/dev/null KD_ADMIN=$(node_admin 1) expect_refusal 'waiting for the nodes of its last epoch' vdi info img
start_node 3
wait_settled 3 30
wait_recovery_done 60

PHASE="after the restart"
for i in 1 2 3; do
  got=$(export_md5 "$(node_uri "$i" img)")
  [ "$got" = "$WANT" ] || cfail "img md5 through node $i is $got, want $WANT"
done
for i in 1 2 3; do acked_verify "$(node_uri "$i" live)" "$LT_TMP/live.log" --area $((32 * M)); done
status=0
ncli 1 cluster check --repair --json >"$LT_TMP/check.json" || status=$?
[ "$status" = 0 ] || { cat "$LT_TMP/check.json" >&2; cfail "cluster check --repair exited $status"; }
check_json "$(cat "$LT_TMP/check.json")" "all(i['repaired'] for i in doc['issues'])" ||
  cfail "cluster check left problems"
echo "cluster check: $(json_get "$(cat "$LT_TMP/check.json")" '(doc["objects_checked"], doc["copies_checked"], len(doc["issues"]))') (objects, copies, issues)"
check_json "$(ncli 1 cluster check --json)" "doc['issues'] == []" || cfail "a second cluster check finds problems"
LIVE=$(export_md5 "$(node_uri 1 live)")
for i in 2 3; do
  [ "$(export_md5 "$(node_uri "$i" live)")" = "$LIVE" ] || cfail "live reads differently through node $i"
done
[ "$(copies_of_vdi img)" = 3 ] || cfail "img does not have 3 copies"
expect_all_alive
echo PASS
