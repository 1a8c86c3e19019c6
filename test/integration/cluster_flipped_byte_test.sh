#!/usr/bin/env bash
# Issue 3, test 11. One byte of node 2's copy of a data object is flipped on disk
# (in the data area, docs/format.md). `cluster check` reports that copy with a bad
# checksum and exits 1; reads through every node (node 2 prefers its own copy) still
# return the right data; `cluster check --repair` rewrites the bad copy, says so and
# exits 0; afterwards the check is clean and the byte on disk is right again.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
kDataOffset=69632
start_cluster 3 3
ncli 1 vdi create disk 32M
head -c $((32 * M)) /dev/urandom >"$LT_TMP/image"
WANT=$(file_md5 "$LT_TMP/image")
nbdcopy --connections=4 "$LT_TMP/image" "$(node_uri 1 disk)" || cfail "nbdcopy into disk failed"
wait_copies disk 3 30

# Object id: VDI (8 hex), family (8), type (2, 00 = data), reserved (6), index (8).
VDI_ID=$(json_get "$(ncli 1 vdi info disk --json)" 'doc["id"]')
OBJECT=$(printf '%08x%08x00000000%08x' "$VDI_ID" "$VDI_ID" 1)
FILE="$CL_DIR/n2/objects/$OBJECT"
[ -f "$FILE" ] || { ls "$CL_DIR/n2/objects" >&2; cfail "node 2 has no file for object $OBJECT"; }
POS=$((5000 + 4096 * 7))              # inside block 8 of object 1 (4 MiB objects)
IMAGE_POS=$((4 * M + POS))
GOOD=$(od -An -tx1 -j "$IMAGE_POS" -N1 "$LT_TMP/image" | tr -d ' ')
BAD=$(printf '%02x' $((0x$GOOD ^ 0xff)))
printf "\\x$BAD" | dd of="$FILE" bs=1 seek=$((kDataOffset + POS)) conv=notrunc 2>/dev/null
[ "$(od -An -tx1 -j $((kDataOffset + POS)) -N1 "$FILE" | tr -d ' ')" = "$BAD" ] || cfail "the flip did not land"
echo "flipped byte $POS of object $OBJECT on node 2: $GOOD -> $BAD"

PHASE="check finds it"
status=0
ncli 1 cluster check --json >"$LT_TMP/check.json" || status=$?
[ "$status" = 1 ] || { cat "$LT_TMP/check.json" >&2; cfail "cluster check exited $status, want 1"; }
check_json "$(cat "$LT_TMP/check.json")" \
  "[(i['object'], i['node'], i['problem'], i['repaired']) for i in doc['issues']] == [('$OBJECT', '$(node_id 2)', 'bad checksum', False)]" \
  "doc['issues'][0]['vdi'] == 'disk'" || cfail "cluster check does not report exactly the flipped copy"

PHASE="reads"
for i in 2 1 3; do
  got=$(export_md5 "$(node_uri "$i" disk)")
  [ "$got" = "$WANT" ] || cfail "md5 through node $i is $got, want $WANT"
done

PHASE="repair"
status=0
ncli 1 cluster check --repair --json >"$LT_TMP/repair.json" || status=$?
[ "$status" = 0 ] || { cat "$LT_TMP/repair.json" >&2; cfail "cluster check --repair exited $status, want 0"; }
# A read may already have repaired it (read repair); if not, --repair did and says so.
check_json "$(cat "$LT_TMP/repair.json")" \
  "all(i['repaired'] and i['object'] == '$OBJECT' and i['node'] == '$(node_id 2)' for i in doc['issues'])" \
  "doc['repaired'] == len(doc['issues'])" || cfail "cluster check --repair did not repair exactly the bad copy"
status=0
ncli 1 cluster check --json >"$LT_TMP/after.json" || status=$?
[ "$status" = 0 ] || { cat "$LT_TMP/after.json" >&2; cfail "cluster check after repair exited $status"; }
check_json "$(cat "$LT_TMP/after.json")" "doc['issues'] == []" || cfail "problems remain after repair"
[ "$(od -An -tx1 -j $((kDataOffset + POS)) -N1 "$FILE" | tr -d ' ')" = "$GOOD" ] ||
  cfail "the byte in node 2's object file is still wrong after the repair"
OUT=$(ncli 2 vdi check disk) || cfail "vdi check disk exits non-zero after the repair: $OUT"
for i in 1 2 3; do
  [ "$(export_md5 "$(node_uri "$i" disk)")" = "$WANT" ] || cfail "md5 through node $i wrong after the repair"
done
expect_all_alive
echo PASS
