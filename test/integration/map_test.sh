#!/usr/bin/env bash
# Block status (nbdinfo --map) follows what was written, trimmed and zeroed, at
# object granularity, and the data read back matches: trim and write-zeroes read
# as zeros, and a partial trim leaves the rest of its object intact.
source "$(dirname "$0")/harness.sh"

M=$((1024 * 1024))
SIZE=$((16 * M))   # four 4 MiB objects

start_kelpied map
kcli vdi create disk 16M --object-size 4M
URI="$KD_URI_BASE/disk"

qio() {
  local args=() out
  for c in "$@"; do args+=(-c "$c"); done
  if ! out=$(qemu-io -f raw "${args[@]}" "$URI" 2>&1) || grep -qiE 'fail|error' <<<"$out"; then
    echo "$out" >&2
    fail "qemu-io: ${*}"
  fi
}

# Usage: expect_map WHAT PYTHON_PREDICATE
# Evaluates the predicate over nbdinfo --map --json with adjacent extents of the
# same type merged: `merged` is a list of (offset, length, type) and type_at(OFFSET)
# gives the type covering an offset. Types: 0 data, 2 allocated zeros, 3 hole.
expect_map() {
  local what=$1 predicate=$2 json
  json=$(nbdinfo --map --json "$URI") || fail "nbdinfo --map failed ($what)"
  "$SYS_PYTHON" - "$json" "$SIZE" "$predicate" <<'PY' || fail "block status wrong: $what"
import json, sys
M = 1 << 20
merged = []
for e in json.loads(sys.argv[1]):
    if merged and merged[-1][2] == e["type"] and merged[-1][0] + merged[-1][1] == e["offset"]:
        merged[-1][1] += e["length"]
    else:
        merged.append([e["offset"], e["length"], e["type"]])
merged = [tuple(m) for m in merged]
def type_at(offset):
    return next(t for o, l, t in merged if o <= offset < o + l)
if sum(m[1] for m in merged) != int(sys.argv[2]) or not eval(sys.argv[3]):
    print("got", merged, "want", sys.argv[3], file=sys.stderr)
    sys.exit(1)
PY
}

expect_map "fresh VDI" 'merged == [(0, 16*M, 3)]'
text=$(nbdinfo --map "$URI")
[ "$(wc -l <<<"$text")" = 1 ] && grep -qE '^ *0 +16777216 +3 +hole,zero$' <<<"$text" \
  || fail "nbdinfo --map on a fresh VDI: $text"

qio "write -P 0xa5 $((8 * M + 5)) 1"
expect_map "1 byte written in object 2" 'merged == [(0, 8*M, 3), (8*M, 4*M, 0), (12*M, 4*M, 3)]'
qio "read -P 0 0 $((8 * M + 5))" "read -P 0xa5 $((8 * M + 5)) 1" "read -P 0 $((8 * M + 6)) $((8 * M - 6))"

qio "discard $((8 * M)) $((4 * M))"
expect_map "object 2 discarded" 'merged == [(0, 16*M, 3)]'
qio "read -P 0 0 $SIZE"

# write_zeroes over data, without and with may-unmap: both read back as zeros;
# the unmapped object is reported as reading zeros (hole or allocated zeros) and
# the untouched objects stay holes.
qio "write -P 0x5a 0 $((4 * M))" "write -z 0 $((4 * M))" "read -P 0 0 $((4 * M))"
qio "write -P 0x5b $((4 * M)) $((4 * M))" "write -z -u $((4 * M)) $((4 * M))" "read -P 0 $((4 * M)) $((4 * M))"
expect_map "objects 0 and 1 zeroed (object 1 with may-unmap)" \
  'type_at(4*M) & 2 and type_at(8*M - 1) & 2 and type_at(8*M) == 3 and type_at(16*M - 1) == 3'

# Fast zero (NBD_CMD_FLAG_FAST_ZERO) over a whole object succeeds; over a few
# unaligned bytes it either zeroes them or fails with ENOTSUP leaving the data
# intact (the spec's answer for a zero that would be as slow as a write).
qio "write -P 0x5c $((8 * M)) $((4 * M))" "write -z -n -u $((8 * M)) $((4 * M))" "read -P 0 $((8 * M)) $((4 * M))"
qio "write -P 0x5d $((8 * M)) $((4 * M))"
if out=$(qemu-io -f raw -c "write -z -n $((8 * M + 1000)) 5000" "$URI" 2>&1) && ! grep -qi fail <<<"$out"; then
  qio "read -P 0x5d $((8 * M)) 1000" "read -P 0 $((8 * M + 1000)) 5000" "read -P 0x5d $((8 * M + 6000)) $((4 * M - 6000))"
else
  grep -q "Operation not supported" <<<"$out" || fail "unaligned fast zero failed other than with ENOTSUP: $out"
  qio "read -P 0x5d $((8 * M)) $((4 * M))"
fi

# Partial trims inside object 3: an aligned one through qemu-io and an unaligned one
# through libnbd; the trimmed ranges read as zeros, the rest keeps its data.
qio "write -P 0x77 $((12 * M)) $((4 * M))" "discard $((12 * M + 64 * 1024)) $((128 * 1024))"
"$SYS_PYTHON" -m nbd -u "$URI" -c "h.trim(1000, $((12 * M + 300000)))" || fail "unaligned trim failed"
qio "read -P 0x77 $((12 * M)) $((64 * 1024))" \
    "read -P 0 $((12 * M + 64 * 1024)) $((128 * 1024))" \
    "read -P 0x77 $((12 * M + 192 * 1024)) $((300000 - 192 * 1024))" \
    "read -P 0 $((12 * M + 300000)) 1000" \
    "read -P 0x77 $((12 * M + 301000)) $((4 * M - 301000))"

# Everything survives a restart, block status included.
stop_kelpied
restart_kelpied
qio "read -P 0 0 $((8 * M))" "read -P 0x77 $((12 * M)) $((64 * 1024))" "read -P 0 $((12 * M + 300000)) 1000"
nbdinfo --map --json "$URI" | "$SYS_PYTHON" -c '
import json, sys
M = 1 << 20
ext = json.load(sys.stdin)
assert any(e["offset"] <= 12*M < e["offset"] + e["length"] and e["type"] & 1 == 0 for e in ext), ext
assert all(e["type"] & 1 for e in ext if e["offset"] >= 4*M and e["offset"] + e["length"] <= 8*M), ext
' || fail "block status after restart is wrong"
echo PASS
