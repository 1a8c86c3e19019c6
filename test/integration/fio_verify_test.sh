#!/usr/bin/env bash
# fio's nbd engine writes 256 MiB of mixed-size random blocks at queue depth 16
# with crc32c verify headers and verifies them; after a restart of kelpied a
# verify-only pass of the same job finds every block intact.
source "$(dirname "$0")/harness.sh"

start_kelpied fio
kcli vdi create disk 256M
URI="$KD_URI_BASE/disk"

# The same job both times: with randrepeat (default) the offsets, sizes and
# contents repeat, so --verify_only checks what the first run wrote.
JOB=(--name=verify --ioengine=nbd --uri="$URI" --rw=randwrite --bsrange=4k-64k
     --iodepth=16 --size=256M --verify=crc32c --verify_fatal=1 --randrepeat=1
     --verify_state_save=0
     --output-format=json)

# Usage: run_fio OUTPUT_JSON EXTRA_FIO_FLAGS...  fails unless fio exits 0 with no
# job error and actually moved data.
run_fio() {
  local out=$1; shift
  fio "${JOB[@]}" "$@" >"$out" 2>"$out.err" || { cat "$out" "$out.err" >&2; fail "fio $* failed"; }
  "$SYS_PYTHON" - "$out" <<'PY' || { cat "$out.err" >&2; fail "fio $* reported errors"; }
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
moved = job["write"]["io_bytes"] + job["read"]["io_bytes"]
print(f"fio: error={job['error']} written={job['write']['io_bytes']} read={job['read']['io_bytes']}")
sys.exit(0 if job["error"] == 0 and moved >= 256 << 20 else 1)
PY
}

WORK="$KELPIE_TEST_DIR/fio"
rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"; cleanup_kelpied' EXIT

run_fio "$WORK/write.json" --do_verify=1

stop_kelpied
restart_kelpied
run_fio "$WORK/verify.json" --verify_only=1

# Killed, not stopped: the verified data is still there after a crash restart.
kill9_kelpied
restart_kelpied
run_fio "$WORK/verify2.json" --verify_only=1
echo PASS
