#!/usr/bin/python3
"""A snapshot taken while a client writes is a consistent point in time.

A writer thread writes 4 KiB blocks to random block offsets of NAME over NBD, one
at a time; block seq holds (seq, offset) repeated, so every block read back names
the write that produced it. At a random moment `kelpie vdi snapshot NAME --tag live`
runs. With
    lower = the last seq acknowledged before the command started,
    upper = the first seq issued after the command returned,
the snapshot must hold, at every block offset, either the newest write to it with
seq <= lower, or a later one with seq < upper (one issued while the command ran);
zeros only where no write with seq <= lower touched it. (A write issued before the
command returned may be acknowledged after it: the writer is synchronous, so at most
that one write is in flight, and seq < upper admits it.) No block may be torn and the
writer must see no error. The head must end up holding the newest write everywhere.

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
MAX_WRITES = 200_000
MAX_WRITE_SECONDS = 40
WRITES_AFTER_SNAPSHOT = 2000


def block_bytes(seq, offset):
    return struct.pack("<QQ", seq, offset) * (BLOCK // 16)


def decode_block(data, offset):
    """(seq, offset) of a block, 0 for zeros; fails on a torn or misplaced block."""
    if data == bytes(BLOCK):
        return 0
    seq, where = struct.unpack_from("<QQ", data)
    if data != block_bytes(seq, where):
        fail(f"block at offset {offset} is torn or foreign: starts {data[:32].hex()}")
    if where != offset:
        fail(f"block at offset {offset} holds the write of seq {seq} made to offset {where}")
    return seq


class Writer(threading.Thread):
    def __init__(self, uri, seed):
        super().__init__(daemon=True)
        self.uri = uri
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.issued = 0       # highest seq handed to pwrite
        self.acked = 0        # highest seq whose pwrite returned
        self.offset_of = {}   # seq -> offset, for every acknowledged write
        self.error = None
        self.stop_after = MAX_WRITES

    def run(self):
        try:
            h = nbd.NBD()
            h.connect_uri(self.uri)
            deadline = time.monotonic() + MAX_WRITE_SECONDS
            seq = 0
            while seq < self.stop_after and time.monotonic() < deadline:
                seq += 1
                offset = self.random.randrange(BLOCKS) * BLOCK
                with self.lock:
                    self.issued = seq
                h.pwrite(block_bytes(seq, offset), offset)
                with self.lock:
                    self.acked = seq
                    self.offset_of[seq] = offset
            h.flush()
            h.shutdown()
        except Exception as e:  # reported by the main thread
            self.error = e


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


def main():
    seed = int(os.environ.get("KELPIE_SEED", random.randrange(1 << 32)))
    print(f"seed {seed} (replay with KELPIE_SEED={seed})")
    rng = random.Random(seed)
    kd = Kelpied("live_snapshot")
    kd.cli("vdi", "create", "disk", SIZE)

    writer = Writer(kd.uri("disk"), rng.randrange(1 << 32))
    writer.start()
    # Let a random amount of writing happen first (polled, not slept).
    wait_for = rng.randrange(300, 3000)
    end = time.monotonic() + 30
    while writer.acked < wait_for and writer.is_alive():
        if time.monotonic() > end:
            fail(f"the writer acknowledged only {writer.acked} writes in 30 s")
        time.sleep(0.005)
    if writer.error:
        fail(f"the writer failed before the snapshot: {writer.error!r}")

    with writer.lock:
        lower = writer.acked
    t0 = time.monotonic()
    r = subprocess.run([KELPIE, "--addr", kd.admin, "vdi", "snapshot", "disk", "--tag", "live"],
                       capture_output=True, text=True)
    with writer.lock:
        upper = writer.issued + 1
        writer.stop_after = writer.issued + WRITES_AFTER_SNAPSHOT
    took = time.monotonic() - t0
    if r.returncode != 0:
        fail(f"vdi snapshot disk --tag live exited {r.returncode}: {r.stderr.strip()}")
    if r.stdout.strip() != "disk@live":
        fail(f"vdi snapshot printed {r.stdout.strip()!r}, want 'disk@live'")
    print(f"snapshot between seq {lower} and {upper} (took {took:.3f} s, {upper - lower - 1} "
          "writes ran during it)")

    writer.join(MAX_WRITE_SECONDS + 30)
    if writer.is_alive():
        fail("the writer did not finish")
    if writer.error:
        fail(f"the writer saw an error: {writer.error!r}")
    print(f"{writer.acked} writes in all")

    # For every offset, the writes in seq order.
    writes_at = {}
    for seq in sorted(writer.offset_of):
        writes_at.setdefault(writer.offset_of[seq], []).append(seq)

    snap = read_blocks(kd.uri("disk@live"))
    problems = []
    for index, got in enumerate(snap):
        offset = index * BLOCK
        seqs = writes_at.get(offset, [])
        before = [s for s in seqs if s <= lower]
        floor = before[-1] if before else 0
        if got == 0:
            if floor:
                problems.append(f"offset {offset}: zeros, but seq {floor} was acknowledged "
                                "before the snapshot started")
            continue
        if got not in seqs:
            problems.append(f"offset {offset}: seq {got} was never written at this offset")
        elif got < floor:
            problems.append(f"offset {offset}: seq {got}, older than seq {floor} which was "
                            "acknowledged before the snapshot started")
        elif got >= upper:
            problems.append(f"offset {offset}: seq {got} was issued after the snapshot returned "
                            f"(upper fence {upper})")
    if problems:
        fail(f"{len(problems)} snapshot blocks are wrong (lower {lower}, upper {upper}); "
             "first ones:\n  " + "\n  ".join(problems[:10]))

    head = read_blocks(kd.uri("disk"))
    for index, got in enumerate(head):
        seqs = writes_at.get(index * BLOCK, [])
        want = seqs[-1] if seqs else 0
        if got != want:
            fail(f"head block at offset {index * BLOCK} holds seq {got}, want the newest {want}")
    if not kd.alive():
        fail("kelpied died")


if __name__ == "__main__":
    run_main(main)
