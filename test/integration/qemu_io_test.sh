#!/usr/bin/env bash
# qemu-io writes patterns at unaligned offsets (one spans an object boundary) and
# reads them back, with never-written ranges reading as zeros; the data must
# survive a clean restart and a kill -9, including a write that was acknowledged
# but never flushed.
source "$(dirname "$0")/harness.sh"

M=$((1024 * 1024))
SIZE=$((64 * M))

# Usage: qio URI COMMAND...  runs each COMMAND in one qemu-io session; fails on
# any error or pattern mismatch.
qio() {
  local uri=$1; shift
  local args=() out
  for c in "$@"; do args+=(-c "$c"); done
  if ! out=$(qemu-io -f raw "${args[@]}" "$uri" 2>&1) || grep -qiE 'fail|error' <<<"$out"; then
    echo "$out" >&2
    fail "$PHASE: qemu-io on $uri: ${*}"
  fi
}

# Each entry: "PATTERN OFFSET LENGTH", in increasing offset order, non-overlapping.
REGIONS=(
  "0x11 4095 1"                          # one byte at the end of the first 4 KiB block
  "0x22 $((4 * M - 100)) 513"            # spans the object 0 / object 1 boundary
  "0x33 $((7 * M + 3)) $M"               # 1 MiB, unaligned, spans objects 1 and 2
)

# Reads every region back with its pattern and every gap between regions as zeros.
check_all() {
  local uri=$1 cmds=() pos=0 pat off len
  for r in "${REGIONS[@]}"; do
    read -r pat off len <<<"$r"
    [ "$off" -gt "$pos" ] && cmds+=("read -P 0 $pos $((off - pos))")
    cmds+=("read -P $pat $off $len")
    pos=$((off + len))
  done
  [ "$pos" -lt "$SIZE" ] && cmds+=("read -P 0 $pos $((SIZE - pos))")
  qio "$uri" "${cmds[@]}"
}

PHASE="fresh VDI"
start_kelpied qemu_io
kcli vdi create disk $SIZE
URI="$KD_URI_BASE/disk"
UNIX_URI="nbd+unix:///disk?socket=$KD_SOCK"

qio "$URI" "read -P 0 0 $SIZE"   # a fresh VDI reads as zeros everywhere

write_cmds=()
for r in "${REGIONS[@]}"; do
  read -r pat off len <<<"$r"
  write_cmds+=("write -P $pat $off $len")
done
PHASE="after writes"
qio "$URI" "${write_cmds[@]}"
check_all "$URI"
check_all "$UNIX_URI"

# A FUA write over the unix socket, unaligned at both ends.
REGIONS+=("0x44 $((20 * M + 7)) $((100 * 1024 + 5))")
qio "$UNIX_URI" "write -f -P 0x44 $((20 * M + 7)) $((100 * 1024 + 5))"
check_all "$URI"

stop_kelpied
restart_kelpied
PHASE="after a clean restart"
check_all "$URI"

# Written and flushed (qemu-io flushes on close), then kill -9.
REGIONS+=("0x55 $((30 * M - 1)) 4099")
qio "$URI" "write -P 0x55 $((30 * M - 1)) 4099"
kill9_kelpied
restart_kelpied
PHASE="after kill -9 following flushed writes"
check_all "$URI"

# Acknowledged but never flushed: the client writes, gets the reply, and kills
# the daemon itself before it disconnects, so no flush or disconnect reaches it.
REGIONS+=("0x66 $((40 * M + 1)) 70000")
"$SYS_PYTHON" - "$URI" "$KD_PID" <<'PY' || fail "unflushed write through libnbd failed"
import nbd, os, signal, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x66" * 70000, 40 * 1024 * 1024 + 1)   # returns after the server's reply
os.kill(int(sys.argv[2]), signal.SIGKILL)
PY
kill9_kelpied
restart_kelpied
PHASE="after kill -9 following an acknowledged, unflushed write"
check_all "$URI"
echo PASS
