#!/usr/bin/env bash
# Twenty clones of one snapshot share its data until written: each clone writes its
# own pattern at its own 1 MiB offset and reads that back, with the base data
# everywhere else; the snapshot keeps its md5; each clone owns exactly one object
# (vdi list --json own_bytes) and the node gains only the objects the writes need:
# per clone one data object, its inode and the map object it copied on write.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/lifecycle_lib.sh"

SIZE=$((64 * M))
BASE_END=$((32 * M))
CLONES=20
PIECE=$((64 * 1024 + 3))   # unaligned length

start_kelpied clones
kcli vdi create disk $SIZE

PHASE="base data"
qio "$KD_URI_BASE/disk" "write -P 0x5a 0 $BASE_END"
out=$(kcli vdi snapshot disk --tag base)
[ "$out" = "disk@base" ] || fail "vdi snapshot printed '$out', want 'disk@base'"
base_md5=$(export_md5 "$KD_URI_BASE/disk@base")
object_size=$(vdi_field disk@base object_size_bytes)
objects_before=$(node_objects)
echo "objects before the clones: $objects_before"

pattern_of() { printf '0x%02x' $((0x10 + $1)); }
offset_of() { echo $(($1 * M + 4096 + 7)); }   # clone i writes inside object i / 4

PHASE="cloning"
for i in $(seq 0 $((CLONES - 1))); do
  kcli vdi clone disk@base "clone$i" >/dev/null || fail "vdi clone disk@base clone$i failed"
done
check_json "$(kcli vdi list --json)" \
  "len([v for v in doc if v['name'].startswith('clone')]) == $CLONES" \
  "all(not v['read_only'] and v['size_bytes'] == $SIZE for v in doc if v['name'].startswith('clone'))" \
  "len({v['id'] for v in doc}) == len(doc)" ||
  fail "vdi list --json after cloning"

PHASE="writing the clones"
for i in $(seq 0 $((CLONES - 1))); do
  qio "$KD_URI_BASE/clone$i" "write -P $(pattern_of "$i") $(offset_of "$i") $PIECE"
done

for i in $(seq 0 $((CLONES - 1))); do
  PHASE="reading clone$i"
  off=$(offset_of "$i")
  end=$((off + PIECE))
  qio_ro "$KD_URI_BASE/clone$i" "read -P 0x5a 0 $off" "read -P $(pattern_of "$i") $off $PIECE" \
    "read -P 0x5a $end $((BASE_END - end))" "read -P 0 $BASE_END $((SIZE - BASE_END))"
done

PHASE="the snapshot and the head"
[ "$(export_md5 "$KD_URI_BASE/disk@base")" = "$base_md5" ] || fail "disk@base changed"
[ "$(export_md5 "$KD_URI_BASE/disk")" = "$base_md5" ] || fail "disk changed"

PHASE="space accounting"
check_json "$(kcli vdi list --json)" \
  "all(v['own_bytes'] == $object_size for v in doc if v['name'].startswith('clone'))" \
  "all(v['shared_bytes'] == 7 * $object_size for v in doc if v['name'].startswith('clone'))" ||
  fail "each clone should own one object ($object_size bytes) and share the other 7 of the base"
want=$((objects_before + CLONES * 3))
if ! poll_until 20 objects_are "$want"; then
  got=$(node_objects)
  fail "node objects went from $objects_before to $got, want $want" \
    "(per clone: 1 data object + 1 inode + 1 map object copied on write)"
fi

PHASE="after a clean restart"
stop_kelpied
restart_kelpied
[ "$(export_md5 "$KD_URI_BASE/disk@base")" = "$base_md5" ] || fail "disk@base changed"
i=$((CLONES - 1))
off=$(offset_of "$i")
qio_ro "$KD_URI_BASE/clone$i" "read -P 0x5a 0 $off" "read -P $(pattern_of "$i") $off $PIECE" \
  "read -P 0x5a $((off + PIECE)) $((BASE_END - off - PIECE))"
[ "$(node_objects)" = "$want" ] || fail "node objects after restart: $(node_objects), want $want"
kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
