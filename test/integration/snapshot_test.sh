#!/usr/bin/env bash
# A snapshot freezes what a VDI held: pattern A is written, NAME@s1 is taken, pattern
# B overwrites part of NAME (3 MiB inside object 1, and 2000 bytes across the
# object 1 / object 2 boundary at 8 MiB). NAME@s1 still reads A (and has
# the md5 NAME had before the snapshot), NAME reads B where it was written and A
# elsewhere. NAME@s1 is exported read-only: nbdinfo says so, qemu-io cannot open it
# for writing and a write sent anyway gets EPERM.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/lifecycle_lib.sh"

SIZE=$((64 * M))
B_OFFSET=$((4 * M + 512))
B_LENGTH=$((3 * M))
B_END=$((B_OFFSET + B_LENGTH))
B2_OFFSET=$((8 * M - 1000))   # crosses the object 1 / object 2 boundary (4 MiB objects)
B2_LENGTH=2000
B2_END=$((B2_OFFSET + B2_LENGTH))

# The head after pattern B: A around both B regions, zeros past 32 MiB.
check_head() {
  qio_ro "$HEAD" "read -P 0xaa 0 $B_OFFSET" "read -P 0xbb $B_OFFSET $B_LENGTH" \
    "read -P 0xaa $B_END $((B2_OFFSET - B_END))" "read -P 0xbb $B2_OFFSET $B2_LENGTH" \
    "read -P 0xaa $B2_END $((32 * M - B2_END))" "read -P 0 $((32 * M)) $((32 * M))"
}

start_kelpied snapshot
kcli vdi create disk $SIZE
HEAD="$KD_URI_BASE/disk"
SNAP="$KD_URI_BASE/disk@s1"

PHASE="pattern A"
qio "$HEAD" "write -P 0xaa 0 $((32 * M))"
md5_before=$(export_md5 "$HEAD")

PHASE="snapshot"
out=$(kcli vdi snapshot disk --tag s1) || fail "vdi snapshot disk --tag s1 failed"
[ "$out" = "disk@s1" ] || fail "vdi snapshot printed '$out', want 'disk@s1'"
check_json "$(kcli vdi list --json)" \
  '{v["name"]: (v["read_only"], v["tag"]) for v in doc} == {"disk": (False, ""), "disk@s1": (True, "s1")}' \
  '[v["size_bytes"] for v in doc] == [64 << 20] * 2' ||
  fail "vdi list --json after the snapshot"
[ "$(export_md5 "$SNAP")" = "$md5_before" ] || fail "disk@s1 md5 differs from disk before the snapshot"

PHASE="pattern B over the head"
qio "$HEAD" "write -P 0xbb $B_OFFSET $B_LENGTH" "write -P 0xbb $B2_OFFSET $B2_LENGTH"

PHASE="head after B"
check_head
[ "$(export_md5 "$HEAD")" != "$md5_before" ] || fail "disk's md5 did not change after pattern B"

PHASE="snapshot after B"
qio_ro "$SNAP" "read -P 0xaa 0 $((32 * M))" "read -P 0 $((32 * M)) $((32 * M))"
qio_ro "$SNAP" "read -P 0xaa $B_OFFSET $B_LENGTH" "read -P 0xaa $B2_OFFSET $B2_LENGTH"
[ "$(export_md5 "$SNAP")" = "$md5_before" ] || fail "disk@s1 md5 changed after writing to disk"

PHASE="the snapshot is read-only"
check_json "$(nbdinfo --json "$SNAP")" 'doc["exports"][0]["is_read_only"] is True' ||
  fail "nbdinfo --json $SNAP: is_read_only is not true"
check_json "$(nbdinfo --json "$HEAD")" 'doc["exports"][0]["is_read_only"] is False' ||
  fail "nbdinfo --json $HEAD: is_read_only is not false"
status=0
out=$(qemu-io -f raw -c "write -P 0xcc 0 4096" "$SNAP" 2>&1) || status=$?
if [ "$status" = 0 ] && ! grep -qiE 'fail|error|denied|read-only|not permitted' <<<"$out"; then
  fail "qemu-io wrote to the read-only snapshot: $out"
fi
grep -q '^wrote' <<<"$out" && fail "qemu-io reports a write to the snapshot: $out"
# A client that ignores the READ_ONLY flag and sends a write anyway gets EPERM.
"$SYS_PYTHON" - "$SNAP" <<'PY' || fail "a write sent to the snapshot was not refused with EPERM"
import errno, nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(sys.argv[1])
assert h.is_read_only(), "export not flagged read-only"
try:
    h.pwrite(b"\xcc" * 4096, 0)
except nbd.Error as e:
    if e.errnum != errno.EPERM:
        sys.exit(f"write failed with errno {e.errnum} ({e}), want EPERM")
else:
    sys.exit("the write succeeded")
h.shutdown()
PY
[ "$(export_md5 "$SNAP")" = "$md5_before" ] || fail "disk@s1 changed after the refused writes"

PHASE="after a clean restart"
stop_kelpied
restart_kelpied
[ "$(export_md5 "$SNAP")" = "$md5_before" ] || fail "disk@s1 md5 differs after a restart"
check_head
kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
