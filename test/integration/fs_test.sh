#!/usr/bin/env bash
# A real filesystem on a VDI: nbdfuse turns the export into a file, losetup into a
# block device, and ext4 lives on it. Files written through the filesystem read
# back with the same md5 after a clean restart and after a kill -9 of kelpied, and
# fsck finds the filesystem clean each time. No loop device means failure, not a skip.
source "$(dirname "$0")/harness.sh"

M=$((1024 * 1024))
WORK="$KELPIE_TEST_DIR/fs"
FUSE_DIR="$WORK/fuse"   # nbdfuse mountpoint; the export appears as $FUSE_DIR/disk
FS_DIR="$WORK/mnt"      # where ext4 is mounted
LOOP=""
NBDFUSE_PID=""

# Tears down whatever is attached, innermost first, while kelpied still runs so
# that nothing blocks on a dead server; bounded by timeouts either way.
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
nbdfuse_gone() { ! kill -0 "$NBDFUSE_PID" 2>/dev/null; }
trap 'detach_all; cleanup_kelpied; rm -rf "$WORK"' EXIT

# Usage: attach [-r]  exposes the export as $LOOP (read-only with -r).
attach() {
  local ro=()
  [ "${1:-}" = -r ] && ro=(-r)
  rm -f "$WORK/nbdfuse.pid"
  nbdfuse "${ro[@]}" -P "$WORK/nbdfuse.pid" "$FUSE_DIR/disk" "$KD_URI_BASE/disk" \
    2>>"$WORK/nbdfuse.log" &
  NBDFUSE_PID=$!
  poll_until 20 test -s "$WORK/nbdfuse.pid" || fail "nbdfuse did not come up: $(cat "$WORK/nbdfuse.log")"
  [ "$(stat -c %s "$FUSE_DIR/disk")" = $((256 * M)) ] || fail "nbdfuse file has the wrong size"
  LOOP=$(losetup -f --show "${ro[@]}" "$FUSE_DIR/disk") || fail "no loop device available (losetup -f failed)"
  [ -b "$LOOP" ] || fail "losetup gave $LOOP, not a block device"
}

mount_fs() { mount "$LOOP" "$FS_DIR" || fail "mount $LOOP failed"; }

# Every regular file's md5 and every path's type and size, in a stable order.
snapshot() {
  (cd "$FS_DIR" && find . -path ./lost+found -prune -o -printf '%y %s %p\n' | sort &&
    find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 md5sum)
}

fsck_clean() {
  attach -r
  local out
  out=$(fsck.ext4 -fn "$LOOP" 2>&1) || { echo "$out" >&2; fail "fsck.ext4 -fn found problems ($1)"; }
  detach_all
}

rm -rf "$WORK" && mkdir -p "$FUSE_DIR" "$FS_DIR"
start_kelpied fs
kcli vdi create disk 256M

attach
mkfs.ext4 -q -F "$LOOP" || fail "mkfs.ext4 on $LOOP failed"
mount_fs
head -c $((3 * M)) /dev/urandom >"$FS_DIR/random-3M"
head -c $((5 * M + 123)) /dev/urandom >"$FS_DIR/random-5M-odd"
head -c $((1 * M)) /dev/zero >"$FS_DIR/zeros-1M"
for i in $(seq 1 60); do
  d="$FS_DIR/tree/d$((i % 4))/s$((i % 3))"
  mkdir -p "$d"
  head -c $((i * 997)) /dev/urandom >"$d/file$i"
done
mkdir -p "$FS_DIR/tree/empty"
ln -s ../random-3M "$FS_DIR/tree/link"
snapshot >"$WORK/before"
[ "$(grep -c ' ./' "$WORK/before")" -gt 120 ] || fail "snapshot looks empty: $(head "$WORK/before")"
detach_all
fsck_clean "after first unmount"

stop_kelpied
restart_kelpied
attach
mount_fs
snapshot >"$WORK/after-restart"
diff "$WORK/before" "$WORK/after-restart" >&2 || fail "files differ after a clean restart"

# More data, unmounted (which flushes), then kill -9: all of it is still there.
cp -a "$FS_DIR/tree" "$FS_DIR/tree-copy"
head -c $((7 * M)) /dev/urandom >"$FS_DIR/random-7M"
rm "$FS_DIR/zeros-1M"
snapshot >"$WORK/before-kill"
detach_all
kill9_kelpied
restart_kelpied
fsck_clean "after kill -9"
attach
mount_fs
snapshot >"$WORK/after-kill"
diff "$WORK/before-kill" "$WORK/after-kill" >&2 || fail "files differ after kill -9 and restart"
detach_all
echo PASS
