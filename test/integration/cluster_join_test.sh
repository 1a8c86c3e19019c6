#!/usr/bin/env bash
# Issue 3, test 3. A fourth node joins a 3-node cluster (3 copies) while fio's nbd
# engine writes with verify headers: fio sees no error and its verify passes,
# recovery moves copies to the new node, a verify-only pass through the new node
# finds every block, and once copies no longer owned are removed every object has
# 3 copies and each node holds between 0.75x and 1.25x of the ideal share (3/4 of
# the objects; 128 vnodes each).
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

SIZE=192M
start_cluster 3 3
ncli 1 vdi create disk "$SIZE"
fio_run "$LT_TMP/fill.json" "$(node_uri 1 disk)" "$SIZE" --rw=write --do_verify=0
EPOCH0=$(cluster_epoch)

PHASE="join under load"
fio_start "$LT_TMP/load.json" "$(node_uri 1 disk)" "$SIZE" --rw=randwrite --rate=,12m --do_verify=1
fio_running() { kill -0 "$FIO_PID" 2>/dev/null; }
written_some() { fio_running && [ "$(json_get "$(ncli 1 node list --json)" 'sum(m["objects"] for m in doc)')" -gt 0 ]; }
poll_until 20 written_some || cfail "fio is not writing"
start_node 4
wait_settled 4 20
[ "$(cluster_epoch)" -gt "$EPOCH0" ] || cfail "no new epoch for the join"
fio_running || cfail "fio ended before the join epoch; the join was not under load"
echo "node 4 joined in epoch $(cluster_epoch) while fio writes"
fio_wait "$LT_TMP/load.json"
wait_recovery_done 120
fio_run "$LT_TMP/verify4.json" "$(node_uri 4 disk)" "$SIZE" --rw=randwrite --verify_only=1
wait_copies disk 3 60

PHASE="balance"
TOTAL=$(json_get "$(ncli 1 cluster check --json)" 'doc["copies_checked"]')
balanced() {
  check_json "$(ncli 1 node list --json)" \
    "sum(m['objects'] for m in doc if not m['gateway']) == $TOTAL" \
    "all(0.75 * $TOTAL / 4 <= m['objects'] <= 1.25 * $TOTAL / 4 for m in doc if not m['gateway'])"
}
poll_until 60 balanced || {
  balanced || true
  cfail "copies not removed or not balanced within 60s ($TOTAL copies in all)"
}
json_get "$(ncli 1 node list --json)" '" ".join(m["id"][:8] + "=" + str(m["objects"]) for m in doc)'
MD5=$(export_md5 "$(node_uri 1 disk)")
for i in 2 3 4; do [ "$(export_md5 "$(node_uri "$i" disk)")" = "$MD5" ] || cfail "node $i reads other data"; done
expect_all_alive
echo PASS
