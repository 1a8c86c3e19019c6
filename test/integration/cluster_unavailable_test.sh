#!/usr/bin/env bash
# DESIGN.md rule 2: an object whose newest copies are only on absent nodes is
# unavailable, not guessed. 4 nodes, copies 2, min-copies 1: P1 over the whole VDI;
# node 1 (B) is killed, recovery runs, P2 over the whole VDI through S (a survivor
# holding the inode and the map); the other two survivors are killed, B comes back
# with P1 copies. Reading through S and through B must never return P1: each 4 KiB
# block reads P2 or fails with EIO at once (and some fail, with a log line naming
# the absent nodes, counted by `node recovery` and `cluster info`). After the two
# come back and recovery is done, the whole VDI reads P2 through every node.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

SIZE=$((64 * 1024 * 1024))
start_cluster 4 2 1
ncli 4 vdi create disk 64M --object-size 1M
qio "$(node_uri 4 disk)" 'write -P 0xaa 0 64M'

# Object files of node I (names only), one a line.
objects_of() {
  local f
  for f in "$CL_DIR/n$1/objects"/*; do
    f=${f##*/}
    if [[ $f =~ ^[0-9a-f]{32}$ ]]; then echo "$f"; fi
  done | sort
}

PHASE="B down, recovery, P2"
kill_node 1
wait_settled 3 30
wait_recovery_done 90
# Old copies go per object once its replicas hold it durably (rule 7): then each
# object is on exactly 2 of 2,3,4.
_placed_twice() {
  local counts
  counts=$(for i in 2 3 4; do objects_of "$i"; done | sort | uniq -c | awk '{print $1}' | sort -u)
  [ "$counts" = 2 ]
}
poll_until 60 _placed_twice || cfail "objects are not on exactly 2 of nodes 2-4 after recovery"
S=""
for i in 2 3 4; do
  meta=$(for j in 2 3 4; do objects_of "$j"; done | grep -E '^.{16}0[12]' | sort -u | wc -l)
  mine=$(objects_of "$i" | grep -cE '^.{16}0[12]' || true)
  if [ "$mine" = "$meta" ]; then S=$i; break; fi
done
[ -n "$S" ] || cfail "no survivor holds every inode and map object"
OTHERS=()
for i in 2 3 4; do [ "$i" = "$S" ] || OTHERS+=("$i"); done
# Objects B holds (P1) that S will not: without rule 2 they would come back as P1.
stale=$(comm -23 <(objects_of 1) <(objects_of "$S") | wc -l)
[ "$stale" -gt 0 ] || cfail "placement gives B no object outside S's set: the test proves nothing"
echo "survivor S = node $S; killing nodes ${OTHERS[*]}; B holds $stale objects S does not"
qio "$(node_uri "$S" disk)" 'write -P 0x55 0 64M'
head -c "$SIZE" /dev/zero | tr '\0' '\125' >"$LT_TMP/p2"
P2=$(file_md5 "$LT_TMP/p2")
[ "$(export_md5 "$(node_uri "$S" disk)")" = "$P2" ] || cfail "P2 does not read back through node $S"

PHASE="only S left, then B back"
kill_node "${OTHERS[0]}"
kill_node "${OTHERS[1]}"
wait_settled 1 30
expect_all_alive
start_node 1
wait_settled 2 30
# Both nodes past listing in the current epoch (reads then answer at once).
_listed() {
  local epoch json
  epoch=$(cluster_epoch) || return 1
  json=$(ncli "$S" node recovery --json 2>/dev/null) || return 1
  check_json "$json" "len(doc) == 2" \
    "all(r['epoch'] == $epoch and r['state'] in ('incomplete', 'done') for r in doc)" 2>/dev/null
}
poll_until 60 _listed || cfail "nodes $S and 1 did not finish listing: $(ncli "$S" node recovery --json)"
# Every 4 KiB block through URI: P2 or EIO, never P1 or anything else; EIO at once.
read_blocks() {
  "$SYS_PYTHON" - "$1" "$SIZE" <<'PY'
import sys, time
import nbd
uri, size = sys.argv[1], int(sys.argv[2])
h = nbd.NBD()
h.connect_uri(uri)
p1, p2 = b"\xaa" * 4096, b"\x55" * 4096
good = eio = 0
slowest = 0.0
for offset in range(0, size, 4096):
    started = time.monotonic()
    try:
        block = h.pread(4096, offset)
    except nbd.Error as e:
        slowest = max(slowest, time.monotonic() - started)
        if e.errno != "EIO":  # libnbd gives the errno's name
            sys.exit(f"block at {offset}: error {e.errno} ({e.string}), not EIO")
        eio += 1
        continue
    slowest = max(slowest, time.monotonic() - started)
    if block == p1:
        sys.exit(f"block at {offset}: P1 came back where P2 was acknowledged")
    if block != p2:
        sys.exit(f"block at {offset}: neither P1 nor P2")
    good += 1
print(f"{uri}: {good} blocks P2, {eio} EIO, slowest {slowest * 1000:.0f} ms")
if eio == 0:
    sys.exit("no block failed: the unavailable objects were served")
if slowest > 5:
    sys.exit(f"a read took {slowest:.1f} s: unavailable objects must fail at once")
PY
}
read_blocks "$(node_uri "$S" disk)" || cfail "reading through node $S"
read_blocks "$(node_uri 1 disk)" || cfail "reading through node 1 (B)"
recovery=$(ncli "$S" node recovery --json)
echo "recovery: $recovery"
check_json "$recovery" "sum(r['unavailable'] for r in doc) > 0" \
  "any(r['state'] == 'incomplete' for r in doc)" || cfail "no node reports unavailable objects"
ncli "$S" node recovery
check_json "$(ncli "$S" cluster info --json)" \
  "any('objects unavailable' in w for w in doc['warnings'])" || cfail "cluster info shows no unavailable objects"
ncli "$S" cluster info | grep 'objects unavailable' || cfail "cluster info (human) shows no unavailable objects"

absent_re="$(node_id "${OTHERS[0]}")|$(node_id "${OTHERS[1]}")"
lines=$(grep -hE "is unavailable in epoch .*($absent_re)" "$CL_DIR/n$S.log" "$CL_DIR/n1.log" || true)
[ -n "$lines" ] || cfail "no log line names the absent nodes"
sed -n 1p <<<"$lines"
# A write to an unavailable object (the logged one; 1 MiB objects) fails too, at
# once, and changes nothing.
hex=$(sed -n 1p <<<"$lines" | grep -oE 'object [0-9a-f]{32} is unavailable' | cut -d' ' -f2)
off=$((16#${hex:24:8} * 1024 * 1024))
started=$SECONDS
written=$(qemu-io -f raw -c "write -P 0x77 $off 4k" "$(node_uri "$S" disk)" 2>&1) || true
grep -qiE 'error|fail' <<<"$written" || cfail "a write at $off (an unavailable block) did not fail: $written"
[ $((SECONDS - started)) -lt 10 ] || cfail "the failing write took $((SECONDS - started)) s"
echo "write at $off: $written"
expect_all_alive

PHASE="holders back"
start_node "${OTHERS[0]}"
start_node "${OTHERS[1]}"
wait_settled 4 30
wait_recovery_done 120
for i in 1 2 3 4; do
  got=$(export_md5 "$(node_uri "$i" disk)")
  [ "$got" = "$P2" ] || cfail "md5 through node $i is $got, want P2's $P2"
done
check_json "$(ncli 1 node recovery --json)" "all(r['unavailable'] == 0 for r in doc)" ||
  cfail "objects still unavailable after their holders returned"
expect_all_alive
echo PASS
