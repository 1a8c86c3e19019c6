#!/usr/bin/env bash
# Deleting VDIs, snapshots and clones reclaims every object nothing references any
# more: after everything is deleted `node info` counts 0 objects and the objects
# directory is empty. Clones keep reading their data while the VDI whose snapshot
# they came from is deleted. A kill -9 right after the delete of a fully written
# 1 GiB VDI (while its objects are being reclaimed) does not leak: after a restart
# the count still reaches 0.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/lifecycle_lib.sh"

object_files() { find "$KD_DATA/objects" -type f 2>/dev/null | wc -l; }

# Usage: expect_reclaimed DEADLINE_S  polls until no object is left.
expect_reclaimed() {
  if ! poll_until "$1" objects_are 0; then
    fail "$PHASE: node info still counts $(node_objects) objects after $1 s" \
      "($(object_files) files in $KD_DATA/objects)"
  fi
  [ "$(object_files)" = 0 ] ||
    fail "$PHASE: node info counts 0 objects but $KD_DATA/objects holds $(object_files) files"
  check_json "$(kcli vdi list --json)" 'doc == []' || fail "$PHASE: VDIs are left"
}

start_kelpied reclaim

# --- round 1: a family with clones of two snapshots, and one with 1 MiB objects ---
PHASE="round 1: building"
kcli vdi create a 64M
qio "$KD_URI_BASE/a" "write -P 0xa1 0 $((20 * M))"
kcli vdi snapshot a --tag s1 >/dev/null
qio "$KD_URI_BASE/a" "write -P 0xa2 $((10 * M)) $((20 * M))"
kcli vdi snapshot a --tag s2 >/dev/null
kcli vdi clone a@s1 c1 >/dev/null
kcli vdi clone a@s2 c2 >/dev/null
qio "$KD_URI_BASE/c1" "write -P 0xc1 $((3 * M)) $((6 * M))"
qio "$KD_URI_BASE/c2" "write -P 0xc2 $((40 * M)) $M"
kcli vdi create b 128M --object-size 1M
qio "$KD_URI_BASE/b" "write -P 0xb1 $((M / 2)) $((30 * M))"
kcli vdi snapshot b --tag x >/dev/null
kcli vdi clone b@x bc >/dev/null
qio "$KD_URI_BASE/bc" "write -P 0xbc 0 $((5 * M))"
qio "$KD_URI_BASE/b" "write -P 0xb2 $((64 * M)) $((8 * M))"
c1_md5=$(export_md5 "$KD_URI_BASE/c1")
c2_md5=$(export_md5 "$KD_URI_BASE/c2")
objects=$(node_objects)
[ "$objects" -gt 0 ] || fail "node info counts no objects after writing"
echo "round 1: $objects objects"

PHASE="round 1: deleting a while its clones live"
kcli vdi delete a   # a, a@s1 and a@s2
check_json "$(kcli vdi list --json)" \
  'sorted(v["name"] for v in doc) == ["b", "b@x", "bc", "c1", "c2"]' ||
  fail "vdi delete a should delete a and its snapshots only"
[ "$(export_md5 "$KD_URI_BASE/c1")" = "$c1_md5" ] || fail "c1 changed when a was deleted"
[ "$(export_md5 "$KD_URI_BASE/c2")" = "$c2_md5" ] || fail "c2 changed when a was deleted"
qio_ro "$KD_URI_BASE/c1" "read -P 0xa1 0 $((3 * M))" "read -P 0xc1 $((3 * M)) $((6 * M))" \
  "read -P 0xa1 $((9 * M)) $((11 * M))" "read -P 0 $((20 * M)) $((44 * M))"

PHASE="round 1: deleting clones, then the snapshot, then the VDI"
for name in c1 c2 bc b@x b; do kcli vdi delete "$name"; done
expect_reclaimed 30

# --- round 2: kill -9 right after deleting a large VDI ------------------------------
PHASE="round 2: writing 1 GiB"
kcli vdi create big 1G
cmds=()
for i in $(seq 0 15); do cmds+=("write -P 0x$(printf '%02x' $((0x30 + i))) $((i * 64 * M)) $((64 * M))"); done
qio "$KD_URI_BASE/big" "${cmds[@]}"
kcli vdi snapshot big --tag s >/dev/null
qio "$KD_URI_BASE/big" "write -P 0xff $((500 * M)) $((8 * M))"
objects=$(node_objects)
[ "$objects" -ge 258 ] || fail "node info counts $objects objects after writing 1 GiB, want >= 258"
echo "round 2: $objects objects"

PHASE="round 2: kill -9 in the middle of the delete"
# The delete runs in the background; kelpied is killed as soon as more than 10
# object files are gone (the snapshot's few and a first batch of the big VDI's), so
# that reclaim is cut short half-way (if it is already over, that is said).
files_before=$(object_files)
kcli vdi delete big >/dev/null 2>&1 &
delete_pid=$!
reclaim_started() { [ "$(object_files)" -lt $((files_before - 10)) ]; }
poll_until 60 reclaim_started || fail "no object file went away within 60 s of the delete"
kill9_kelpied
wait "$delete_pid" || true
left=$(object_files)
echo "killed with $left of $files_before object files left"
[ "$left" -gt 0 ] || echo "note: reclaim finished before the kill landed"
restart_kelpied
PHASE="round 2: after the restart"
expect_reclaimed 60

PHASE="round 2: a clean restart keeps nothing"
stop_kelpied
restart_kelpied
[ "$(node_objects)" = 0 ] || fail "objects reappeared after a restart: $(node_objects)"
kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
