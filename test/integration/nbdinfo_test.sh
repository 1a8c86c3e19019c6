#!/usr/bin/env bash
# nbdinfo sees what a client would negotiate: exact size, every transmission flag
# the server promises, the block-size constraints, the export list, and a clean
# error for an export that does not exist.
source "$(dirname "$0")/harness.sh"

start_kelpied nbdinfo
kcli vdi create disk1 1G
kcli vdi create disk2 64M

# Usage: check_json JSON PYTHON_ASSERTIONS... ; `info` is the first export's dict.
check_json() {
  local json=$1; shift
  "$SYS_PYTHON" - "$json" "$@" <<'PY'
import json, sys
doc = json.loads(sys.argv[1])
info = doc["exports"][0] if doc.get("exports") else {}
bad = [expr for expr in sys.argv[2:] if not eval(expr)]
if bad:
    print("nbdinfo output:", json.dumps(doc, indent=1), file=sys.stderr)
    for expr in bad:
        print("assertion failed:", expr, file=sys.stderr)
    sys.exit(1)
PY
}

for uri in "$KD_URI_BASE/disk1" "nbd+unix:///disk1?socket=$KD_SOCK"; do
  json=$(nbdinfo --json "$uri") || fail "nbdinfo --json $uri failed"
  check_json "$json" \
    'info["export-name"] == "disk1"' \
    'info["export-size"] == 1073741824' \
    'doc["structured"] is True' \
    'info["is_read_only"] is False' \
    'info["can_flush"] is True' 'info["can_fua"] is True' \
    'info["can_trim"] is True' 'info["can_zero"] is True' \
    'info["can_fast_zero"] is True' 'info["can_df"] is True' \
    'info["can_cache"] is True' 'info["can_multi_conn"] is True' \
    'info.get("block_size_minimum") == 1' \
    'info.get("block_size_preferred") == 4096' \
    'info.get("block_size_maximum") == 33554432' \
    '"base:allocation" in info.get("contexts", [])' \
    || fail "nbdinfo --json $uri does not show the expected export"
done

size=$(nbdinfo --size "$KD_URI_BASE/disk2") || fail "nbdinfo --size disk2 failed"
[ "$size" = 67108864 ] || fail "disk2 size is $size, want 67108864"

json=$(nbdinfo --list --json "$KD_URI_BASE") || fail "nbdinfo --list failed"
check_json "$json" \
  'sorted(e["export-name"] for e in doc["exports"]) == ["disk1", "disk2"]' \
  '{e["export-name"]: e["export-size"] for e in doc["exports"]} == {"disk1": 1 << 30, "disk2": 64 << 20}' \
  || fail "nbdinfo --list does not list exactly disk1 and disk2"

if out=$(nbdinfo "$KD_URI_BASE/nosuch" 2>&1); then
  fail "nbdinfo on an unknown export succeeded: $out"
fi
grep -q "nbd_opt_go" <<<"$out" || fail "unknown export did not fail in NBD_OPT_GO: $out"

# The daemon is still serving after the refused export.
[ "$(nbdinfo --size "$KD_URI_BASE/disk1")" = 1073741824 ] || fail "disk1 unreadable after unknown-export error"
kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
