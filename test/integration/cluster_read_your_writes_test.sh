#!/usr/bin/env bash
# Issue 13, case 7: VDI operations are read-your-writes across the cluster. Right
# after `kelpie vdi create` (or `vdi snapshot`) through node 1 returns, nodes 2 and 3
# both serve the new export, at once:
#   - a created VDI: one of them opens it (NBD_OPT_GO after SET_META_CONTEXT,
#     libnbd) and reads zeros; the other lists the exports (NBD_OPT_LIST) and asks
#     for the export's size (NBD_OPT_INFO). Only one node may attach a VDI for
#     writing, so the second node only looks it up. The nodes swap roles each time.
#   - every 10th iteration a snapshot of "base" (read-only): both open it (GO) and
#     read base's pattern.
# 100 iterations or 90 s, whichever comes first (at least 20); every open, list and
# info must succeed. Before the NBD server synced the directory per option, the
# lookups failed with "no VDI named ..." until the other nodes' 100 ms watcher
# reloaded it.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

start_cluster 3 3
ncli 1 vdi create base 8M
qio "$(node_uri 1 base)" 'write -P 0x5a 0 64k'

cat >"$LT_TMP/ryw.py" <<'PY'
import subprocess, sys, threading, time
import nbd

kelpie, admin1, port2, port3 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kIterations, kMinIterations, kBudgetS = 100, 20, 90
kSize = 8 << 20
failures = []   # (iteration, what, error)
opens = 0

def cli(*args):
    r = subprocess.run([kelpie, "--addr", admin1, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"kelpie {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")

def go_and_read(port, name, want):
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri(f"nbd://127.0.0.1:{port}/{name}")
    try:
        got = h.pread(len(want), 0)
        if got != want:
            raise RuntimeError(f"read {got[:8].hex()}..., want {want[:8].hex()}...")
    finally:
        h.shutdown()

def list_and_info(port, name):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(f"nbd://127.0.0.1:{port}/{name}")
    names = []
    h.opt_list(lambda export, description: names.append(export) or 0)
    if name not in names:
        raise RuntimeError(f"NBD_OPT_LIST does not name it ({len(names)} exports)")
    h.opt_info()
    if h.get_size() != kSize:
        raise RuntimeError(f"NBD_OPT_INFO size {h.get_size()}, want {kSize}")
    h.opt_abort()

def at_once(i, jobs):
    """Runs (what, fn) jobs on threads released together; records their failures."""
    global opens
    barrier = threading.Barrier(len(jobs))
    def run(what, fn):
        barrier.wait()
        try:
            fn()
        except Exception as e:  # nbd.Error or a wrong answer: a failed open
            failures.append((i, what, str(e)))
    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads: t.start()
    for t in threads: t.join(30)
    if any(t.is_alive() for t in threads):
        sys.exit(f"iteration {i}: an open through node 2 or 3 hung for 30 s")
    opens += len(jobs)

start = time.monotonic()
done = 0
for i in range(1, kIterations + 1):
    if time.monotonic() - start > kBudgetS:
        break
    if i % 10 == 0:
        snap = f"base@s{i}"
        cli("vdi", "snapshot", "base", "--tag", f"s{i}")
        want = b"\x5a" * 4096
        at_once(i, [(f"GO {snap} via node 2", lambda: go_and_read(port2, snap, want)),
                    (f"GO {snap} via node 3", lambda: go_and_read(port3, snap, want))])
    else:
        name = f"v{i}"
        cli("vdi", "create", name, "8M")
        opener, looker = (port2, port3) if i % 2 else (port3, port2)
        n_open, n_look = (2, 3) if i % 2 else (3, 2)
        at_once(i, [(f"GO {name} via node {n_open}", lambda: go_and_read(opener, name, bytes(4096))),
                    (f"LIST+INFO {name} via node {n_look}", lambda: list_and_info(looker, name))])
    done = i

elapsed = time.monotonic() - start
print(f"{done} iterations, {opens} opens through nodes 2 and 3 in {elapsed:.1f} s; {len(failures)} failed")
for i, what, error in failures[:10]:
    print(f"  iteration {i}: {what}: {error}")
if failures:
    sys.exit(f"{len(failures)} of {opens} opens right after the command returned failed")
if done < kMinIterations:
    sys.exit(f"only {done} iterations in {kBudgetS} s (want at least {kMinIterations})")
PY

"$SYS_PYTHON" "$LT_TMP/ryw.py" "$KELPIE" "$(node_admin 1)" "${CL_NBD_PORT[2]}" "${CL_NBD_PORT[3]}" ||
  cfail "opens through other nodes right after create/snapshot"
expect_all_alive
echo PASS
