#!/usr/bin/python3
"""A snapshot taken while clients write is a consistent point in time.

Writer threads, each on its own NBD connection, write 4 KiB blocks to random block
offsets of NAME, one write at a time; writer w owns the blocks whose index is w
modulo WRITERS, so the writes to any one block are ordered. Writes take numbers from
one global sequence, and block seq holds (seq, offset) repeated, so every block read
back names the write that produced it. At a random moment
`kelpie vdi snapshot NAME --tag live` runs. With
    acked  = the writes acknowledged before the command started (the lower fence),
    upper  = the first seq issued after the command returned (the upper fence),
the snapshot must hold, at every block, a write to that block with seq < upper that
is not older than the newest write to it in `acked`; zeros only where `acked` has no
write to it. (A write issued before the command returned may be acknowledged after
it; seq < upper admits it, and nothing issued later.) And it is one point in time:
since each writer is sequential, the snapshot holds a prefix of each writer's writes.
No block may be torn, no writer
may see an error, and the head must end up holding the newest write everywhere.

Replay a run with KELPIE_SEED=<seed printed at the start>.
"""

import os
import random
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import KELPIE, Kelpied, fail, run_main  # noqa: E402

import nbd  # noqa: E402  (python3-libnbd; needs /usr/bin/python3)

M = 1 << 20
BLOCK = 4096
SIZE = 64 * M
BLOCKS = 4096                  # writes land in the first 16 MiB: 4 objects, many overwrites
WRITERS = 4
MAX_WRITES = 200_000
MAX_WRITE_SECONDS = 40
WRITES_AFTER_SNAPSHOT = 2000


def block_bytes(seq, offset):
    return struct.pack("<QQ", seq, offset) * (BLOCK // 16)


def decode_block(data, offset):
    """seq of the write a block holds, 0 for zeros; fails on a torn or misplaced block."""
    if data == bytes(BLOCK):
        return 0
    seq, where = struct.unpack_from("<QQ", data)
    if data != block_bytes(seq, where):
        fail(f"block at offset {offset} is torn or foreign: starts {data[:32].hex()}")
    if where != offset:
        fail(f"block at offset {offset} holds the write of seq {seq} made to offset {where}")
    return seq


class Writes:
    """The global write sequence, shared by the writer threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.last_seq = 0     # highest seq handed out (issued or about to be)
        self.offset_of = {}   # seq -> offset, for every acknowledged write
        self.stop_after = MAX_WRITES
        self.errors = []

    def take(self):
        with self.lock:
            if self.last_seq >= self.stop_after:
                return None
            self.last_seq += 1
            return self.last_seq

    def acked(self, seq, offset):
        with self.lock:
            self.offset_of[seq] = offset


def writer(uri, index, writes, seed):
    rng = random.Random(seed)
    try:
        h = nbd.NBD()
        h.connect_uri(uri)
        deadline = time.monotonic() + MAX_WRITE_SECONDS
        while time.monotonic() < deadline:
            seq = writes.take()
            if seq is None:
                break
            offset = (rng.randrange(BLOCKS // WRITERS) * WRITERS + index) * BLOCK
            h.pwrite(block_bytes(seq, offset), offset)
            writes.acked(seq, offset)
        h.flush()
        h.shutdown()
    except Exception as e:  # reported by the main thread
        writes.errors.append(f"writer {index}: {e!r}")


def read_blocks(uri):
    """seq of every block in the first BLOCKS blocks of the export."""
    h = nbd.NBD()
    h.connect_uri(uri)
    seqs = []
    chunk = 4 * M
    for base in range(0, BLOCKS * BLOCK, chunk):
        data = h.pread(chunk, base)
        for i in range(0, chunk, BLOCK):
            seqs.append(decode_block(data[i:i + BLOCK], base + i))
    h.shutdown()
    return seqs


def newest_per_offset(offset_of, seqs):
    newest = {}
    for seq in seqs:
        offset = offset_of[seq]
        newest[offset] = max(newest.get(offset, 0), seq)
    return newest


def main():
    seed = int(os.environ.get("KELPIE_SEED", random.randrange(1 << 32)))
    print(f"seed {seed} (replay with KELPIE_SEED={seed})")
    rng = random.Random(seed)
    kd = Kelpied("live_snapshot")
    kd.cli("vdi", "create", "disk", SIZE)

    writes = Writes()
    threads = [threading.Thread(target=writer, daemon=True,
                                args=(kd.uri("disk"), i, writes, rng.randrange(1 << 32)))
               for i in range(WRITERS)]
    for t in threads:
        t.start()
    # Let a random amount of writing happen first (polled, not slept).
    wait_for = rng.randrange(300, 3000)
    end = time.monotonic() + 30
    while len(writes.offset_of) < wait_for and not writes.errors:
        if time.monotonic() > end:
            fail(f"the writers acknowledged only {len(writes.offset_of)} writes in 30 s")
        time.sleep(0.005)
    if writes.errors:
        fail(f"a writer failed before the snapshot: {writes.errors}")

    with writes.lock:
        acked_before = list(writes.offset_of)
    t0 = time.monotonic()
    r = subprocess.run([KELPIE, "--addr", kd.admin, "vdi", "snapshot", "disk", "--tag", "live"],
                       capture_output=True, text=True)
    with writes.lock:
        upper = writes.last_seq + 1
        writes.stop_after = writes.last_seq + WRITES_AFTER_SNAPSHOT
    took = time.monotonic() - t0
    if r.returncode != 0:
        fail(f"vdi snapshot disk --tag live exited {r.returncode}: {r.stderr.strip()}")
    if r.stdout.strip() != "disk@live":
        fail(f"vdi snapshot printed {r.stdout.strip()!r}, want 'disk@live'")
    print(f"snapshot after {len(acked_before)} acknowledged writes, before seq {upper} "
          f"(took {took:.3f} s; {upper - 1 - len(acked_before)} writes were not acknowledged "
          "before it started and were issued before it returned)")

    for t in threads:
        t.join(MAX_WRITE_SECONDS + 30)
        if t.is_alive():
            fail("a writer did not finish")
    if writes.errors:
        fail(f"a writer saw an error: {writes.errors}")
    print(f"{len(writes.offset_of)} writes in all")

    written_at = {}   # offset -> set of seqs written there
    for seq, offset in writes.offset_of.items():
        written_at.setdefault(offset, set()).add(seq)
    floor_at = newest_per_offset(writes.offset_of, acked_before)

    snap = read_blocks(kd.uri("disk@live"))
    problems = []
    for index, got in enumerate(snap):
        offset = index * BLOCK
        floor = floor_at.get(offset, 0)
        if got == 0:
            if floor:
                problems.append(f"offset {offset}: zeros, but seq {floor} was acknowledged "
                                "before the snapshot started")
        elif got not in written_at.get(offset, ()):
            problems.append(f"offset {offset}: seq {got} was never written at this offset")
        elif got < floor:
            problems.append(f"offset {offset}: seq {got}, older than seq {floor} which was "
                            "acknowledged before the snapshot started")
        elif got >= upper:
            problems.append(f"offset {offset}: seq {got} was issued after the snapshot returned "
                            f"(upper fence {upper})")
    if problems:
        fail(f"{len(problems)} snapshot blocks are wrong (upper fence {upper}); first ones:\n  " +
             "\n  ".join(problems[:10]))

    # One point in time: each writer is sequential, so the snapshot holds a prefix of
    # each writer's writes. With K = the newest seq of writer w in the snapshot, every
    # block of w holds its newest write with seq <= K.
    for w in range(WRITERS):
        blocks = range(w, BLOCKS, WRITERS)
        k = max(snap[b] for b in blocks)
        seqs = [seq for seq, offset in writes.offset_of.items()
                if (offset // BLOCK) % WRITERS == w and seq <= k]
        want = newest_per_offset(writes.offset_of, seqs)
        for b in blocks:
            if snap[b] != want.get(b * BLOCK, 0):
                fail(f"the snapshot is not one point in time: writer {w}'s write {k} is in it, "
                     f"but block at offset {b * BLOCK} holds seq {snap[b]}, not "
                     f"{want.get(b * BLOCK, 0)} (the newest write there up to {k})")

    newest = newest_per_offset(writes.offset_of, writes.offset_of)
    head = read_blocks(kd.uri("disk"))
    for index, got in enumerate(head):
        want = newest.get(index * BLOCK, 0)
        if got != want:
            fail(f"head block at offset {index * BLOCK} holds seq {got}, want the newest {want}")
    if not kd.alive():
        fail("kelpied died")


if __name__ == "__main__":
    run_main(main)
