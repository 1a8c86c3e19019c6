#!/usr/bin/env bash
# Issue 3, test 2. Five nodes, 3 copies (min 2). Nodes 5 and 4 are killed one after
# the other, with recovery between: every object is back to 3 copies on the three
# survivors and the data is intact. Killing node 3 leaves 2 copies and writes go
# on. Killing node 2 leaves 1 copy, below min-copies: a write fails with an I/O
# error to the NBD client, the node logs why, and reads still return the right data.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
start_cluster 5 3
ncli 1 vdi create disk 64M
head -c $((64 * M)) /dev/urandom >"$LT_TMP/image"
nbdcopy --connections=4 "$LT_TMP/image" "$(node_uri 1 disk)" || cfail "nbdcopy into disk failed"
WANT=$(file_md5 "$LT_TMP/image")
wait_copies disk 3 30

check_data() {
  local i got
  for i in $(up_nodes); do
    got=$(export_md5 "$(node_uri "$i" disk)")
    [ "$got" = "$WANT" ] || cfail "$PHASE: md5 through node $i is $got, want $WANT"
  done
  echo "$PHASE: md5 $WANT through nodes $(up_nodes)"
}

for victim in 5 4; do
  PHASE="node $victim killed"
  kill_node "$victim"
  wait_settled $((victim - 1)) 10
  wait_recovery_done 90
  wait_copies disk 3 60
  check_data
done

PHASE="node 3 killed: 2 copies"
kill_node 3
wait_settled 2 10
qio "$(node_uri 1 disk)" 'write -P 0x6b 8M 1M' 'read -P 0x6b 8M 1M'
qio "$(node_uri 2 disk)" 'read -P 0x6b 8M 1M'
head -c $M /dev/zero | tr '\0' '\153' >"$LT_TMP/p"   # 0x6b
dd if="$LT_TMP/p" of="$LT_TMP/image" bs=1M seek=8 conv=notrunc 2>/dev/null
WANT=$(file_md5 "$LT_TMP/image")
wait_recovery_done 60
wait_copies disk 2 30
check_data

PHASE="node 2 killed: below min-copies"
kill_node 2
wait_settled 1 10
LOG_LINES=$(wc -l <"$CL_DIR/n1.log")
status=0
out=$(timeout 60 qemu-io -f raw -c 'write -P 0x7c 16M 64k' "$(node_uri 1 disk)" 2>&1) || status=$?
echo "qemu-io write below min-copies: exit $status: $out"
[ "$status" != 124 ] || cfail "the write below min-copies hung (no reply within 60s)"
grep -q 'Input/output error' <<<"$out" || cfail "the write below min-copies did not fail with an I/O error: $out"
poll_until 10 bash -c "tail -n +$((LOG_LINES + 1)) '$CL_DIR/n1.log' | grep -q 'below min-copies'" ||
  cfail "node 1 did not log why the write failed ('below min-copies')"
tail -n +$((LOG_LINES + 1)) "$CL_DIR/n1.log" | grep -m1 'below min-copies'
check_data
qio "$(node_uri 1 disk)" 'read -P 0x6b 8M 1M'
expect_all_alive
echo PASS
