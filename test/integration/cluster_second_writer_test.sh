#!/usr/bin/env bash
# Issue 3, test 8. A VDI is attached for writing through one node at a time. While
# node 1 has "disk" attached for writing, a write attach through node 2 is refused
# at NBD_OPT_GO with NBD_REP_ERR_POLICY and the message
#   VDI 'disk' is attached for writing through node <node 1's id>; detach it there first
# and qemu-io through node 2 fails; more connections through node 1 are fine, and a
# snapshot (a read-only export) attaches through every node at once. Once node 1's
# connections are gone node 2 may write, and then node 1 is refused naming node 2.
# A writer's node that dies does not keep the VDI locked.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

start_cluster 3 3
ncli 1 vdi create disk 16M
qio "$(node_uri 1 disk)" 'write -P 0x11 0 1M'
ncli 1 vdi snapshot disk --tag t0

# Usage: attach_script NODE1_PORT NODE2_PORT NODE3_PORT WRITER_ID  (the Python below)
cat >"$LT_TMP/attach.py" <<'PY'
import struct, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import nbd
from nbd_raw_client import RawClient, OPT_GO, REP_ERR_POLICY

mode, holder_port, other_port, holder_id = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
want = f"VDI 'disk' is attached for writing through node {holder_id}; detach it there first"

def refused_raw(port):
    c = RawClient(port)
    c.handshake()
    raw = b"disk"
    c.send_option(OPT_GO, struct.pack(">I", len(raw)) + raw + struct.pack(">H", 0))
    reply_type, data = c.read_option_reply(OPT_GO)
    c.close()
    if reply_type != REP_ERR_POLICY:
        sys.exit(f"GO through port {port}: reply {reply_type:#x}, want NBD_REP_ERR_POLICY")
    if data.decode() != want:
        sys.exit(f"GO through port {port}: message {data.decode()!r}, want {want!r}")
    print(f"refused as expected: {data.decode()}")

def libnbd_refused(port):
    h = nbd.NBD()
    try:
        h.connect_uri(f"nbd://127.0.0.1:{port}/disk")
    except nbd.Error as e:
        print(f"libnbd refused as expected: {e}")
        return
    sys.exit(f"libnbd attached disk through port {port} while another node writes it")

# Node "holder" writes; a second connection through it works; the other node is refused.
h1 = nbd.NBD(); h1.connect_uri(f"nbd://127.0.0.1:{holder_port}/disk")
h1.pwrite(b"\x22" * 65536, 1 << 20)
h1b = nbd.NBD(); h1b.connect_uri(f"nbd://127.0.0.1:{holder_port}/disk")
if h1b.pread(65536, 1 << 20) != b"\x22" * 65536:
    sys.exit("a second connection through the writer's node reads other data")
refused_raw(other_port)
libnbd_refused(other_port)
r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4k",
                    f"nbd://127.0.0.1:{other_port}/disk"], capture_output=True, text=True)
if r.returncode == 0:
    sys.exit("qemu-io wrote through the second node")
print(f"qemu-io through the other node: exit {r.returncode}: {r.stderr.strip()[:300]}")
# Snapshots are read-only exports: shared by every node while the writer writes.
for port in (holder_port, other_port):
    s = nbd.NBD(); s.connect_uri(f"nbd://127.0.0.1:{port}/disk@t0")
    if s.pread(65536, 0) != b"\x11" * 65536:
        sys.exit(f"disk@t0 through port {port} reads wrong data")
    s.shutdown()
if mode == "hold":
    print("holding", flush=True)
    sys.stdin.read()   # until the test kills the holder's node
    sys.exit(0)
h1b.shutdown(); h1.shutdown()
PY

attach() { "$SYS_PYTHON" "$LT_TMP/attach.py" "$(dirname "$0")" "$@" || cfail "$PHASE"; }
PHASE="node 1 writes, node 2 refused"
attach release "${CL_NBD_PORT[1]}" "${CL_NBD_PORT[2]}" "$(node_id 1)"

PHASE="node 2 writes once node 1 detached, node 1 refused"
node2_may_write() { qemu-io -f raw -c 'write -P 0x44 2M 64k' "$(node_uri 2 disk)"; }
poll_until 10 node2_may_write || cfail "node 2 still may not write 10s after node 1 detached"
attach release "${CL_NBD_PORT[2]}" "${CL_NBD_PORT[1]}" "$(node_id 2)"
qio "$(node_uri 3 disk)" 'read -P 0x22 1M 64k' 'read -P 0x44 2M 64k' 'read -P 0x11 0 64k'

PHASE="the writer's node dies"
mkfifo "$LT_TMP/hold"
"$SYS_PYTHON" "$LT_TMP/attach.py" "$(dirname "$0")" hold "${CL_NBD_PORT[3]}" "${CL_NBD_PORT[1]}" \
  "$(node_id 3)" <"$LT_TMP/hold" >"$LT_TMP/hold.out" 2>&1 &
HOLDER=$!
exec 9>"$LT_TMP/hold"
poll_until 30 grep -q holding "$LT_TMP/hold.out" || { cat "$LT_TMP/hold.out" >&2; cfail "holder did not attach"; }
cat "$LT_TMP/hold.out"
kill_node 3
exec 9>&-
wait "$HOLDER" || true
wait_settled 2 10
node1_may_write() { qemu-io -f raw -c 'write -P 0x55 3M 64k' "$(node_uri 1 disk)"; }
poll_until 10 node1_may_write || cfail "node 1 may not write after the writer's node 3 died"
qio "$(node_uri 2 disk)" 'read -P 0x55 3M 64k' 'read -P 0x22 1M 64k'
expect_all_alive
echo PASS
