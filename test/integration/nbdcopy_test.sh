#!/usr/bin/env bash
# nbdcopy with 4 connections (multi-conn) copies 256 MiB of random data into a VDI
# and back out, over TCP and over the unix socket; every copy is byte-identical.
source "$(dirname "$0")/harness.sh"

WORK="$KELPIE_TEST_DIR/nbdcopy"
rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"; cleanup_kelpied' EXIT

head -c $((256 * 1024 * 1024)) /dev/urandom >"$WORK/src.raw"
src_md5=$(md5sum <"$WORK/src.raw" | cut -d' ' -f1)

start_kelpied nbdcopy
kcli vdi create tcpdisk 256M
kcli vdi create unixdisk 256M
kcli vdi create copydisk 256M

md5_of() { md5sum <"$1" | cut -d' ' -f1; }

# Usage: round_trip URI  copies the source in and out again and compares.
round_trip() {
  local uri=$1 out="$WORK/out.raw"
  rm -f "$out"
  nbdcopy --connections=4 "$WORK/src.raw" "$uri" || fail "nbdcopy into $uri failed"
  nbdcopy --connections=4 "$uri" "$out" || fail "nbdcopy out of $uri failed"
  [ "$(md5_of "$out")" = "$src_md5" ] || fail "data copied out of $uri differs from the source"
  # A second read path: one connection streaming to stdout.
  [ "$(nbdcopy "$uri" - | md5sum | cut -d' ' -f1)" = "$src_md5" ] || fail "nbdcopy $uri - differs"
}

round_trip "$KD_URI_BASE/tcpdisk"
round_trip "nbd+unix:///unixdisk?socket=$KD_SOCK"

# Export to export, both ends multi-conn, then check the copy.
nbdcopy --connections=4 "$KD_URI_BASE/tcpdisk" "nbd+unix:///copydisk?socket=$KD_SOCK" \
  || fail "nbdcopy export to export failed"
[ "$(nbdcopy "$KD_URI_BASE/copydisk" - | md5sum | cut -d' ' -f1)" = "$src_md5" ] \
  || fail "export-to-export copy differs from the source"

# And after a clean restart the data is still there.
stop_kelpied
restart_kelpied
for vdi in tcpdisk unixdisk copydisk; do
  [ "$(nbdcopy "$KD_URI_BASE/$vdi" - | md5sum | cut -d' ' -f1)" = "$src_md5" ] \
    || fail "$vdi differs from the source after restart"
done
echo PASS
