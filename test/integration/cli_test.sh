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

# kelpied's own usage errors: exit 2, the message first, then the usage.
for bad in abc -1 1001 ""; do
  status=0
  "$KELPIED" --data "$T/never" --poll-us "$bad" >"$T/stdout" 2>"$T/stderr" || status=$?
  [ "$status" = 2 ] || fail "kelpied --poll-us '$bad': exit status $status, want 2"
  [ "$(head -n1 "$T/stderr")" = "kelpied: --poll-us must be a number of microseconds from 0 to 1000 (0: never poll)" ] ||
    fail "kelpied --poll-us '$bad': stderr starts '$(head -n1 "$T/stderr")'"
  [ ! -e "$T/never" ] || fail "kelpied --poll-us '$bad' created its data directory"
done

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

# --- cluster commands ------------------------------------------------------------------
# Usage errors are found without the daemon (N: nothing listens there).
expect_error 2 "--copies must be from 1 to 8 (got '0')" "${N[@]}" cluster format --copies 0
expect_error 2 "--copies must be from 1 to 8 (got '9')" "${N[@]}" cluster format --copies 9
expect_error 2 "--copies must be from 1 to 8 (got 'x')" "${N[@]}" cluster format --copies x
expect_error 2 "--min-copies must be from 1 to the number of copies, 3 (got '4')" \
  "${N[@]}" cluster format --min-copies 4 --copies 3
expect_error 2 "--min-copies must be from 1 to the number of copies, 1 (got '2')" \
  "${N[@]}" cluster format --copies 1 --min-copies 2
expect_error 2 "--min-copies must be from 1 to the number of copies, 3 (got '0')" \
  "${N[@]}" cluster format --min-copies 0
expect_error 2 "missing arguments; usage: kelpie node kill ID" "${N[@]}" node kill
expect_error 2 "too many arguments; usage: kelpie node kill ID" "${N[@]}" node kill a b
expect_error 2 "unknown command 'cluster frob' (try 'kelpie --help')" "${N[@]}" cluster frob
expect_error 2 "unknown command 'node frob' (try 'kelpie --help')" "${N[@]}" node frob
expect_error 2 "missing subcommand after 'cluster' (try 'kelpie --help')" "${N[@]}" cluster
expect_error 2 "missing arguments; usage: kelpie cluster recover force" "${N[@]}" cluster recover
expect_error 2 "unknown command 'cluster recover now'; usage: kelpie cluster recover force" \
  "${N[@]}" cluster recover now
expect_error 2 "too many arguments; usage: kelpie cluster shutdown" "${N[@]}" cluster shutdown now
expect_error 2 "missing arguments; usage: kelpie vdi check NAME [--repair] [--json]" \
  "${N[@]}" vdi check
expect_error 2 "option --repair does not apply; usage: kelpie cluster info [--json]" \
  "${N[@]}" cluster info --repair
expect_error 2 "option --copies does not apply; usage: kelpie cluster check [--repair] [--json]" \
  "${N[@]}" cluster check --copies 3
expect_error 2 "option --repair takes no value" "${N[@]}" cluster check --repair=yes
for command in "cluster format [--copies N] [--min-copies M]" "cluster info [--json]" \
  "cluster check [--repair] [--json]" "cluster shutdown" "cluster recover force" \
  "node list [--json]" "node recovery [--json]" "node kill ID" "vdi check NAME [--repair] [--json]"; do
  "$KELPIE" --help | grep -qF "$command" || fail "kelpie --help does not list $command"
done

# A node started without --cluster refuses every cluster request, and stays up.
not_cluster="this node is not part of a cluster (started without --cluster)"
kcli vdi create disk 1M
for command in "cluster info" "cluster info --json" "cluster format" "cluster format --copies 1" \
  "cluster check" "cluster check --repair --json" "vdi check disk" "cluster shutdown" \
  "cluster recover force" "node list" "node list --json" "node recovery" "node kill 0f1e2d3c"; do
  # shellcheck disable=SC2086
  expect_error 1 "$not_cluster" "${A[@]}" $command
done
kcli vdi delete disk
kcli node info >/dev/null || fail "kelpied does not answer after the cluster requests"

# --- cluster command output, against a fake admin server with canned replies ----------
# It answers each op with replies.json[op] (re-read per request) and logs the requests.
cat >"$T/fake_admin.py" <<'PY'
import json, socket, struct, sys
port_file, replies_file, log_file = sys.argv[1:4]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
with open(port_file + ".tmp", "w") as f:
    f.write(str(listener.getsockname()[1]))
import os
os.rename(port_file + ".tmp", port_file)
def read_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
while True:
    conn, _ = listener.accept()
    with conn:
        while True:
            header = read_exactly(conn, 4)
            if header is None:
                break
            request = json.loads(read_exactly(conn, struct.unpack(">I", header)[0]))
            with open(log_file, "a") as f:
                f.write(json.dumps(request, sort_keys=True) + "\n")
            replies = json.load(open(replies_file))
            reply = replies.get(request["op"], {"ok": False, "errno": 22, "error": "unexpected"})
            body = json.dumps(reply).encode()
            conn.sendall(struct.pack(">I", len(body)) + body)
PY
cat >"$T/replies.json" <<'JSON'
{
  "cluster.info": {"ok": true, "driver": "local:/srv/kelpie-cluster", "status": "running",
    "cluster_uuid": "c0ffee00-0000-4000-8000-000000000000", "epoch": 4, "copies": 3,
    "min_copies": 2, "zones": 2, "storage_nodes": 3, "gateways": 1,
    "warnings": ["only 2 zones: objects keep 2 of 3 copies", "node 9a8b7c6d is down"],
    "history": [
      {"epoch": 1, "created_unix_ms": 1700000000123, "reason": "format", "nodes": ["a", "b"]},
      {"epoch": 4, "created_unix_ms": 1700000100000, "reason": "join c", "nodes": ["a", "b", "c"]}],
    "history_omitted": 0},
  "node.list": {"ok": true, "nodes": [
    {"id": "0f1e2d3c-0000-4000-8000-000000000001", "address": "10.0.0.1:7100",
     "nbd_address": "10.0.0.1:10809", "admin_address": "10.0.0.1:7000", "zone": "rack-a",
     "vnodes": 128, "gateway": false, "status": "up", "capacity_bytes": 1099511627776,
     "used_bytes": 3221225472, "objects": 768},
    {"id": "9a8b7c6d-0000-4000-8000-000000000002", "address": "10.0.0.2:7100",
     "nbd_address": "", "admin_address": "10.0.0.2:7000", "zone": "", "vnodes": 0,
     "gateway": true, "status": "gateway", "capacity_bytes": 0, "used_bytes": 0, "objects": 0}]},
  "node.recovery": {"ok": true, "nodes": [
    {"node": "0f1e2d3c-0000-4000-8000-000000000001", "epoch": 4, "state": "recovering",
     "to_recover": 120, "done": 30, "rate_mib_s": 12.5}]},
  "node.kill": {"ok": true},
  "cluster.shutdown": {"ok": true},
  "cluster.recover_force": {"ok": true},
  "cluster.check": {"ok": true, "objects_checked": 10, "copies_checked": 30, "repaired": 0,
    "issues": [
      {"object": "00000001000000a0", "vdi": "disk", "node": "0f1e2d3c-0000-4000-8000-000000000001",
       "problem": "missing copy", "repaired": false},
      {"object": "00000001000000a1", "vdi": "disk", "node": "", "problem": "differs",
       "repaired": false}],
    "issues_omitted": 0}
}
JSON
: >"$T/requests.log"
"$SYS_PYTHON" "$T/fake_admin.py" "$T/fake.port" "$T/replies.json" "$T/requests.log" &
KD_PIDS+=("$!")
poll_until 10 test -s "$T/fake.port" || fail "the fake admin server did not start"
F=(--addr "127.0.0.1:$(cat "$T/fake.port")")
fk() { "$KELPIE" "${F[@]}" "$@"; }
last_request() { tail -1 "$T/requests.log"; }
# set_reply OP PYTHON_EXPRESSION: replies[OP] = the expression (old reply: `r`).
set_reply() {
  "$SYS_PYTHON" - "$T/replies.json" "$1" "$2" <<'PY'
import json, sys
path, op, expr = sys.argv[1:4]
replies = json.load(open(path))
r = replies.get(op)
replies[op] = eval(expr)
json.dump(replies, open(path, "w"))
PY
}

fk cluster info >"$T/info"
for line in "driver:       local:/srv/kelpie-cluster" "status:       running" \
  "cluster uuid: c0ffee00-0000-4000-8000-000000000000" "epoch:        4" "copies:       3" \
  "min copies:   2" "zones:        2" "nodes:        3" "gateways:     1" \
  "warning: only 2 zones: objects keep 2 of 3 copies" "warning: node 9a8b7c6d is down"; do
  grep -qxF "$line" "$T/info" || fail "cluster info lacks '$line': $(cat "$T/info")"
done
grep -Eqx 'EPOCH +TIME +REASON +NODES' "$T/info" || fail "cluster info: no history header"
grep -Eqx '1 +2023-11-14 22:13:20 UTC +format +2' "$T/info" || fail "cluster info: epoch 1 row"
grep -Eqx '4 +2023-11-14 22:15:00 UTC +join c +3' "$T/info" || fail "cluster info: epoch 4 row"
check_json "$(fk cluster info --json)" \
  'sorted(doc) == sorted(["driver", "status", "cluster_uuid", "epoch", "copies", "min_copies", "zones", "storage_nodes", "gateways", "warnings", "history"])' \
  'doc["history"][0] == {"epoch": 1, "created_unix_ms": 1700000000123, "reason": "format", "nodes": ["a", "b"]}' \
  || fail "cluster info --json"

set_reply cluster.format 'replies["cluster.info"]'
fk cluster format | grep -qxF "status:       running" || fail "cluster format prints no summary"
check_json "$(last_request)" 'doc == {"op": "cluster.format", "copies": 3, "min_copies": 2}' ||
  fail "cluster format defaults: $(last_request)"
fk cluster format --copies 1 >/dev/null
check_json "$(last_request)" 'doc["copies"] == 1 and doc["min_copies"] == 1' ||
  fail "cluster format --copies 1: $(last_request)"
fk cluster format --copies 8 --min-copies 5 --json >/dev/null
check_json "$(last_request)" 'doc["copies"] == 8 and doc["min_copies"] == 5' ||
  fail "cluster format --copies 8 --min-copies 5: $(last_request)"

fk node list >"$T/nodes"
grep -Eqx 'ID +ADDRESS +ZONE +VNODES +CAPACITY +USED +OBJECTS +STATUS' "$T/nodes" ||
  fail "node list header: $(cat "$T/nodes")"
grep -Eqx '0f1e2d3c +10\.0\.0\.1:7100 +rack-a +128 +1 TiB +3 GiB +768 +up' "$T/nodes" ||
  fail "node list row: $(cat "$T/nodes")"
grep -Eqx '9a8b7c6d +10\.0\.0\.2:7100 +- +0 +0 B +0 B +0 +gateway' "$T/nodes" ||
  fail "node list gateway row: $(cat "$T/nodes")"
check_json "$(fk node list --json)" 'len(doc) == 2' \
  'doc[0]["id"] == "0f1e2d3c-0000-4000-8000-000000000001" and doc[1]["gateway"] is True' \
  'sorted(doc[0]) == sorted(["id", "address", "nbd_address", "admin_address", "zone", "vnodes", "gateway", "status", "capacity_bytes", "used_bytes", "objects"])' \
  || fail "node list --json"

fk node recovery | grep -Eqx '0f1e2d3c +4 +recovering +30/120 +0 +12\.5 MiB/s' ||
  fail "node recovery: $(fk node recovery)"
check_json "$(fk node recovery --json)" 'doc[0]["rate_mib_s"] == 12.5 and doc[0]["done"] == 30' ||
  fail "node recovery --json"

[ -z "$(fk node kill 0f1e)" ] || fail "node kill printed something"
check_json "$(last_request)" 'doc == {"op": "node.kill", "id": "0f1e"}' || fail "node kill request"
fk cluster shutdown
check_json "$(last_request)" 'doc == {"op": "cluster.shutdown"}' || fail "cluster shutdown request"
fk cluster recover force
check_json "$(last_request)" 'doc == {"op": "cluster.recover_force"}' || fail "recover force request"

# check: problems left exit 1 after printing the report.
status=0
fk cluster check >"$T/check" 2>"$T/stderr" || status=$?
[ "$status" = 1 ] || fail "cluster check with problems: exit status $status"
[ "$(cat "$T/stderr")" = "kelpie: 2 problems not repaired (run with --repair)" ] ||
  fail "cluster check stderr: $(cat "$T/stderr")"
printf '%s\n' "10 objects, 30 copies checked" "00000001000000a0 0f1e2d3c missing copy" \
  "00000001000000a1 - differs" "2 problems, 0 repaired" | diff - "$T/check" ||
  fail "cluster check output"
check_json "$(last_request)" 'doc == {"op": "cluster.check", "vdi": "", "repair": False}' ||
  fail "cluster check request: $(last_request)"
status=0
fk vdi check disk --json >"$T/check" 2>"$T/stderr" || status=$?
[ "$status" = 1 ] || fail "vdi check --json with problems: exit status $status"
check_json "$(cat "$T/check")" 'doc["objects_checked"] == 10 and len(doc["issues"]) == 2' \
  'sorted(doc) == ["copies_checked", "issues", "objects_checked", "repaired"]' ||
  fail "vdi check --json"
check_json "$(last_request)" 'doc == {"op": "cluster.check", "vdi": "disk", "repair": False}' ||
  fail "vdi check request: $(last_request)"
# One repaired, one not.
set_reply cluster.check 'dict(r, repaired=1, issues=[dict(r["issues"][0], repaired=True), r["issues"][1]])'
status=0
fk cluster check --repair >"$T/check" 2>"$T/stderr" || status=$?
[ "$status" = 1 ] || fail "cluster check --repair, one left: exit status $status"
[ "$(cat "$T/stderr")" = "kelpie: 1 problem not repaired" ] ||
  fail "cluster check --repair stderr: $(cat "$T/stderr")"
grep -qxF "00000001000000a0 0f1e2d3c missing copy repaired" "$T/check" || fail "repaired line"
grep -qxF "2 problems, 1 repaired" "$T/check" || fail "repair summary: $(cat "$T/check")"
check_json "$(last_request)" 'doc["repair"] is True' || fail "--repair not sent"
# Everything repaired: exit 0.
set_reply cluster.check 'dict(r, repaired=2, issues=[dict(i, repaired=True) for i in r["issues"]])'
fk vdi check disk --repair >"$T/check" || fail "vdi check --repair, all repaired: exit status $?"
tail -1 "$T/check" | grep -qxF "2 problems, 2 repaired" || fail "all repaired: $(cat "$T/check")"
# No problems.
set_reply cluster.check 'dict(r, repaired=0, issues=[])'
[ "$(fk cluster check)" = "10 objects, 30 copies checked: no problems" ] ||
  fail "clean check: $(fk cluster check)"
# Issues the daemon left out of its reply still count.
set_reply cluster.check 'dict(r, repaired=0, issues=[], issues_omitted=5)'
status=0
fk cluster check >"$T/check" 2>"$T/stderr" || status=$?
[ "$status" = 1 ] || fail "omitted issues: exit status $status"
grep -qxF "(5 more problems not shown)" "$T/check" || fail "omitted issues: $(cat "$T/check")"
[ "$(cat "$T/stderr")" = "kelpie: 5 problems not repaired (run with --repair)" ] ||
  fail "omitted issues stderr: $(cat "$T/stderr")"
# A malformed reply is an error naming the daemon.
set_reply node.list '{"ok": True, "nodes": [dict(r["nodes"][0], id=5)]}'
expect_error 1 "malformed reply from kelpied at ${F[1]}: field 'id' must be a string" \
  "${F[@]}" node list

kill -0 "$KD_PID" || fail "kelpied died"
echo PASS
