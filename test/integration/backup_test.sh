#!/usr/bin/env bash
# Full and differential backup through the CLI. A 1 GiB VDI full of random data is
# snapshotted (t1), 10 MiB of it change in five places, and it is snapshotted again
# (t2). The full stream of t1 and the differential stream t1..t2 restored in order
# into a new VDI make it read exactly what t2 does. A truncated, a bit-flipped and a
# foreign stream are refused with a clear one-line error before anything is written;
# a differential stream is refused by a VDI that was not restored from its base.
#
# The VDIs use 1 MiB objects: backups work at object granularity, and 10 MiB changed
# in 1 MiB-aligned places (one of them unaligned) make a diff of 11 objects, under 12 MiB.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/lifecycle_lib.sh"
trap 'rm -rf "$LT_TMP"; cleanup_kelpied' EXIT

SIZE=$((1024 * M))
OBJ=1M

start_kelpied backup
kcli vdi create disk $SIZE --object-size $OBJ

PHASE="1 GiB of random data"
random_md5=$(head -c $SIZE /dev/urandom | tee "$LT_TMP/random.img" | md5sum | cut -d' ' -f1)
nbdcopy --connections=4 "$LT_TMP/random.img" "$KD_URI_BASE/disk" || fail "nbdcopy into disk failed"
rm -f "$LT_TMP/random.img"
kcli vdi snapshot disk --tag t1 >/dev/null
t1_md5=$(export_md5 "$KD_URI_BASE/disk@t1")
[ "$t1_md5" = "$random_md5" ] || fail "disk@t1 differs from the random data written"

PHASE="10 MiB of changes"
qio "$KD_URI_BASE/disk" "write -P 0x11 0 $((2 * M))" \
  "write -P 0x22 $((100 * M)) $((2 * M))" "write -P 0x33 $((512 * M)) $((2 * M))" \
  "write -P 0x44 $((700 * M + 4096)) $((2 * M))" "write -P 0x55 $((1022 * M)) $((2 * M))"
kcli vdi snapshot disk --tag t2 >/dev/null
t2_md5=$(export_md5 "$KD_URI_BASE/disk@t2")
[ "$t2_md5" != "$t1_md5" ] || fail "disk@t2 has the md5 of disk@t1"

PHASE="backup"
kcli vdi backup disk@t1 >"$LT_TMP/full" 2>"$LT_TMP/full.err" ||
  fail "vdi backup disk@t1 failed: $(cat "$LT_TMP/full.err")"
kcli vdi backup disk@t2 --from disk@t1 >"$LT_TMP/diff" 2>"$LT_TMP/diff.err" ||
  fail "vdi backup disk@t2 --from disk@t1 failed: $(cat "$LT_TMP/diff.err")"
full_bytes=$(stat -c %s "$LT_TMP/full")
diff_bytes=$(stat -c %s "$LT_TMP/diff")
echo "full stream: $full_bytes bytes, differential: $diff_bytes bytes"
[ "$(head -c 8 "$LT_TMP/full")" = KELPIEBK ] || fail "the full stream does not start with KELPIEBK"
[ "$full_bytes" -ge "$SIZE" ] || fail "the full stream ($full_bytes bytes) is smaller than the data"
[ "$full_bytes" -lt $((SIZE + 2 * M)) ] || fail "the full stream is $full_bytes bytes"
[ "$diff_bytes" -lt $((12 * M)) ] || fail "the differential stream is $diff_bytes bytes, want < 12 MiB"
[ "$diff_bytes" -ge $((10 * M)) ] || fail "the differential stream is $diff_bytes bytes, want >= 10 MiB"

PHASE="restore the full stream"
kcli vdi create new $SIZE --object-size $OBJ
kcli vdi restore new <"$LT_TMP/full" 2>"$LT_TMP/restore.err" ||
  fail "vdi restore new < full failed: $(cat "$LT_TMP/restore.err")"
[ "$(export_md5 "$KD_URI_BASE/new")" = "$t1_md5" ] || fail "new differs from disk@t1 after the full restore"
restored=$(vdi_field new restored_from)
[ -n "$restored" ] || fail "vdi list --json shows no restored_from for new"

PHASE="refused streams"
head -c $((diff_bytes - 1000)) "$LT_TMP/diff" >"$LT_TMP/truncated"
REFUSAL_STDIN="$LT_TMP/truncated" expect_refusal 'backup stream is truncated' vdi restore new
"$SYS_PYTHON" - "$LT_TMP/diff" "$LT_TMP/flipped" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[len(data) // 2] ^= 0x10   # inside an extent's data (extents are 1 MiB)
open(sys.argv[2], "wb").write(data)
PY
REFUSAL_STDIN="$LT_TMP/flipped" \
  expect_refusal 'backup stream is corrupt: checksum mismatch in extent at offset [0-9]+' vdi restore new
head -c $((300 * M)) "$LT_TMP/full" >"$LT_TMP/truncated"
REFUSAL_STDIN="$LT_TMP/truncated" expect_refusal 'backup stream is truncated' vdi restore new
rm -f "$LT_TMP/truncated"
REFUSAL_STDIN=/etc/hostname expect_refusal 'not a Kelpie backup stream' vdi restore new
[ "$(export_md5 "$KD_URI_BASE/new")" = "$t1_md5" ] || fail "a refused stream changed new"
[ "$(vdi_field new restored_from)" = "$restored" ] || fail "a refused stream changed restored_from"

PHASE="restore the differential stream"
kcli vdi restore new <"$LT_TMP/diff" 2>"$LT_TMP/restore.err" ||
  fail "vdi restore new < diff failed: $(cat "$LT_TMP/restore.err")"
[ "$(export_md5 "$KD_URI_BASE/new")" = "$t2_md5" ] || fail "new differs from disk@t2 after the diff"

PHASE="a differential stream needs its base"
kcli vdi create other $SIZE --object-size $OBJ
REFUSAL_STDIN="$LT_TMP/diff" expect_refusal 'restor|base|from|snapshot' vdi restore other
check_json "$(kcli vdi info other --json)" 'doc["allocated_objects"] == 0' \
  'doc["restored_from"] == ""' || fail "a refused diff wrote to other"
# new now holds t2: the t1..t2 diff does not apply to it again.
restored=$(vdi_field new restored_from)
REFUSAL_STDIN="$LT_TMP/diff" expect_refusal 'restor|base|from|snapshot' vdi restore new
[ "$(vdi_field new restored_from)" = "$restored" ] || fail "a refused diff changed restored_from"
[ "$(export_md5 "$KD_URI_BASE/new")" = "$t2_md5" ] || fail "a refused diff changed new"
kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
