#!/usr/bin/env bash
# Issue 3, test 9. ext4 on a VDI of a 3-node cluster (nbdfuse through node 1, a
# loop device, mkfs.ext4). Node 3 is killed -9 in the middle of copying a 48 MiB
# file into the filesystem: the copy finishes, and after unmounting fsck finds the
# filesystem clean through node 2, and every file has its md5 when mounted again
# through node 2. No loop device means failure, not a skip.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
FUSE_DIR="$LT_TMP/fuse"
FS_DIR="$LT_TMP/mnt"
LOOP=""
NBDFUSE_PID=""
CP_PID=""

detach_all() {
  if mountpoint -q "$FS_DIR" 2>/dev/null; then
    timeout 30 umount "$FS_DIR" || umount -l "$FS_DIR" || true
  fi
  if [ -n "$LOOP" ]; then timeout 30 losetup -d "$LOOP" || true; LOOP=""; fi
  if [ -n "$NBDFUSE_PID" ]; then
    poll_until 20 fusermount3 -u "$FUSE_DIR" || fusermount3 -u -z "$FUSE_DIR" || true
    poll_until 20 nbdfuse_gone || kill -9 "$NBDFUSE_PID" 2>/dev/null || true
    wait "$NBDFUSE_PID" 2>/dev/null || true
    NBDFUSE_PID=""
  fi
}
nbdfuse_up() {
  kill -0 "$NBDFUSE_PID" 2>/dev/null || { NBDFUSE_PID=""; cfail "nbdfuse exited: $(cat "$LT_TMP/nbdfuse.log")"; }
  test -s "$LT_TMP/nbdfuse.pid"
}
nbdfuse_gone() { ! kill -0 "$NBDFUSE_PID" 2>/dev/null; }
trap '[ -n "$CP_PID" ] && kill "$CP_PID" 2>/dev/null; detach_all; cluster_cleanup' EXIT

# Usage: attach NODE [-r]  exposes "disk" through NODE as $LOOP.
attach() {
  local node=$1 ro=()
  [ "${2:-}" = -r ] && ro=(-r)
  rm -f "$LT_TMP/nbdfuse.pid"
  nbdfuse "${ro[@]}" -P "$LT_TMP/nbdfuse.pid" "$FUSE_DIR/disk" "$(node_uri "$node" disk)" \
    2>>"$LT_TMP/nbdfuse.log" &
  NBDFUSE_PID=$!
  poll_until 20 nbdfuse_up || cfail "nbdfuse did not come up: $(cat "$LT_TMP/nbdfuse.log")"
  [ "$(stat -c %s "$FUSE_DIR/disk")" = $((256 * M)) ] || cfail "nbdfuse file has the wrong size"
  LOOP=$(losetup -f --show "${ro[@]}" "$FUSE_DIR/disk") || cfail "no loop device available (losetup -f failed)"
  [ -b "$LOOP" ] || cfail "losetup gave $LOOP, not a block device"
}

snapshot() {
  (cd "$FS_DIR" && find . -path ./lost+found -prune -o -printf '%y %s %p\n' | sort &&
    find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 md5sum)
}

mkdir -p "$FUSE_DIR" "$FS_DIR"
start_cluster 3 3
ncli 1 vdi create disk 256M

PHASE="ext4 through node 1"
attach 1
mkfs.ext4 -q -F "$LOOP" || cfail "mkfs.ext4 on $LOOP failed"
mount "$LOOP" "$FS_DIR" || cfail "mount $LOOP failed"
for i in $(seq 1 40); do
  mkdir -p "$FS_DIR/tree/d$((i % 4))"
  head -c $((i * 1999)) /dev/urandom >"$FS_DIR/tree/d$((i % 4))/f$i"
done
head -c $((48 * M)) /dev/urandom >"$LT_TMP/big"
sync -f "$FS_DIR"

PHASE="kill node 3 during a copy"
# The copy is throttled (pv-free: dd with oflag=sync writes 1 MiB at a time) so
# the kill lands in its middle.
dd if="$LT_TMP/big" of="$FS_DIR/big" bs=1M oflag=sync status=none &
CP_PID=$!
copied_some() { kill -0 "$CP_PID" 2>/dev/null && [ "$(stat -c %s "$FS_DIR/big" 2>/dev/null || echo 0)" -ge $((8 * M)) ]; }
poll_until 60 copied_some || cfail "the copy did not reach 8 MiB while running"
kill -0 "$CP_PID" || cfail "the copy ended before the kill"
kill_node 3
wait "$CP_PID" || cfail "the copy into ext4 failed after node 3 was killed"
CP_PID=""
wait_settled 2 10
cp "$LT_TMP/big" "$FS_DIR/big2" || cfail "a copy after the new epoch failed"
snapshot >"$LT_TMP/before"
detach_all

PHASE="fsck and files through node 2"
attach 2 -r
out=$(fsck.ext4 -fn "$LOOP" 2>&1) || { echo "$out" >&2; cfail "fsck.ext4 -fn found problems after the kill"; }
detach_all
attach 2
mount "$LOOP" "$FS_DIR" || cfail "mount through node 2 failed"
snapshot >"$LT_TMP/after"
diff "$LT_TMP/before" "$LT_TMP/after" >&2 || cfail "files differ through node 2 after the kill"
[ "$(md5sum <"$FS_DIR/big" | cut -d' ' -f1)" = "$(file_md5 "$LT_TMP/big")" ] || cfail "big has the wrong md5"
detach_all
expect_all_alive
echo PASS
