#!/usr/bin/env bash
# qemu-img convert copies a sparse 1 GiB image into a VDI and back out; the image,
# the export and the copy must be identical.
source "$(dirname "$0")/harness.sh"

M=$((1024 * 1024))
WORK="$KELPIE_TEST_DIR/convert"
rm -rf "$WORK" && mkdir -p "$WORK"
SRC="$WORK/src.raw"
OUT="$WORK/out.raw"
trap 'rm -rf "$WORK"; cleanup_kelpied' EXIT

# Random data in a few 64 MiB chunks (one unaligned, one crossing 512 MiB),
# a small unaligned chunk, holes everywhere else.
for seek_mib in 0 300 480; do
  dd if=/dev/urandom of="$SRC" bs=$M count=64 seek=$seek_mib conv=notrunc status=none
done
dd if=/dev/urandom of="$SRC" bs=4096 count=25 seek=$((900 * M + 12345)) \
  oflag=seek_bytes conv=notrunc status=none
dd if=/dev/urandom of="$SRC" bs=$M count=64 seek=$((700 * M + 777)) \
  oflag=seek_bytes conv=notrunc status=none
truncate -s 1G "$SRC"

start_kelpied convert
kcli vdi create disk 1G
URI="$KD_URI_BASE/disk"

qemu-img convert -n -f raw -O raw "$SRC" "$URI" || fail "qemu-img convert into $URI failed"
qemu-img compare -f raw -F raw "$SRC" "$URI" || fail "export differs from the source image"

qemu-img convert -f raw -O raw "$URI" "$OUT" || fail "qemu-img convert out of $URI failed"
qemu-img compare -f raw -F raw "$URI" "$OUT" || fail "copied-out image differs from the export"
qemu-img compare -f raw -F raw "$OUT" "$SRC" || fail "copied-out image differs from the source"

src_md5=$(md5sum <"$SRC" | cut -d' ' -f1)
out_md5=$(md5sum <"$OUT" | cut -d' ' -f1)
[ "$src_md5" = "$out_md5" ] || fail "md5 of source $src_md5 != md5 of copy $out_md5"
[ "$(stat -c %s "$OUT")" = $((1024 * M)) ] || fail "copy is $(stat -c %s "$OUT") bytes, want 1 GiB"

# The export's holes stay holes: an untouched range is reported unallocated.
hole=$(nbdinfo --map --json "$URI" | "$SYS_PYTHON" -c '
import json, sys
M = 1 << 20
ext = json.load(sys.stdin)
print(all(e["type"] & 1 for e in ext
          if e["offset"] < 250 * M and e["offset"] + e["length"] > 100 * M))')
[ "$hole" = True ] || fail "never-written range [100M,250M) is not reported as a hole after convert"

# A second convert over the same export (overwriting data with holes as zeroes).
truncate -s 0 "$SRC" && truncate -s 1G "$SRC"
dd if=/dev/urandom of="$SRC" bs=$M count=8 seek=310 conv=notrunc status=none
qemu-img convert -n -f raw -O raw "$SRC" "$URI" || fail "second qemu-img convert failed"
qemu-img compare -f raw -F raw "$SRC" "$URI" || fail "export differs from the second source (stale data not zeroed?)"
echo PASS
