#!/usr/bin/env bash
# DESIGN.md rule 4 ("No silent divergence") across a copy-on-write: a write fails on
# one replica (its object file made immutable, as in cluster_resync), so the object's
# copies differ until the gateway's background resync settles it. A snapshot is taken
# meanwhile and a write to the new head copies that object on every replica from the
# replica's own copy (create_from is a local copy): the new head's copies must not be
# left differing (the gateway settles them before the copy-on-write returns), whatever
# happens to the source later. Checked with `cluster check` (no --repair) while the
# source is still unsettled, and the head's bytes read through every node agree.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

command -v chattr >/dev/null || fail "chattr missing (e2fsprogs)"
M=$((1024 * 1024))
IMMUTABLE=""
cow_cleanup() {
  [ -z "$IMMUTABLE" ] || chattr -i "$IMMUTABLE" 2>/dev/null || true
  cluster_cleanup
}
trap cow_cleanup EXIT

start_cluster 3 3
ncli 1 vdi create disk 16M
head -c $((16 * M)) /dev/urandom >"$LT_TMP/image"
nbdcopy "$LT_TMP/image" "$(node_uri 1 disk)" || cfail "nbdcopy into disk failed"
wait_copies disk 3 30
FAMILY=$(json_get "$(ncli 1 vdi info disk --json)" 'doc["id"]')
# Object id: VDI (8 hex), family (8), type (2, 00 = data), reserved (6), index (8).
object_of() { printf '%08x%08x00000000%08x' "$1" "$FAMILY" "$2"; }

SOURCE=$(object_of "$FAMILY" 1)
IMMUTABLE="$CL_DIR/n3/objects/$SOURCE"
[ -f "$IMMUTABLE" ] || cfail "node 3 has no file for object $SOURCE"
chattr +i "$IMMUTABLE" || cfail "chattr +i failed (the test needs an ext4-like filesystem and root)"
set +e
out=$(timeout 60 qemu-io -f raw -c "write -P 0x77 $((4 * M + 65536)) 64k" "$(node_uri 1 disk)" 2>&1)
rc=$?
set -e
[ "$rc" -ne 124 ] || cfail "the write hung"
grep -q "write failed" <<<"$out" || cfail "the write that node 3 refuses did not fail: $out"
poll_until 20 grep -q "object $SOURCE: replicas may differ after a failed update; resync attempt" \
  "$CL_DIR/n1.log" || cfail "node 1 did not log a pending resync of $SOURCE"

ncli 1 vdi snapshot disk --tag t1 >/dev/null || cfail "snapshot failed"
HEAD=$(json_get "$(ncli 1 vdi info disk --json)" 'doc["id"]')
[ "$HEAD" != "$FAMILY" ] || cfail "the snapshot did not make a new head"
# A small write elsewhere in object 1: copy-on-write of the whole object, then the write.
qemu-io -f raw -c "write -P 0x55 $((5 * M)) 4k" "$(node_uri 1 disk)" >/dev/null ||
  cfail "the copy-on-write write failed"
COPY=$(object_of "$HEAD" 1)
[ -f "$CL_DIR/n3/objects/$COPY" ] || cfail "node 3 has no copy-on-write copy $COPY"
grep -q "object $SOURCE: resynced after a failed update" "$CL_DIR/n1.log" &&
  cfail "the source was settled before the copy-on-write: the test proves nothing"

json=$(ncli 1 cluster check --json 2>/dev/null) || true
echo "$json" | "$SYS_PYTHON" -c '
import json, sys
doc = json.load(sys.stdin)
for issue in doc["issues"]:
    print("issue:", issue["object"], issue["node"], issue["problem"])
' || cfail "cluster check printed no JSON: $json"
check_json "$json" "not [i for i in doc['issues'] if i['object'] == '$COPY']" ||
  cfail "the copy-on-write copies $COPY differ (silent divergence) while the source is unsettled"

# The head's bytes agree through every node (each reads its local copy first).
first=""
for i in 1 2 3; do
  md5=$(export_md5 "$(node_uri "$i" disk)")
  [ -z "$first" ] || [ "$md5" = "$first" ] || cfail "node $i reads md5 $md5, node 1 reads $first"
  first=$md5
done
chattr -i "$IMMUTABLE"
IMMUTABLE=""
expect_all_alive
echo "PASS: a copy-on-write from an unsettled object left equal copies (md5 $first)"
