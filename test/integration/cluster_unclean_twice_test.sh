#!/usr/bin/env bash
# Issue 13, case 3 (storage side). Node 3 is killed -9 under writes, so its dirty logs
# name objects whose copies there may differ from the others'. It is restarted while
# the rest of the cluster is shut down: it replays its logs, deletes them, and waits
# for the nodes of the last epoch, so its resync of those objects can not run yet. It
# is killed -9 again. Before, the ids lived only in memory once the logs were gone,
# and the second crash forgot them: nothing was ever resynced. Now they are in
# n3/unclean.ids until settled: when the whole cluster is back, node 3 resyncs them,
# the record goes, every acknowledged write reads back through every node, and
# `cluster check` WITHOUT --repair is clean.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
start_cluster 3 3
ncli 1 vdi create live 32M
RECORD="$CL_DIR/n3/unclean.ids"

PHASE="kill -9 node 3 under writes"
acked_start "$(node_uri 1 live)" "$LT_TMP/live.log" --connections 4 --area $((32 * M))
poll_until 60 acked_at_least "$LT_TMP/live.log" 300 || cfail "fewer than 300 writes acknowledged within 60s"
kill_node 3
wait_settled 2 30
BEFORE=$(acked_count "$LT_TMP/live.log")
poll_until 60 acked_at_least "$LT_TMP/live.log" $((BEFORE + 100)) || cfail "writes did not go on without node 3"
kill "$ACKED_PID" 2>/dev/null || true
poll_until 10 sh -c "! kill -0 $ACKED_PID 2>/dev/null" || cfail "the writer did not stop"

PHASE="node 3 restarts alone (the others shut down) and is killed again"
ncli 1 cluster shutdown >/dev/null
for i in 1 2; do CL_UP[$i]=0; _wait_exit "$i" 30; done
start_node 3
poll_until 20 test -s "$RECORD" ||
  cfail "node 3 replayed its dirty logs but recorded no unclean objects ($RECORD)"
not_running() { [ "$(cluster_field 3 'doc["status"]')" != running ]; }
not_running || cfail "node 3 runs without the nodes of the last epoch"
RECORDED=$(wc -l <"$RECORD")
echo "node 3 recorded $RECORDED unclean objects; killing it again before its resync"
kill_node 3
[ "$(wc -l <"$RECORD")" = "$RECORDED" ] || cfail "the unclean record changed across the second crash"

PHASE="the whole cluster back"
LOG_LINES=$(wc -l <"$CL_DIR/n3.log")
start_node 1
start_node 2
start_node 3
wait_settled 3 60
wait_recovery_done 90
resynced() {
  tail -n +$((LOG_LINES + 1)) "$CL_DIR/n3.log" |
    grep -E "unclean stop: $RECORDED objects had writes in flight; [0-9]+ resynced cluster-wide" |
    grep -vq "not resynced"
}
poll_until 60 resynced || cfail "node 3 did not resync the $RECORDED objects its first crash left unclean"
tail -n +$((LOG_LINES + 1)) "$CL_DIR/n3.log" | grep -m1 "unclean stop:"
poll_until 10 sh -c "! test -e '$RECORD'" || cfail "the unclean record stays after the resync"
for i in 1 2 3; do acked_verify "$(node_uri "$i" live)" "$LT_TMP/live.log" --area $((32 * M)); done
check_json "$(ncli 1 cluster check --json)" "doc['issues'] == []" || cfail "cluster check (no repair) finds problems"
expect_all_alive
echo PASS
