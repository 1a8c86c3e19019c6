#!/usr/bin/env bash
# A chain of five snapshots s1..s5, each after a distinct write (every write also
# overwrites a shared first region, so the snapshots differ where they overlap).
# Rolling NAME back to s3 makes it read what s3 does; a write after the rollback
# lands on NAME only; deleting s2 from the middle of the chain changes nothing the
# others read. Every expectation is a local model image written with the same qemu-io
# commands, compared by md5, also after a clean restart.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/lifecycle_lib.sh"

SIZE=$((64 * M))
MODEL="$LT_TMP/model.img"

# Usage: write_both COMMAND...  applies qemu-io COMMANDs to NAME and to the model.
write_both() {
  qio "$KD_URI_BASE/disk" "$@"
  qio "$MODEL" "$@"
}

# Usage: expect_same EXPORT MODEL_FILE
expect_same() {
  local got want
  got=$(export_md5 "$KD_URI_BASE/$1")
  want=$(file_md5 "$2")
  [ "$got" = "$want" ] || fail "$PHASE: $1 has md5 $got, want $want (model $(basename "$2"))"
}

start_kelpied rollback_chain
kcli vdi create disk $SIZE
truncate -s $SIZE "$MODEL"

for i in 1 2 3 4 5; do
  PHASE="write $i and snapshot s$i"
  # A region all writes share, and one per step that crosses an object boundary.
  write_both "write -P 0x${i}1 $((i * 1000)) $((M + i))" \
    "write -P 0x${i}2 $((i * 8 * M - M - 7)) $((2 * M + 11))"
  out=$(kcli vdi snapshot disk --tag "s$i")
  [ "$out" = "disk@s$i" ] || fail "vdi snapshot printed '$out', want 'disk@s$i'"
  cp "$MODEL" "$LT_TMP/s$i.img"
  expect_same "disk@s$i" "$LT_TMP/s$i.img"
done
expect_same disk "$MODEL"

PHASE="rollback to s3"
kcli vdi rollback disk@s3 >/dev/null || fail "vdi rollback disk@s3 failed"
cp "$LT_TMP/s3.img" "$MODEL"
expect_same disk "$MODEL"
check_json "$(kcli vdi list --json)" \
  'sorted(v["name"] for v in doc) == ["disk"] + ["disk@s%d" % i for i in range(1, 6)]' \
  'all(v["read_only"] == ("@" in v["name"]) for v in doc)' ||
  fail "vdi list --json after the rollback"
for i in 1 2 3 4 5; do expect_same "disk@s$i" "$LT_TMP/s$i.img"; done

PHASE="write after the rollback"
write_both "write -P 0xee $((10 * M - 3)) $((M + 5))" "write -P 0xef 17 4096"
expect_same disk "$MODEL"
expect_same disk@s3 "$LT_TMP/s3.img"

PHASE="delete s2 from the middle of the chain"
kcli vdi delete disk@s2 || fail "vdi delete disk@s2 failed"
check_json "$(kcli vdi list --json)" \
  'sorted(v["name"] for v in doc) == ["disk", "disk@s1", "disk@s3", "disk@s4", "disk@s5"]' ||
  fail "vdi list --json after deleting s2"
nbdinfo "$KD_URI_BASE/disk@s2" >/dev/null 2>&1 && fail "disk@s2 is still exported after delete"
check_all() {
  for i in 1 3 4 5; do expect_same "disk@s$i" "$LT_TMP/s$i.img"; done
  expect_same disk "$MODEL"
}
check_all

PHASE="after a clean restart"
stop_kelpied
restart_kelpied
check_all

PHASE="after kill -9"
kill9_kelpied
restart_kelpied
check_all
kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
