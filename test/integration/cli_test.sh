#!/usr/bin/env bash
# The kelpie CLI against a real kelpied: every documented error is exactly one
# line "kelpie: <message>" on stderr with exit status 1 (2 for usage errors) and
# nothing on stdout; the success paths do what a user would check (JSON fields,
# sizes, bytes written through stdin read back with the same md5, also through an
# independent NBD client).
source "$(dirname "$0")/harness.sh"

T="$KELPIE_TEST_DIR/cli.files"
rm -rf "$T"
mkdir -p "$T"

# expect_error STATUS MESSAGE KELPIE_ARGS...   (stdin: $STDIN, default /dev/null)
expect_error() {
  local want_status=$1 want_message=$2; shift 2
  local status=0
  "$KELPIE" "$@" >"$T/stdout" 2>"$T/stderr" <"${STDIN:-/dev/null}" || status=$?
  local stderr
  stderr=$(cat "$T/stderr")
  [ "$status" = "$want_status" ] ||
    fail "kelpie $*: exit status $status, want $want_status (stderr: $stderr)"
  [ "$stderr" = "kelpie: $want_message" ] ||
    fail "kelpie $*: stderr is '$stderr', want 'kelpie: $want_message'"
  [ "$(wc -l <"$T/stderr")" = 1 ] || fail "kelpie $*: stderr is not exactly one line"
  [ ! -s "$T/stdout" ] || fail "kelpie $*: wrote to stdout on error: $(head -c 200 "$T/stdout")"
}

# check_json JSON PYTHON_ASSERTIONS... ; the document is `doc`.
check_json() {
  local json=$1; shift
  "$SYS_PYTHON" - "$json" "$@" <<'PY'
import json, sys, time
doc = json.loads(sys.argv[1])
bad = [expr for expr in sys.argv[2:] if not eval(expr)]
if bad:
    print("document:", json.dumps(doc, indent=1), file=sys.stderr)
    for expr in bad:
        print("assertion failed:", expr, file=sys.stderr)
    sys.exit(1)
PY
}

# md5 of stdin.
md5() { md5sum | cut -d' ' -f1; }

start_kelpied cli
A=(--addr "$KD_ADMIN")
MiB=1048576

# --- usage errors: exit 2 ------------------------------------------------------------
expect_error 2 "missing command (try 'kelpie --help')" "${A[@]}"
expect_error 2 "unknown command 'frob' (try 'kelpie --help')" "${A[@]}" frob
expect_error 2 "unknown command 'vdi frob' (try 'kelpie --help')" "${A[@]}" vdi frob
expect_error 2 "missing subcommand after 'vdi' (try 'kelpie --help')" "${A[@]}" vdi
expect_error 2 "missing arguments; usage: kelpie vdi create NAME SIZE [--object-size 4M]" \
  "${A[@]}" vdi create
expect_error 2 "missing arguments; usage: kelpie vdi create NAME SIZE [--object-size 4M]" \
  "${A[@]}" vdi create disk
expect_error 2 "missing arguments; usage: kelpie vdi info NAME[@TAG] [--json]" "${A[@]}" vdi info
expect_error 2 "missing arguments; usage: kelpie vdi delete NAME[@TAG]" "${A[@]}" vdi delete
expect_error 2 "missing arguments; usage: kelpie vdi resize NAME SIZE" "${A[@]}" vdi resize disk
expect_error 2 "missing arguments; usage: kelpie vdi read NAME[@TAG] [OFFSET [LEN]]" "${A[@]}" vdi read
expect_error 2 "missing arguments; usage: kelpie vdi write NAME [OFFSET]" "${A[@]}" vdi write
expect_error 2 "too many arguments; usage: kelpie vdi delete NAME[@TAG]" "${A[@]}" vdi delete a b
expect_error 2 "unknown option '--bogus' (try 'kelpie --help')" "${A[@]}" vdi list --bogus
expect_error 2 "option --addr needs a value" vdi list --addr
# Lifecycle commands.
expect_error 2 "missing arguments; usage: kelpie vdi snapshot NAME [--tag TAG]" "${A[@]}" vdi snapshot
expect_error 2 "too many arguments; usage: kelpie vdi snapshot NAME [--tag TAG]" \
  "${A[@]}" vdi snapshot disk tag
expect_error 2 "option --tag needs a value" "${A[@]}" vdi snapshot disk --tag
expect_error 2 "missing arguments; usage: kelpie vdi clone NAME@TAG NEWNAME" "${A[@]}" vdi clone
expect_error 2 "missing arguments; usage: kelpie vdi clone NAME@TAG NEWNAME" \
  "${A[@]}" vdi clone disk@a
expect_error 2 "too many arguments; usage: kelpie vdi clone NAME@TAG NEWNAME" \
  "${A[@]}" vdi clone disk@a b c
expect_error 2 "missing arguments; usage: kelpie vdi rollback NAME@TAG" "${A[@]}" vdi rollback
expect_error 2 "too many arguments; usage: kelpie vdi tree [NAME] [--json]" "${A[@]}" vdi tree a b
expect_error 2 "missing arguments; usage: kelpie vdi backup NAME@TAG [--from NAME@OLD] > FILE" \
  "${A[@]}" vdi backup
expect_error 2 "option --from needs a value" "${A[@]}" vdi backup disk@b --from
expect_error 2 "missing arguments; usage: kelpie vdi restore NAME < FILE" "${A[@]}" vdi restore
expect_error 2 "too many arguments; usage: kelpie vdi restore NAME < FILE" \
  "${A[@]}" vdi restore a b
expect_error 2 "option --tag does not apply; usage: kelpie vdi list [--json]" \
  "${A[@]}" vdi list --tag x
expect_error 2 "option --from does not apply; usage: kelpie vdi snapshot NAME [--tag TAG]" \
  "${A[@]}" vdi snapshot disk --from disk@a
expect_error 2 "option --json does not apply; usage: kelpie vdi clone NAME@TAG NEWNAME" \
  "${A[@]}" vdi clone disk@a c --json
for command in "snapshot NAME [--tag TAG]" "clone NAME@TAG NEWNAME" "rollback NAME@TAG" \
  "tree [NAME] [--json]" "backup NAME@TAG [--from NAME@OLD] > FILE" "restore NAME < FILE"; do
  "$KELPIE" --help | grep -qF "vdi $command" || fail "kelpie --help does not list vdi $command"
done
"$KELPIE" --help | grep -q "vdi create NAME SIZE" || fail "kelpie --help does not list vdi create"

# --- value errors, checked by the CLI: exit 1 ----------------------------------------
expect_error 1 "invalid size '10X' (expected a number with optional K/M/G/T suffix)" \
  "${A[@]}" vdi create disk 10X
expect_error 1 "size must be a multiple of 512 bytes" "${A[@]}" vdi create disk 1000
expect_error 1 "object size must be a power of two from 1M to 64M" \
  "${A[@]}" vdi create disk 64M --object-size 3M
expect_error 1 "object size must be a power of two from 1M to 64M" \
  "${A[@]}" vdi create disk 64M --object-size 128M

# Snapshot names are checked before the daemon is asked (it is not even reachable here).
N=(--addr "127.0.0.1:$(free_port)")
expect_error 1 "'disk' is not a snapshot (expected NAME@TAG)" "${N[@]}" vdi clone disk copy
expect_error 1 "'disk@' is not a snapshot (expected NAME@TAG)" "${N[@]}" vdi clone disk@ copy
expect_error 1 "'@a' is not a snapshot (expected NAME@TAG)" "${N[@]}" vdi clone @a copy
expect_error 1 "'disk' is not a snapshot (expected NAME@TAG)" "${N[@]}" vdi rollback disk
expect_error 1 "'disk' is not a snapshot (expected NAME@TAG)" "${N[@]}" vdi backup disk
expect_error 1 "'disk' is not a snapshot (expected NAME@TAG)" \
  "${N[@]}" vdi backup disk@b --from disk
expect_error 1 "'disk@a' is a snapshot; restore into a writable VDI" "${N[@]}" vdi restore disk@a

# --- daemon not reachable --------------------------------------------------------------
closed_port=$(free_port)
expect_error 1 "cannot reach kelpied at 127.0.0.1:$closed_port: Connection refused" \
  --addr "127.0.0.1:$closed_port" vdi list
KELPIE_ADDR="127.0.0.1:$closed_port" expect_error 1 \
  "cannot reach kelpied at 127.0.0.1:$closed_port: Connection refused" node info
# --addr wins over $KELPIE_ADDR.
KELPIE_ADDR="127.0.0.1:$closed_port" "$KELPIE" "${A[@]}" node info >/dev/null ||
  fail "--addr did not override KELPIE_ADDR"
KELPIE_ADDR="$KD_ADMIN" "$KELPIE" node info >/dev/null || fail "KELPIE_ADDR was not used"

# --- create, list, info ----------------------------------------------------------------
kcli vdi list >"$T/list"
[ "$(head -1 "$T/list" | tr -s ' ')" = "NAME ID SIZE OBJECT SIZE USED SHARED ATTACHED" ] ||
  fail "vdi list header: $(head -1 "$T/list")"
[ "$(wc -l <"$T/list")" = 1 ] || fail "vdi list on an empty node shows rows: $(cat "$T/list")"
check_json "$(kcli vdi list --json)" 'doc == []' || fail "vdi list --json on an empty node"
[ -z "$(kcli vdi tree)" ] || fail "vdi tree on an empty node: $(kcli vdi tree)"
check_json "$(kcli vdi tree --json)" 'doc == []' || fail "vdi tree --json on an empty node"

kcli vdi create disk 64M
kcli vdi create small 1M --object-size 1M
expect_error 1 "VDI 'disk' already exists" "${A[@]}" vdi create disk 64M
expect_error 1 "VDI 'nosuch' not found" "${A[@]}" vdi info nosuch
expect_error 1 "VDI 'nosuch' not found" "${A[@]}" vdi info nosuch --json
expect_error 1 "VDI 'nosuch' not found" "${A[@]}" vdi delete nosuch
expect_error 1 "VDI 'nosuch' not found" "${A[@]}" vdi resize nosuch 1M
expect_error 1 "VDI 'nosuch' not found" "${A[@]}" vdi read nosuch
expect_error 1 "size must be a multiple of 512 bytes" "${A[@]}" vdi resize disk 1000
expect_error 1 "VDI 'nosuch' not found" "${A[@]}" vdi tree nosuch
expect_error 1 "VDI 'nosuch' not found" "${A[@]}" vdi tree nosuch --json
# restore verifies the whole stream before it looks at the VDI.
expect_error 1 "backup stream is empty" "${A[@]}" vdi restore disk
head -c 100000 /dev/urandom >"$T/garbage.bin"
STDIN="$T/garbage.bin" expect_error 1 "not a Kelpie backup stream" "${A[@]}" vdi restore nosuch
TMPDIR="$T/no-such-dir" STDIN="$T/garbage.bin" expect_error 1 \
  "cannot create a temporary file in $T/no-such-dir: No such file or directory" \
  "${A[@]}" vdi restore disk

now=$(date +%s)
check_json "$(kcli vdi info disk --json)" \
  'sorted(doc) == sorted(["name", "id", "size_bytes", "object_size_bytes", "allocated_objects", "used_bytes", "created_unix_s", "attached_connections", "tag", "read_only", "parent_id", "family_id", "own_bytes", "shared_bytes", "restored_from", "object_count"])' \
  'doc["tag"] == "" and doc["read_only"] is False and doc["restored_from"] == ""' \
  'doc["own_bytes"] == 0 and doc["shared_bytes"] == 0 and doc["object_count"] == 16' \
  'doc["name"] == "disk"' 'doc["size_bytes"] == 64 << 20' \
  'doc["object_size_bytes"] == 4 << 20' 'doc["allocated_objects"] == 0' \
  'doc["used_bytes"] == 0' 'doc["attached_connections"] == 0' \
  "abs(doc['created_unix_s'] - $now) < 600" 'isinstance(doc["id"], int)' \
  || fail "vdi info disk --json"
check_json "$(kcli vdi list --json)" \
  '[v["name"] for v in sorted(doc, key=lambda v: v["name"])] == ["disk", "small"]' \
  '{v["name"]: (v["size_bytes"], v["object_size_bytes"]) for v in doc} == {"disk": (64 << 20, 4 << 20), "small": (1 << 20, 1 << 20)}' \
  'len({v["id"] for v in doc}) == 2' \
  || fail "vdi list --json"
kcli vdi list | grep -Eq '^disk +[0-9]+ +64 MiB +4 MiB +0 B +0 B +0$' ||
  fail "vdi list has no row for disk: $(kcli vdi list)"
kcli vdi info disk | grep -Eq '^size: +64 MiB \(67108864 bytes\)$' ||
  fail "vdi info disk: $(kcli vdi info disk)"
check_json "$(kcli node info --json)" \
  'sorted(doc) == sorted(["version", "node_uuid", "data_dir", "nbd_tcp", "nbd_unix", "admin_address", "threads", "format_version", "capacity_bytes", "free_bytes", "objects", "vdi_count", "nbd_connections", "uptime_s"])' \
  "doc['nbd_tcp'].endswith(':$KD_NBD_PORT')" "doc['nbd_unix'] == '$KD_SOCK'" \
  'doc["vdi_count"] == 2' 'doc["threads"] >= 1' \
  'doc["capacity_bytes"] >= doc["free_bytes"] > 0' \
  || fail "node info --json"
kcli node info | grep -Eq '^vdis: +2$' || fail "node info: $(kcli node info)"

# --- resize ------------------------------------------------------------------------------
kcli vdi resize disk 128M
check_json "$(kcli vdi info disk --json)" 'doc["size_bytes"] == 128 << 20' || fail "grow"
kcli vdi resize disk 64M
check_json "$(kcli vdi info disk --json)" 'doc["size_bytes"] == 64 << 20' || fail "shrink"

# --- write from stdin, read back -------------------------------------------------------
# 5 MiB + 123 bytes at an unaligned offset: crosses the 4 MiB chunks and objects.
offset=$((MiB + 7))
head -c $((5 * MiB + 123)) /dev/urandom >"$T/in.bin"
kcli vdi write disk "$offset" <"$T/in.bin"
want=$(md5 <"$T/in.bin")
got=$(kcli vdi read disk "$offset" $((5 * MiB + 123)) | md5)
[ "$got" = "$want" ] || fail "read back md5 $got, want $want"
# The whole disk equals zeros with the data inserted, also seen by nbdcopy.
"$SYS_PYTHON" - "$T/in.bin" "$T/expect.bin" "$offset" $((64 * MiB)) <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
offset, size = int(sys.argv[3]), int(sys.argv[4])
image = bytearray(size)
image[offset:offset + len(data)] = data
open(sys.argv[2], "wb").write(image)
PY
want=$(md5 <"$T/expect.bin")
[ "$(kcli vdi read disk | md5)" = "$want" ] || fail "whole-disk read differs from expectation"
[ "$(nbdcopy "$KD_URI_BASE/disk" - | md5)" = "$want" ] || fail "nbdcopy sees other bytes"
check_json "$(kcli vdi info disk --json)" \
  'doc["allocated_objects"] >= 2' \
  'doc["used_bytes"] == doc["allocated_objects"] * doc["object_size_bytes"]' \
  || fail "vdi info after write"
# The tail of the disk and a read of zero bytes at the very end.
[ "$(kcli vdi read disk $((64 * MiB - 512)) | wc -c)" = 512 ] || fail "tail read length"
[ "$(kcli vdi read disk $((64 * MiB)) | wc -c)" = 0 ] || fail "read at the end"
expect_error 1 "offset 67109376 is past the end of VDI 'disk' (67108864 bytes)" \
  "${A[@]}" vdi read disk $((64 * MiB + 512))
expect_error 1 "read of 1024 bytes at offset 67108352 goes past the end of VDI 'disk' (67108864 bytes)" \
  "${A[@]}" vdi read disk $((64 * MiB - 512)) 1024
printf 'tail' >"$T/tail.bin"
expect_error 1 "offset 67109376 is past the end of VDI 'disk' (67108864 bytes)" \
  "${A[@]}" vdi write disk $((64 * MiB + 512))
status=0
"$KELPIE" "${A[@]}" vdi write disk $((64 * MiB - 2)) <"$T/tail.bin" 2>"$T/stderr" || status=$?
[ "$status" = 1 ] || fail "write past the end: exit status $status"
grep -Eq "^kelpie: input goes past the end of VDI 'disk' \(67108864 bytes" "$T/stderr" ||
  fail "write past the end: $(cat "$T/stderr")"

# --- delete ----------------------------------------------------------------------------
kcli vdi delete small
expect_error 1 "VDI 'small' not found" "${A[@]}" vdi info small
check_json "$(kcli vdi list --json)" '[v["name"] for v in doc] == ["disk"]' || fail "list after delete"
check_json "$(kcli node info --json)" 'doc["vdi_count"] == 1' || fail "vdi_count after delete"
kcli vdi delete disk
check_json "$(kcli vdi list --json)" 'doc == []' || fail "list after deleting everything"

kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
