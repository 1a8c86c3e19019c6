#!/usr/bin/env bash
# Issue 13, case 1: one writer per VDI across a freeze. Client A writes VDI "disk"
# through node 2; node 2 is frozen (SIGSTOP) until the others fail it out; client B
# takes the VDI over through node 3 and writes. Node 2 is resumed and rejoins; A's
# next write (on its old connection, into the object A's first write made and B never
# wrote, so no copy's own version can fence it) must fail; A's acknowledged first
# write and B's bytes must read back through every node, A's refused block must read
# as it was (zeros), and `cluster check` must be clean.
# Before the per-VDI attach generation and the lease-lapse check, A's write was
# acknowledged and landed.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
WRITER="$(dirname "$0")/nbd_writer.py"
mkdir -p "$LT_TMP"
rm -f "$LT_TMP/go" "$LT_TMP/a.result"
start_cluster 3 3
ncli 1 vdi create disk 16M
ncli 2 vdi info disk >/dev/null  # node 2 serves the new VDI (an admin call brings it up to date)

PHASE="client A attached through node 2"
"$SYS_PYTHON" "$WRITER" probe "$(node_uri 2 disk)" "$LT_TMP/go" "$LT_TMP/a.result" \
  --hold-s 60 --wait-s 240 2>"$LT_TMP/a.err" &
A_PID=$!
poll_until 30 grep -qx ready "$LT_TMP/a.result" || cfail "client A's first write through node 2 was not acknowledged: $(cat "$LT_TMP/a.err")"

PHASE="node 2 frozen and failed out"
sigstop_node 2
wait_settled 2 30

PHASE="client B takes the VDI over through node 3"
qio "$(node_uri 3 disk)" 'write -P 0xbb 8M 64k' 'write -P 0xbc 4M 64k'

PHASE="node 2 resumed; client A writes again"
sigcont_node 2
wait_settled 3 60
touch "$LT_TMP/go"
poll_until 90 sh -c "! grep -qx ready '$LT_TMP/a.result'" || cfail "client A's second write got no answer"
wait "$A_PID" 2>/dev/null || true
A_RESULT=$(cat "$LT_TMP/a.result")
echo "client A's write after the takeover: $A_RESULT"
case "$A_RESULT" in
  error*) ;;
  *) cfail "client A's write through the replaced gateway was '$A_RESULT', want an error" ;;
esac
grep -q "write attach (generation" "$CL_DIR/n2.log" ||
  cfail "node 2 did not log that its attach was taken over"

PHASE="after the takeover"
wait_recovery_done 90
for i in 1 2 3; do
  qio "$(node_uri "$i" disk)" 'read -P 0x11 0 4k' 'read -P 0 4k 4k' 'read -P 0xbc 4M 64k' 'read -P 0xbb 8M 64k'
done
ncli 1 cluster check >"$LT_TMP/check.out" 2>&1 || { cat "$LT_TMP/check.out" >&2; cfail "cluster check found problems"; }
expect_all_alive
echo "PASS"
