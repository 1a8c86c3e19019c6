"""Acknowledged-write bookkeeping for the cluster tests (not a test itself).

    cluster_acked_io.py write URI LOG [--connections K] [--area BYTES] [--block BYTES]
                                      [--max-writes N] [--seed S]
        K libnbd connections write blocks at random block-aligned offsets of the
        first BYTES of the export, so writes of different connections overlap.
        Every 4 KiB chunk carries (magic, connection, sequence, offset) so a read
        names the write it came from. Before a write is sent LOG gets
        "S conn seq offset t_ns", after its reply "A conn seq offset t_ns"
        (monotonic clock, one os.write per line). Ends after N writes (exit 0)
        or at the first error of any connection (exit 3: the server went away).

    cluster_acked_io.py verify URI LOG [--area BYTES] [--block BYTES]
        Reads the area back and checks every chunk: it is exactly the pattern of a
        write that was started, and no acknowledged write to that block was sent
        after that write was acknowledged (so nothing acknowledged is lost and
        nothing older comes back); zeros only where no write was acknowledged.
        Prints a summary; exit 1 with the first problems otherwise.

Run with /usr/bin/python3 (the `nbd` module).
"""

import argparse
import os
import random
import struct
import sys
import threading
import time

import nbd

CHUNK = 4096
MAGIC = 0x4B454C5049454143  # "KELPIEAC"


def chunk_pattern(conn, seq, offset):
    head = struct.pack("<QIIQ", MAGIC, conn, seq, offset)
    return (head * (CHUNK // len(head) + 1))[:CHUNK]


def block_data(conn, seq, offset, block):
    return b"".join(chunk_pattern(conn, seq, offset + i) for i in range(0, block, CHUNK))


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def write(args):
    fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    failed = []
    count = [0]
    lock = threading.Lock()
    blocks = args.area // args.block

    def worker(conn):
        rng = random.Random(args.seed * 1000 + conn)
        try:
            h = connect(args.uri)
        except nbd.Error as e:
            failed.append(f"connection {conn}: connect: {e}")
            return
        seq = 0
        while True:
            with lock:
                if count[0] >= args.max_writes or failed:
                    break
                count[0] += 1
            seq += 1
            offset = rng.randrange(blocks) * args.block
            data = block_data(conn, seq, offset, args.block)
            os.write(fd, f"S {conn} {seq} {offset} {time.monotonic_ns()}\n".encode())
            try:
                h.pwrite(data, offset)
            except nbd.Error as e:
                failed.append(f"connection {conn}: write {seq} at {offset}: {e}")
                return
            os.write(fd, f"A {conn} {seq} {offset} {time.monotonic_ns()}\n".encode())
        try:
            h.shutdown()
        except nbd.Error:
            pass

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(1, args.connections + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(fd)
    if failed:
        print("writer stopped: " + "; ".join(failed[:4]), file=sys.stderr)
        sys.exit(3)
    print(f"writer: {count[0]} writes acknowledged")


def load_log(path):
    started, acked = {}, {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 5:
                continue  # a line torn by a kill of the writer
            kind, conn, seq, offset, t = parts[0], int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
            (started if kind == "S" else acked)[(conn, seq)] = (offset, t)
    return started, acked


def verify(args):
    started, acked = load_log(args.log)
    by_block = {}
    for key, (offset, t_send) in started.items():
        t_ack = acked[key][1] if key in acked else None
        by_block.setdefault(offset, []).append((key, t_send, t_ack))
    h = connect(args.uri)
    problems = []
    checked = 0
    for offset in range(0, args.area, args.block):
        data = h.pread(args.block, offset)
        writes = by_block.get(offset, [])
        acked_sends = [t_send for _, t_send, t_ack in writes if t_ack is not None]
        for i in range(0, args.block, CHUNK):
            chunk = data[i:i + CHUNK]
            checked += 1
            if chunk == bytes(CHUNK):
                if acked_sends:
                    problems.append(f"chunk {offset + i}: zeros, but {len(acked_sends)} writes were acknowledged")
                continue
            magic, conn, seq, where = struct.unpack("<QIIQ", chunk[:24])
            if magic != MAGIC or chunk != chunk_pattern(conn, seq, where) or where != offset + i:
                problems.append(f"chunk {offset + i}: not any write's pattern (head {chunk[:24].hex()})")
                continue
            match = [w for w in writes if w[0] == (conn, seq)]
            if not match:
                problems.append(f"chunk {offset + i}: write {conn}/{seq} was never started here")
                continue
            _, _, t_ack = match[0]
            if t_ack is not None:
                later = [t for t in acked_sends if t > t_ack]
                if later:
                    problems.append(f"chunk {offset + i}: holds write {conn}/{seq}, but "
                                    f"{len(later)} acknowledged writes were sent after it was acknowledged")
    h.shutdown()
    if problems:
        print(f"verify: {len(problems)} problems in {checked} chunks; first ones:", file=sys.stderr)
        for p in problems[:12]:
            print("  " + p, file=sys.stderr)
        sys.exit(1)
    print(f"verify: {checked} chunks right; {len(acked)} of {len(started)} writes were acknowledged")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "verify"])
    parser.add_argument("uri")
    parser.add_argument("log")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--area", type=int, default=32 << 20)
    parser.add_argument("--block", type=int, default=64 << 10)
    parser.add_argument("--max-writes", type=int, default=1 << 30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.block % CHUNK or args.area % args.block:
        sys.exit("block must be a multiple of 4 KiB and divide area")
    (write if args.mode == "write" else verify)(args)


if __name__ == "__main__":
    main()
