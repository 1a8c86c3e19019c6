#!/usr/bin/env bash
# Issue 3, test 6. A gateway-only node (--gateway) joins three storage nodes: it
# serves NBD and admin for VDIs whose objects live on the others and stores none
# itself. An image copied in through it reads back with its md5 through every node.
# Four connections write through the gateway while it is killed -9: reconnecting
# through a storage node finds every acknowledged write.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
start_cluster 3 3
PHASE="gateway joins"
start_node 4 --gateway
wait_serving 4
gateway_listed() {
  [ "$(cluster_field 1 'doc["gateways"]')" = 1 ] && [ "$(cluster_field 1 'doc["storage_nodes"]')" = 3 ]
}
poll_until 20 gateway_listed || cfail "cluster info does not list 1 gateway and 3 storage nodes: $(ncli 1 cluster info)"
wait_settled 3
check_json "$(ncli 1 node list --json)" \
  "len(doc) == 4" \
  "[m['status'] for m in doc if m['id'] == '$(node_id 4)'] == ['gateway']" \
  "[m['gateway'] for m in doc if m['id'] == '$(node_id 4)'] == [True]" ||
  cfail "node list does not show node 4 as the gateway"

PHASE="image through the gateway"
ncli 4 vdi create disk 64M
head -c $((64 * M)) /dev/urandom >"$LT_TMP/image"
WANT=$(file_md5 "$LT_TMP/image")
nbdcopy --connections=4 "$LT_TMP/image" "$(node_uri 4 disk)" || cfail "nbdcopy into the gateway failed"
qio "$(node_uri 4 disk)" 'write -P 0x5a 1M 64k' 'read -P 0x5a 1M 64k'
qio "$(node_uri 1 disk)" 'read -P 0x5a 1M 64k'
dd if=/dev/zero bs=64k count=1 2>/dev/null | tr '\0' '\132' |
  dd of="$LT_TMP/image" bs=1M seek=1 conv=notrunc 2>/dev/null
WANT=$(file_md5 "$LT_TMP/image")
for i in 4 1 2 3; do
  got=$(export_md5 "$(node_uri "$i" disk)")
  [ "$got" = "$WANT" ] || cfail "md5 of disk through node $i is $got, want $WANT"
done
echo "disk md5 $WANT through the gateway and every storage node"
[ "$(copies_of_vdi disk)" = 3 ] || cfail "disk does not have 3 copies"
GW_OBJECTS=$( (find "$CL_DIR/n4/objects" -type f 2>/dev/null || true) | wc -l)
[ "$GW_OBJECTS" = 0 ] || cfail "the gateway holds $GW_OBJECTS object files"
check_json "$(ncli 1 node list --json)" \
  "[m['objects'] for m in doc if m['id'] == '$(node_id 4)'] == [0]" ||
  cfail "node list shows objects on the gateway"

PHASE="kill -9 the gateway under writes"
ncli 4 vdi create live 32M
acked_start "$(node_uri 4 live)" "$LT_TMP/live.log" --connections 4 --area $((32 * M))
poll_until 60 acked_at_least "$LT_TMP/live.log" 200 || cfail "fewer than 200 writes acknowledged within 60s"
kill_node 4
STATUS=$(acked_wait "$LT_TMP/live.log")
# Its write attach holds until failure detection says the gateway is gone.
gateway_gone() { check_json "$(ncli 1 node list --json)" "all(m['id'] != '$(node_id 4)' for m in doc)"; }
poll_until 10 gateway_gone || cfail "the killed gateway is still listed"
[ "$STATUS" = 3 ] || cfail "the writer did not notice the gateway's death (status $STATUS)"
echo "$(acked_count "$LT_TMP/live.log") writes acknowledged before the kill"
for i in 1 2 3; do acked_verify "$(node_uri "$i" live)" "$LT_TMP/live.log" --area $((32 * M)); done
LIVE=$(export_md5 "$(node_uri 1 live)")
for i in 2 3; do
  [ "$(export_md5 "$(node_uri "$i" live)")" = "$LIVE" ] || cfail "live reads differently through node $i"
done

PHASE="the gateway returns"
start_node 4
wait_serving 4
poll_until 20 gateway_listed || cfail "the gateway is not listed again"
[ "$(export_md5 "$(node_uri 4 live)")" = "$LIVE" ] || cfail "live reads differently through the gateway"
[ "$(export_md5 "$(node_uri 4 disk)")" = "$WANT" ] || cfail "disk reads differently through the gateway"
expect_all_alive
echo PASS
