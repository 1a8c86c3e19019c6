"""NBD writers for the multi-host tests (issue 4); not a test itself.

    nbd_writer.py mirror URI IMAGE LOG STOP [--max-writes N] [--block BYTES]
                         [--deadline-s S] [--seed SEED]
        One connection (like a VM's) writes random data to random block-aligned
        offsets, one write at a time, and applies each acknowledged write to
        IMAGE, a local file that already holds what the export holds: at the end
        IMAGE is what the export must read back. LOG gets "A seq offset t_ns"
        after each reply (monotonic clock). Ends after N writes or once the file
        STOP exists (exit 0); a write that fails, or gets no reply within S
        seconds, ends it with exit 3 and the reason on stderr.

    nbd_writer.py probe URI GO RESULT [--hold-s S] [--wait-s W] [--second-offset O]
        Writes one 4 KiB block of 0x11 at offset 0 (fails unless it is acknowledged),
        writes "ready" to RESULT, then waits (up to W seconds) for the file GO and
        writes a block of 0x22 at offset O (default 4096) on the same connection. RESULT then says "ok" (it was
        acknowledged), "error: ..." (it failed) or "held" (no reply within S
        seconds). The connection is dropped without waiting further.

Run with /usr/bin/python3 (the `nbd` module).
"""

import argparse
import os
import random
import sys
import time

import nbd


def write_with_deadline(h, data, offset, deadline_s):
    """None when acknowledged; otherwise "held" or "error: ..."."""
    cookie = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), offset)
    end = time.monotonic() + deadline_s
    try:
        while not h.aio_command_completed(cookie):
            left_ms = int((end - time.monotonic()) * 1000)
            if left_ms <= 0:
                return "held"
            h.poll(min(left_ms, 200))
    except nbd.Error as e:
        return f"error: {e}"
    return None


def mirror(args):
    h = nbd.NBD()
    h.connect_uri(args.uri)
    size = h.get_size()
    if os.path.getsize(args.image) != size:
        sys.exit(f"{args.image} is {os.path.getsize(args.image)} bytes, the export {size}")
    rng = random.Random(args.seed)
    blocks = size // args.block
    log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with open(args.image, "r+b") as image:
        for seq in range(args.max_writes):
            if os.path.exists(args.stop):
                break
            offset = rng.randrange(blocks) * args.block
            data = rng.randbytes(args.block)
            problem = write_with_deadline(h, data, offset, args.deadline_s)
            if problem:
                print(f"write {seq} at {offset}: {problem}", file=sys.stderr)
                image.flush()
                os._exit(3)
            image.seek(offset)
            image.write(data)
            os.write(log, f"A {seq} {offset} {time.monotonic_ns()}\n".encode())
        image.flush()
        os.fsync(image.fileno())
    h.shutdown()


def probe(args):
    h = nbd.NBD()
    h.connect_uri(args.uri)
    problem = write_with_deadline(h, b"\x11" * 4096, 0, 30)
    if problem:
        sys.exit(f"probe: the first write was not acknowledged: {problem}")
    with open(args.result, "w") as f:
        f.write("ready\n")
    end = time.monotonic() + args.wait_s
    while not os.path.exists(args.go):
        if time.monotonic() > end:
            sys.exit(f"probe: no {args.go} within {args.wait_s}s")
        time.sleep(0.05)
    problem = write_with_deadline(h, b"\x22" * 4096, args.second_offset, args.hold_s)
    with open(args.result + ".tmp", "w") as f:
        f.write((problem or "ok") + "\n")
    os.rename(args.result + ".tmp", args.result)
    os._exit(0)  # drop the connection, whatever is still in flight


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("mirror")
    m.add_argument("uri")
    m.add_argument("image")
    m.add_argument("log")
    m.add_argument("stop")
    m.add_argument("--max-writes", type=int, default=100000)
    m.add_argument("--block", type=int, default=64 * 1024)
    m.add_argument("--deadline-s", type=float, default=60)
    m.add_argument("--seed", type=int, default=4)
    p = sub.add_parser("probe")
    p.add_argument("uri")
    p.add_argument("go")
    p.add_argument("result")
    p.add_argument("--hold-s", type=float, default=10)
    p.add_argument("--wait-s", type=float, default=300)
    p.add_argument("--second-offset", type=int, default=4096)
    args = parser.parse_args()
    mirror(args) if args.mode == "mirror" else probe(args)


if __name__ == "__main__":
    main()
