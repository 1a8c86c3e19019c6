#!/usr/bin/env bash
# Issue 13, case 3 (gateway side). A gateway-only node is killed -9 in the middle of
# overlapping writes from six connections, so some writes may have reached only some
# replicas; only that gateway knew which. It is restarted at once and the client comes
# back through the SAME node: there is no other node's takeover, but the VDI's writer
# is still recorded as this node's earlier run, so the attach must resync the whole
# VDI first (before: it did not, and copies could stay different). Then `cluster check`
# WITHOUT --repair is clean, every acknowledged write reads back, and every node reads
# the same bytes.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
start_cluster 3 3
start_node 4 --gateway
wait_serving 4
ncli 4 vdi create disk 8M

PHASE="kill -9 the gateway under overlapping writes"
acked_start "$(node_uri 4 disk)" "$LT_TMP/w.log" --connections 6 --area $((8 * M))
poll_until 60 acked_at_least "$LT_TMP/w.log" 400 || cfail "fewer than 400 writes acknowledged within 60s"
kill_node 4
STATUS=$(acked_wait "$LT_TMP/w.log")
[ "$STATUS" = 3 ] || cfail "the writers did not notice the gateway's death (status $STATUS)"
echo "$(acked_count "$LT_TMP/w.log") of $(grep -c '^S ' "$LT_TMP/w.log") writes acknowledged"

PHASE="restart the gateway and reattach through it"
LOG_LINES=$(wc -l <"$CL_DIR/n4.log")
start_node 4
wait_serving 4
acked_verify "$(node_uri 4 disk)" "$LT_TMP/w.log" --area $((8 * M))
tail -n +$((LOG_LINES + 1)) "$CL_DIR/n4.log" | grep -q "VDI 'disk': took over from a writer that never detached" ||
  cfail "the reattach through the restarted gateway did not resync the VDI"

PHASE="check without repair"
ncli 1 cluster check --json >"$LT_TMP/check.json" || { cat "$LT_TMP/check.json" >&2; cfail "cluster check (no repair) found problems after the reattach"; }
check_json "$(cat "$LT_TMP/check.json")" "doc['issues'] == []" || cfail "cluster check lists issues"
MD5=$(export_md5 "$(node_uri 4 disk)")
for i in 1 2 3; do [ "$(export_md5 "$(node_uri "$i" disk)")" = "$MD5" ] || cfail "node $i reads other data"; done
expect_all_alive
echo PASS
