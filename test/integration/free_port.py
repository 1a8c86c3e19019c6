"""Prints a free TCP port on 127.0.0.1 for a test daemon to listen on.

Why not bind port 0: the kernel hands out ports from the ephemeral range
(net.ipv4.ip_local_port_range, 32768-60999 by default), the same range it
picks the source ports of every outgoing connection from. Between this script
printing a port and the daemon binding it, a client's connection (qemu-img,
nbdinfo, a peer call) may take it, and the daemon then fails with "Address
already in use". So the port is drawn below the ephemeral range, where only
explicit binds land; it is checked by binding it, and every port handed out is
recorded (under a lock) in PORTS_FILE so that two daemons of one test run never
get the same port before either has bound it.

    free_port.py [--count N] [PORTS_FILE]   default: $KELPIE_TEST_DIR/.ports

--count N prints the first of N consecutive free ports (all N recorded), for a
daemon set that numbers its ports from a base (scripts/demo.sh's cluster).
"""

import fcntl
import os
import random
import socket
import sys

LOW = 20000


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main():
    args = sys.argv[1:]
    count = 1
    if args[:1] == ["--count"]:
        if len(args) < 2 or not args[1].isdigit() or not 1 <= int(args[1]) <= 64:
            sys.exit("free_port.py: --count takes 1..64")
        count = int(args[1])
        args = args[2:]
    path = args[0] if args else os.path.join(
        os.environ.get("KELPIE_TEST_DIR", "/tmp/kelpie-test"), ".ports")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    high = min(ephemeral_low(), 32768) - 1
    if high <= LOW:
        sys.exit(f"free_port.py: the ephemeral range starts at {high + 1}; no room below it")
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        used = {int(line) for line in f.read().split() if line.isdigit()}
        if len(used) > (high - LOW) // 2:  # a long-lived file: start over
            f.truncate(0)
            used = set()
        rng = random.SystemRandom()
        for _ in range(2000):
            base = rng.randint(LOW, high - count + 1)
            ports = range(base, base + count)
            if all(port not in used and bindable(port) for port in ports):
                f.write("".join(f"{port}\n" for port in ports))
                f.flush()
                print(base)
                return
    sys.exit("free_port.py: no free port found below the ephemeral range")


if __name__ == "__main__":
    main()
