#!/usr/bin/env bash
# Issue 3: a full disk. Three nodes, 3 copies, each data directory on its own small
# ext4 filesystem (a loop device). A large write runs the cluster out of space: the
# NBD client gets ENOSPC ("No space left on device"), nothing written before is
# harmed, overwrites of space already held still work, every node stays in the
# cluster, and after space is freed (the VDI holding the new objects is deleted)
# new writes succeed again. Rule 4's full ratio (kelpied --full-ratio 0.9 here):
# every node refuses new objects before its filesystem passes 90%, so no replica
# meets ENOSPC in the middle of a create; the node that is full is named in the
# logs; a create refused by one replica is undone on the others, so `cluster
# check` finds every replica equal without --repair.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

command -v mkfs.ext4 >/dev/null || fail "mkfs.ext4 missing (e2fsprogs)"
M=$((1024 * 1024))
kFsSize=48M

MOUNTS=()
enospc_cleanup() {
  local mnt
  cluster_cleanup
  for mnt in "${MOUNTS[@]:-}"; do
    [ -n "$mnt" ] || continue
    # The daemons were killed just above; a busy mount retries briefly.
    for _ in 1 2 3 4 5 6 7 8 9 10; do umount "$mnt" 2>/dev/null && break; sleep 0.2; done
  done
}
trap enospc_cleanup EXIT

rm -rf "$CL_DIR"
mkdir -p "$CL_DIR"
[ "$KELPIE_MEMBERSHIP" = local ] || start_zookeeper "$CL_DIR/zookeeper" || cfail "could not start ZooKeeper"
for i in 1 2 3; do
  truncate -s "$kFsSize" "$CL_DIR/fs$i.img"
  mkfs.ext4 -q -F "$CL_DIR/fs$i.img" || fail "mkfs.ext4 fs$i failed"
  mkdir -p "$CL_DIR/n$i"
  mount -o loop "$CL_DIR/fs$i.img" "$CL_DIR/n$i" || fail "mount of fs$i failed (loop devices?)"
  MOUNTS+=("$CL_DIR/n$i")
done
kRatio=0.9
for i in 1 2 3; do start_node "$i" --full-ratio "$kRatio"; done
ncli 1 cluster format --copies 3 --min-copies 2 || cfail "cluster format failed"
wait_settled 3
EPOCH=$(cluster_epoch)

PHASE="before the disk fills"
ncli 1 vdi create keep 8M
ncli 1 vdi create big 256M
head -c $((8 * M)) /dev/urandom >"$LT_TMP/keep"
nbdcopy "$LT_TMP/keep" "$(node_uri 1 keep)" || cfail "nbdcopy into keep failed"
WANT=$(file_md5 "$LT_TMP/keep")

PHASE="filling the disk"
# 256 MiB of new objects can not fit 48 MiB filesystems: the write must fail with
# ENOSPC, not EIO, and not hang.
set +e
out=$(timeout 120 qemu-io -f raw -c 'write -P 0x5a 0 200M' "$(node_uri 1 big)" 2>&1)
rc=$?
set -e
echo "qemu-io exit $rc: $(tail -n 2 <<<"$out")"
[ "$rc" -ne 124 ] || cfail "the write into a full cluster hung"
grep -q "No space left on device" <<<"$out" || cfail "the write into a full cluster did not fail with ENOSPC: $out"
# Filled towards the ratio, never past it: a replica admits a create only if it fits
# under the ratio with the creates in flight, and the creates that some replica
# refused are undone on the others (their space is free again), so on filesystems
# this small (one object is ~9% of one) the end is a few objects short of the ratio.
fullest=0
for i in 1 2 3; do
  read -r size avail <<<"$(df --output=size,avail -B1 "$CL_DIR/n$i" | tail -n 1)"
  used_pct=$(((size - avail) * 1000 / size))
  echo "node $i: $used_pct per mille used"
  [ "$used_pct" -le 900 ] || cfail "node $i is $used_pct per mille full, above the full ratio $kRatio"
  [ "$used_pct" -le "$fullest" ] || fullest=$used_pct
done
[ "$fullest" -ge 600 ] || cfail "the fullest node is only $fullest per mille used: the disk never filled"

PHASE="after ENOSPC"
expect_all_alive
[ "$(cluster_epoch)" = "$EPOCH" ] || cfail "the epoch moved from $EPOCH to $(cluster_epoch): a node left on ENOSPC"
for i in 1 2 3; do
  got=$(export_md5 "$(node_uri "$i" keep)")
  [ "$got" = "$WANT" ] || cfail "md5 of keep through node $i is $got, want $WANT"
done
# Space already held is still writable: overwrite the kept VDI in place.
qio "$(node_uri 1 keep)" 'write -P 0x33 1M 64k' 'read -P 0x33 1M 64k'
qio "$(node_uri 2 keep)" 'read -P 0x33 1M 64k'
grep -q "No space left on device\|ENOSPC\|no space" "$CL_DIR"/n*.log || cfail "no node logged the full disk"
grep -q "node [0-9a-f-]* is full: data filesystem" "$CL_DIR"/n*.log || cfail "no log line names the full node"
! grep -E "object [0-9a-f]+: (create|write|install) failed.*(No space|ENOSPC|error 28)" "$CL_DIR"/n*.log ||
  cfail "a replica met ENOSPC in the middle of a create"
status=0
ncli 1 cluster check --json >"$LT_TMP/check.json" || status=$?
[ "$status" = 0 ] && check_json "$(cat "$LT_TMP/check.json")" "doc['issues'] == []" ||
  { cat "$LT_TMP/check.json" >&2; cfail "replicas differ after the refused creates (cluster check exit $status)"; }

PHASE="after freeing space"
ncli 1 vdi delete big || cfail "vdi delete big failed"
ncli 1 vdi create again 16M
qio "$(node_uri 1 again)" 'write -P 0x44 0 12M' 'read -P 0x44 0 12M'
qio "$(node_uri 3 again)" 'read -P 0x44 0 12M'
vdi_check=$(ncli 1 vdi check keep --json) || cfail "vdi check keep found issues: $vdi_check"
echo "PASS: ENOSPC reached the client; kept data intact on every node; space reusable after delete"
