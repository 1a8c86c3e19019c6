#!/usr/bin/env bash
# VDIs with the smallest (1 MiB) and largest (64 MiB) object sizes: unaligned
# qemu-io pattern writes that cross object boundaries read back with zeros around
# them, allocation follows the object size, and 256 MiB of random data make an
# nbdcopy round trip with the same md5, also after a restart.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/lifecycle_lib.sh"
trap 'rm -rf "$LT_TMP"; cleanup_kelpied' EXIT

SIZE=$((256 * M))

head -c $SIZE /dev/urandom >"$LT_TMP/random.img"
random_md5=$(file_md5 "$LT_TMP/random.img")

start_kelpied object_size

# Usage: check_object_size OBJECT_BYTES  patterns, allocation and a round trip on
# VDI "os<OBJECT_BYTES>".
check_object_size() {
  local obj=$1 name="os$1"
  local uri="$KD_URI_BASE/$name"
  PHASE="object size $obj: create"
  kcli vdi create "$name" $SIZE --object-size "$obj"
  check_json "$(kcli vdi info "$name" --json)" "doc['object_size_bytes'] == $obj" \
    'doc["allocated_objects"] == 0' || fail "vdi info $name"

  # "PATTERN OFFSET LENGTH", increasing and non-overlapping; lengths and offsets are
  # unaligned and the regions cross the first, second and last object boundaries.
  local regions=(
    "0x11 1 511"
    "0x22 $((obj - 700)) 1400"
    "0x33 $((2 * obj - 4097)) $((obj / 2 + 8193))"
    "0x44 $((SIZE - obj - 3)) 10"
    "0x55 $((SIZE - 513)) 513"
  )
  local writes=() reads=() pos=0 pat off len
  for r in "${regions[@]}"; do
    read -r pat off len <<<"$r"
    writes+=("write -P $pat $off $len")
    [ "$off" -gt "$pos" ] && reads+=("read -P 0 $pos $((off - pos))")
    reads+=("read -P $pat $off $len")
    pos=$((off + len))
  done
  PHASE="object size $obj: patterns"
  qio "$uri" "${writes[@]}"
  qio_ro "$uri" "${reads[@]}"
  # Objects touched: 0, 1, 2 and the last two (with 64 MiB objects: all four).
  local want_objects=5
  [ "$obj" = $((64 * M)) ] && want_objects=4
  check_json "$(kcli vdi info "$name" --json)" "doc['allocated_objects'] == $want_objects" \
    "doc['used_bytes'] == $want_objects * $obj" ||
    fail "$PHASE: allocation should be $want_objects objects of $obj bytes"

  PHASE="object size $obj: nbdcopy round trip"
  nbdcopy --connections=4 "$LT_TMP/random.img" "$uri" || fail "$PHASE: nbdcopy into $uri failed"
  [ "$(export_md5 "$uri")" = "$random_md5" ] || fail "$PHASE: md5 differs from the source"
  qio "$uri" "${writes[@]}"   # the patterns again, over the random data
  qio_ro "$uri" "${writes[@]/write/read}"
  md5_after[$obj]=$(export_md5 "$uri")
  [ "${md5_after[$obj]}" != "$random_md5" ] || fail "$PHASE: the patterns did not change the md5"
}

declare -A md5_after

check_object_size $M
check_object_size $((64 * M))

PHASE="after a clean restart"
stop_kelpied
restart_kelpied
for obj in $M $((64 * M)); do
  [ "$(export_md5 "$KD_URI_BASE/os$obj")" = "${md5_after[$obj]}" ] ||
    fail "os$obj differs after a restart"
done
kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
