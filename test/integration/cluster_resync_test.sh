#!/usr/bin/env bash
# Issue 3, DESIGN.md rule 4 ("No silent divergence"), without `cluster check --repair`:
#  1. A write fails on one replica (its object file made immutable: writes to it get
#     EPERM). The client gets an error; the gateway tries to resync the object at
#     once, can not (the copy still refuses), remembers it and retries in the
#     background; meanwhile reads through the gateway agree. Once the file is
#     writable again the retry makes every copy equal: `cluster check` finds nothing
#     and reads through every node agree.
#  2. A node is killed (-9) with a write in flight on it (no FLUSH since), and its
#     copy of that object is torn while it is down (one byte changed: the dirty-log
#     replay makes the checksum follow it, so the copy looks good, at the same
#     version as the others). At restart the node resyncs the object cluster-wide
#     from the copy the others agree on: `cluster check` finds nothing, md5 through
#     every node is what was written.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

command -v chattr >/dev/null || fail "chattr missing (e2fsprogs)"
M=$((1024 * 1024))
kDataOffset=69632
IMMUTABLE=""
resync_cleanup() {
  [ -z "$IMMUTABLE" ] || chattr -i "$IMMUTABLE" 2>/dev/null || true
  cluster_cleanup
}
trap resync_cleanup EXIT

start_cluster 3 3
ncli 1 vdi create disk 16M
head -c $((16 * M)) /dev/urandom >"$LT_TMP/image"
nbdcopy "$LT_TMP/image" "$(node_uri 1 disk)" || cfail "nbdcopy into disk failed"
wait_copies disk 3 30
VDI_ID=$(json_get "$(ncli 1 vdi info disk --json)" 'doc["id"]')
# Object id: VDI (8 hex), family (8), type (2, 00 = data), reserved (6), index (8).
object_of() { printf '%08x%08x00000000%08x' "$VDI_ID" "$VDI_ID" "$1"; }

check_clean() {
  local json status=0
  json=$(ncli 1 cluster check --json 2>/dev/null) || status=$?
  [ "$status" = 0 ] && check_json "$json" "doc['issues'] == []" 2>/dev/null
}

agree_everywhere() {  # prints the md5 every node reads, or fails
  local i md5 first=""
  for i in 1 2 3; do
    md5=$(export_md5 "$(node_uri "$i" disk)")
    [ -z "$first" ] || [ "$md5" = "$first" ] || cfail "node $i reads md5 $md5, node 1 reads $first"
    first=$md5
  done
  echo "$first"
}

# ---- 1. a write that failed on one replica ----------------------------------------
PHASE="failed write"
OBJECT=$(object_of 1)
IMMUTABLE="$CL_DIR/n3/objects/$OBJECT"
[ -f "$IMMUTABLE" ] || cfail "node 3 has no file for object $OBJECT"
chattr +i "$IMMUTABLE" || cfail "chattr +i failed (the test needs an ext4-like filesystem and root)"
set +e
out=$(timeout 60 qemu-io -f raw -c "write -P 0x77 $((4 * M + 65536)) 64k" "$(node_uri 1 disk)" 2>&1)
rc=$?
set -e
[ "$rc" -ne 124 ] || cfail "the write hung"
grep -q "write failed" <<<"$out" || cfail "the write that node 3 refuses did not fail: $out"
echo "client saw: $(grep 'write failed' <<<"$out")"
poll_until 20 grep -q "object $OBJECT: replicas may differ after a failed update; resync attempt" \
  "$CL_DIR/n1.log" || cfail "node 1 did not log a pending resync of $OBJECT"
# Meanwhile the gateway reads one fixed copy: the same bytes every time.
dump() { qemu-io -f raw -c "read -v $((4 * M + 65536)) 512" "$(node_uri 1 disk)" | grep '^[0-9a-f]*:'; }
a=$(dump | md5sum)
b=$(dump | md5sum)
[ "$a" = "$b" ] || cfail "two reads of the unsettled object through node 1 differ"

chattr -i "$IMMUTABLE"
IMMUTABLE=""
# The background retry (backoff up to 30 s) settles it; nobody runs --repair.
poll_until 90 check_clean || {
  ncli 1 cluster check --json >&2 || true
  cfail "replicas still differ 90 s after node 3's copy became writable again"
}
grep -q "object $OBJECT: resynced after a failed update" "$CL_DIR/n1.log" ||
  cfail "node 1 did not log the resync of $OBJECT"
SUM=$(agree_everywhere)
OLD=$(file_md5 "$LT_TMP/image")
cp "$LT_TMP/image" "$LT_TMP/patched"
head -c 65536 /dev/zero | tr '\0' '\167' |
  dd of="$LT_TMP/patched" bs=1 seek=$((4 * M + 65536)) conv=notrunc 2>/dev/null
NEW=$(file_md5 "$LT_TMP/patched")
[ "$SUM" = "$OLD" ] || [ "$SUM" = "$NEW" ] || cfail "every node reads md5 $SUM: neither before ($OLD) nor after ($NEW) the write"
echo "scenario 1: every replica equal; every node reads $([ "$SUM" = "$NEW" ] && echo "the failed write's data" || echo "the old data")"
cp "$LT_TMP/$([ "$SUM" = "$NEW" ] && echo patched || echo image)" "$LT_TMP/want"

# ---- 2. an unclean stop with a write in flight -------------------------------------
PHASE="unclean stop"
OBJECT=$(object_of 2)
OFFSET=$((8 * M + 4096 * 3))
"$SYS_PYTHON" - "$(node_uri 1 disk)" "$OFFSET" <<'PY' || cfail "the write without flush failed"
import sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x66" * 8192, int(sys.argv[2]))  # acknowledged; no FLUSH follows
h.shutdown()
PY
head -c 8192 /dev/zero | tr '\0' '\146' | dd of="$LT_TMP/want" bs=1 seek="$OFFSET" conv=notrunc 2>/dev/null
WANT=$(file_md5 "$LT_TMP/want")
EPOCH=$(cluster_epoch)
kill_node 2
ls "$CL_DIR"/n2/dirty.*.log >/dev/null 2>&1 || cfail "node 2 left no dirty log"
# Tear node 2's copy inside the block just written: its checksum will follow it.
FILE="$CL_DIR/n2/objects/$OBJECT"
POS=$((kDataOffset + 4096 * 3 + 100))
printf '\x01' | dd of="$FILE" bs=1 seek="$POS" conv=notrunc 2>/dev/null
wait_epoch_at_least $((EPOCH + 1)) 30
start_node 2
wait_settled 3 60
poll_until 60 grep -q "unclean stop: [0-9]* objects had writes in flight; [0-9]* resynced cluster-wide ([1-9][0-9]* copies rewritten)" \
  "$CL_DIR/n2.log" || cfail "node 2 did not log the resync of its unclean objects"
grep "unclean stop:" "$CL_DIR/n2.log" | tail -n 1
wait_recovery_done 60
poll_until 30 check_clean || {
  ncli 1 cluster check --json >&2 || true
  cfail "replicas differ after node 2's unclean restart"
}
SUM=$(agree_everywhere)
[ "$SUM" = "$WANT" ] || cfail "every node reads md5 $SUM, want $WANT"
expect_all_alive
echo "PASS: a failed write and an unclean stop both ended with equal replicas, without --repair"
