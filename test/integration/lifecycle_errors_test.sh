#!/usr/bin/env bash
# Every refused lifecycle command says why in one line "kelpie: ..." on stderr, exits
# non-zero, writes nothing to stdout, and changes nothing: `vdi list --json` and the
# node's object count are the same before and after all of them.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/lifecycle_lib.sh"

start_kelpied lifecycle_errors
PHASE="setup"
kcli vdi create disk 64M
qio "$KD_URI_BASE/disk" "write -P 0x61 0 $((5 * M))"
kcli vdi snapshot disk --tag t1 >/dev/null
kcli vdi clone disk@t1 copy >/dev/null
kcli vdi create other 128M
kcli vdi backup disk@t1 >"$LT_TMP/disk-t1.full" 2>/dev/null || fail "vdi backup disk@t1 failed"
disk_md5=$(export_md5 "$KD_URI_BASE/disk")
other_md5=$(export_md5 "$KD_URI_BASE/other")
before=$(list_snapshot)
objects_before=$(node_objects)

LONG=$(printf 'n%.0s' $(seq 300))

PHASE="missing VDIs and snapshots"
expect_refusal "'nosuch'.*not found|not found.*'nosuch'" vdi snapshot nosuch --tag x
expect_refusal "not found" vdi clone nosuch@t1 fresh
expect_refusal "not found" vdi clone disk@nosuch fresh
expect_refusal "not found" vdi rollback disk@nosuch
expect_refusal "not found" vdi delete disk@nosuch
expect_refusal "not found" vdi backup disk@nosuch

PHASE="not a snapshot"
expect_refusal "snapshot" vdi clone disk fresh
expect_refusal "snapshot" vdi rollback disk

PHASE="restore onto a VDI of another size"
REFUSAL_STDIN="$LT_TMP/disk-t1.full" expect_refusal "size|[0-9]+ bytes" vdi restore other

PHASE="an over-long name"
expect_refusal "name|long" vdi create "$LONG" 64M
expect_refusal "name|long" vdi clone disk@t1 "$LONG"
expect_refusal "tag|name|long" vdi snapshot disk --tag "$LONG"

PHASE="names with '@' or '/'"
for bad in 'a@b' 'a/b' '@' '/'; do
  expect_refusal "name" vdi create "$bad" 64M
  expect_refusal "name" vdi clone disk@t1 "$bad"
done
for bad in 'a@b' 'a/b'; do
  expect_refusal "tag|name" vdi snapshot disk --tag "$bad"
done

PHASE="duplicates"
expect_refusal "exists" vdi snapshot disk --tag t1
expect_refusal "exists" vdi clone disk@t1 other
expect_refusal "exists" vdi clone disk@t1 copy

PHASE="nothing changed"
after=$(list_snapshot)
if [ "$after" != "$before" ]; then
  echo "before: $before" >&2
  echo "after:  $after" >&2
  fail "vdi list --json changed"
fi
[ "$(node_objects)" = "$objects_before" ] ||
  fail "node objects went from $objects_before to $(node_objects)"
[ "$(export_md5 "$KD_URI_BASE/disk")" = "$disk_md5" ] || fail "disk changed"
[ "$(export_md5 "$KD_URI_BASE/other")" = "$other_md5" ] || fail "other changed"
kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
