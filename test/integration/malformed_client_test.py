#!/usr/bin/python3
"""Hostile and sloppy NBD clients against a real kelpied.

Raw sockets send what no polite client would: bad magic, absurd lengths,
unknown options, commands and flags, requests past the end, floods of requests
whose replies are never read, payloads cut short. Each case asserts the exact
answer (error code, reply kind, or a disconnect), and after every case a fresh
libnbd client must still read and write correctly and the daemon must be alive.
"""

import errno
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Kelpied, TestFailure, fail, run_main  # noqa: E402
from nbd_raw_client import *  # noqa: E402,F401,F403  (protocol constants, RawClient, Closed)

import nbd  # noqa: E402  (python3-libnbd; needs /usr/bin/python3)

M = 1 << 20
EXPORT = "disk"
EXPORT_SIZE = 64 * M
HEALTH_BASE = 48 * M   # health checks write only in [48M, 64M)


def connected(kd, structured=False):
    c = RawClient(kd.nbd_port)
    c.handshake()
    if structured:
        c.negotiate_structured()
    c.go_ok(EXPORT, EXPORT_SIZE)
    return c


def libnbd_handle(kd, name=EXPORT, strict=True):
    h = nbd.NBD()
    if not strict:
        h.set_strict_mode(0)
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(kd.uri(name))
    return h


def check_healthy(kd, after):
    """The daemon is alive and a fresh well-behaved client reads what it writes."""
    if not kd.alive():
        fail(f"kelpied died (exit {kd.proc.returncode}) after: {after}")
    h = libnbd_handle(kd)
    try:
        offset = HEALTH_BASE + (os.getpid() * 7919 + int(time.monotonic() * 1000)) % (15 * M)
        data = os.urandom(4096 + 17)
        h.pwrite(data, offset)
        if h.pread(len(data), offset) != data:
            fail(f"fresh client read back different data after: {after}")
        h.flush()
    finally:
        h.shutdown()


def check_stream_usable(c, what):
    """After an error reply the same connection still answers a valid read."""
    error, data = c.read(0, 4096)
    if error != 0 or len(data) != 4096:
        fail(f"connection unusable after {what}: read gave error {error}")


# --- handshake-phase cases -------------------------------------------------------

def case_unknown_client_flags(kd):
    c = RawClient(kd.nbd_port)
    c.handshake(client_flags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES | 0x40000000)
    c.send_option(OPT_LIST)   # a server that ignored the flags would answer this
    if not c.is_closed_within(5):
        fail("unknown client flag bits did not end the connection")
    c.close()


def case_bad_option_magic(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    c.send_option(OPT_GO, b"\0" * 6, magic=0x1122334455667788)
    if not c.is_closed_within(5):
        fail("bad option magic did not end the connection")
    c.close()


def case_huge_option_length(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    c.send_option(OPT_GO, length=0xFFFFFFFF)
    c.send(b"\0" * 4096)   # the start of a 4 GiB payload that never comes
    c.sock.settimeout(5)
    try:
        reply_type, _ = c.read_option_reply(OPT_GO)
        if not reply_type & 0x80000000:
            fail(f"option length 0xffffffff answered with non-error {reply_type:#x}")
    except Closed:
        pass
    except socket.timeout:
        fail("option length 0xffffffff: no error reply and no disconnect within 5 s")
    c.close()


def case_long_name_export_name(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    c.send_option(OPT_EXPORT_NAME, b"x" * 5000)
    if not c.is_closed_within(5):   # EXPORT_NAME has no error reply: only a disconnect
        fail("EXPORT_NAME with a 5000-byte name did not end the connection")
    c.close()


def case_long_name_go(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    try:
        result = c.go("y" * 5000)
    except Closed:
        return   # disconnecting is an acceptable answer
    if result not in (REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_TOO_BIG):
        fail(f"GO with a 5000-byte name answered {result}, want ERR_INVALID/UNKNOWN/TOO_BIG")
    c.go_ok(EXPORT, EXPORT_SIZE)   # negotiation goes on
    check_stream_usable(c, "GO with a long name")
    c.close()


def case_go_name_length_beyond_option(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    # Name length field says 4000, the option holds 10 bytes in total.
    c.send_option(OPT_GO, struct.pack(">I", 4000) + b"disk" + struct.pack(">H", 0))
    try:
        reply_type, _ = c.read_option_reply(OPT_GO)
    except Closed:
        return
    if reply_type != REP_ERR_INVALID:
        fail(f"GO whose name overruns the option answered {reply_type:#x}, want ERR_INVALID")
    c.go_ok(EXPORT, EXPORT_SIZE)
    c.close()


def case_unknown_option(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    c.send_option(0x1234, b"abc")
    reply_type, _ = c.read_option_reply(0x1234)
    if reply_type != REP_ERR_UNSUP:
        fail(f"unknown option 0x1234 answered {reply_type:#x}, want NBD_REP_ERR_UNSUP")
    c.go_ok(EXPORT, EXPORT_SIZE)
    check_stream_usable(c, "an unknown option")
    c.close()


def case_starttls_without_tls(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    c.send_option(OPT_STARTTLS)
    reply_type, _ = c.read_option_reply(OPT_STARTTLS)
    if reply_type not in (REP_ERR_UNSUP, REP_ERR_POLICY):
        fail(f"STARTTLS on a server without TLS answered {reply_type:#x}, want ERR_UNSUP/POLICY")
    c.go_ok(EXPORT, EXPORT_SIZE)
    c.close()


def case_list_and_info(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    c.send_option(OPT_LIST)
    names = []
    for _ in range(100):
        reply_type, data = c.read_option_reply(OPT_LIST)
        if reply_type == REP_ACK:
            break
        if reply_type != REP_SERVER:
            fail(f"LIST answered {reply_type:#x}")
        (length,) = struct.unpack(">I", data[:4])
        names.append(data[4:4 + length].decode())
    if sorted(names) != sorted([EXPORT, "bs"]):
        fail(f"LIST gave {names}")
    result = c.go("nosuch", opt=OPT_INFO)
    if result != REP_ERR_UNKNOWN:
        fail(f"INFO on an unknown export answered {result}, want ERR_UNKNOWN")
    result = c.go(EXPORT, opt=OPT_INFO)
    if not isinstance(result, tuple) or result[0] != EXPORT_SIZE:
        fail(f"INFO {EXPORT} answered {result}")
    c.go_ok(EXPORT, EXPORT_SIZE)   # INFO leaves negotiation open
    c.close()


def case_export_name_ok(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    c.send_option(OPT_EXPORT_NAME, EXPORT.encode())
    size, _flags = struct.unpack(">QH", c.recv_exact(10))   # NO_ZEROES: no padding
    if size != EXPORT_SIZE:
        fail(f"EXPORT_NAME reports size {size}")
    check_stream_usable(c, "EXPORT_NAME")
    c.close()


def case_abort(kd):
    c = RawClient(kd.nbd_port)
    c.handshake()
    c.send_option(OPT_ABORT)
    try:
        reply_type, _ = c.read_option_reply(OPT_ABORT)
        if reply_type != REP_ACK:
            fail(f"ABORT answered {reply_type:#x}")
    except Closed:
        pass
    if not c.is_closed_within(5):
        fail("ABORT did not end the connection")
    c.close()


# --- transmission-phase cases ----------------------------------------------------

def case_huge_write(kd):
    c = connected(kd)
    payload = b"\xee" * (64 * M)
    handle = c.request(CMD_WRITE, 0, len(payload))
    sender_error = []

    def send_payload():
        try:
            c.sock.sendall(payload)
        except OSError as e:   # the server may hang up instead of reading 64 MiB
            sender_error.append(e)
    sender = threading.Thread(target=send_payload, daemon=True)
    sender.start()
    try:
        error, _ = c.reply(handle)
    except Closed:
        sender.join(IO_TIMEOUT_S)
        c.close()
        return
    sender.join(IO_TIMEOUT_S)
    if error not in (errno.EINVAL, errno.EOVERFLOW):
        fail(f"64 MiB write answered {error}, want EINVAL or EOVERFLOW (or a disconnect)")
    if sender.is_alive():
        fail("after refusing a 64 MiB write the server neither read its payload nor disconnected")
    if not sender_error:
        try:   # if the server kept the connection, it must have skipped the payload
            check_stream_usable(c, "a 64 MiB write")
        except Closed:
            pass
    c.close()


def case_huge_read(kd):
    c = connected(kd)
    handle = c.request(CMD_READ, 0, 64 * M)
    try:
        c.expect_error("64 MiB read", handle, (errno.EINVAL, errno.EOVERFLOW))
    except Closed:
        return
    check_stream_usable(c, "a 64 MiB read")
    c.close()


def case_range_errors(kd, structured):
    h = libnbd_handle(kd)
    tail = os.urandom(512)
    h.pwrite(tail, EXPORT_SIZE - 512)
    h.shutdown()
    c = connected(kd, structured)
    kind = "structured" if structured else "simple"
    h = c.request(CMD_READ, (1 << 64) - 512, 1024)
    c.expect_error(f"read with offset+length past 2^64 ({kind})", h, (errno.EINVAL,))
    h = c.request(CMD_TRIM, (1 << 64) - 512, 1024)
    c.expect_error(f"trim with offset+length past 2^64 ({kind})", h, (errno.EINVAL,))
    h = c.request(CMD_READ, EXPORT_SIZE - 512, 1024)
    c.expect_error(f"read past the end ({kind})", h, (errno.EINVAL,))
    h = c.request(CMD_READ, EXPORT_SIZE, 1)
    c.expect_error(f"read at the end ({kind})", h, (errno.EINVAL,))
    h = c.request(CMD_WRITE, EXPORT_SIZE - 512, 1024, payload=b"\x01" * 1024)
    c.expect_error(f"write past the end ({kind})", h, (errno.ENOSPC,))
    h = c.request(CMD_WRITE, (1 << 64) - 512, 1024, payload=b"\x02" * 1024)
    c.expect_error(f"write with offset+length past 2^64 ({kind})", h, (errno.EINVAL, errno.ENOSPC))
    h = c.request(CMD_WRITE_ZEROES, EXPORT_SIZE - 512, 1024)
    c.expect_error(f"write_zeroes past the end ({kind})", h, (errno.ENOSPC, errno.EINVAL))
    h = c.request(CMD_TRIM, EXPORT_SIZE - 512, 1024)
    c.expect_error(f"trim past the end ({kind})", h, (errno.EINVAL,))
    check_stream_usable(c, f"range errors ({kind})")
    # The last in-range bytes were not touched by the refused write.
    error, data = c.read(EXPORT_SIZE - 512, 512)
    if error or data != tail:
        fail(f"refused write past the end changed the last 512 bytes ({kind})")
    c.close()


def case_unknown_command_and_flags(kd):
    c = connected(kd)
    h = c.request(99, 0, 0)
    c.expect_error("unknown command type 99", h, (errno.EINVAL,))
    check_stream_usable(c, "an unknown command")
    h = c.request(CMD_READ, 0, 4096, flags=0x8000)
    c.expect_error("read with unknown flag 0x8000", h, (errno.EINVAL,))
    h = c.request(CMD_WRITE, 0, 512, flags=0x0100, payload=b"\x03" * 512)
    c.expect_error("write with unknown flag 0x0100", h, (errno.EINVAL,))
    error, data = c.read(0, 4096, flags=CMD_FLAG_FUA)   # FUA is allowed on any command
    if error:
        fail(f"read with FUA failed with {error}")
    if data[:512] == b"\x03" * 512:
        fail("write with an unknown flag was applied")
    check_stream_usable(c, "unknown flags")
    c.close()


def case_flood_without_reading(kd):
    c = connected(kd)
    rss_before = kd.rss_bytes()
    requests = b"".join(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, i, (i % 192) * 256 * 1024,
                                    256 * 1024) for i in range(5000))
    c.sock.setblocking(False)
    sent = 0
    end = time.monotonic() + 10
    while sent < len(requests) and time.monotonic() < end:
        try:
            sent += c.sock.send(requests[sent:])
        except BlockingIOError:
            time.sleep(0.01)   # the server stopped reading requests: bounded in-flight work
    c.sock.setblocking(True)
    # While that connection sits on 5000 unread replies, others are served.
    check_healthy(kd, "5000 unread read requests (connection still open)")
    rss_peak = kd.rss_bytes()
    c.close()
    check_healthy(kd, "5000 unread read requests, then close")
    growth = max(rss_peak, kd.rss_bytes()) - rss_before
    if growth > 512 * M:
        fail(f"kelpied grew by {growth >> 20} MiB for one client that never reads replies")
    print(f"  flood: sent {sent}/{len(requests)} request bytes, RSS growth {growth >> 20} MiB")


def case_stall_and_half_close_mid_payload(kd):
    h = libnbd_handle(kd)
    offset = 8 * M
    h.pwrite(b"\xab" * 65536, offset)
    c = connected(kd)
    c.request(CMD_WRITE, offset, 65536, payload=b"\xcd" * 1000)
    check_healthy(kd, "a write stalled mid-payload (connection still open)")
    c.sock.shutdown(socket.SHUT_WR)
    if not c.is_closed_within(5):
        fail("server kept the connection after EOF in the middle of a write payload")
    c.close()
    if h.pread(65536, offset) != b"\xab" * 65536:
        fail("a write whose payload was cut short changed the data")
    h.shutdown()

    c = connected(kd)
    c.send(struct.pack(">IHH", REQUEST_MAGIC, 0, CMD_READ))   # half a request header
    c.sock.shutdown(socket.SHUT_WR)
    if not c.is_closed_within(5):
        fail("server kept the connection after EOF in the middle of a request header")
    c.close()


def case_bad_request_magic(kd):
    c = connected(kd)
    c.send(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 1, 0, 4096))
    if not c.is_closed_within(5):
        fail("bad request magic did not end the connection")
    c.close()


# --- structured replies and block status -----------------------------------------

def case_structured_read(kd):
    h = libnbd_handle(kd)
    h.zero(64 * 1024, 16 * M)
    h.pwrite(b"\x5a" * 5000, 16 * M + 100)
    h.shutdown()
    c = connected(kd, structured=True)
    # Spans never-written bytes, the written ones, and more never-written ones.
    error, data = c.read(16 * M, 64 * 1024)
    want = bytes(100) + b"\x5a" * 5000 + bytes(64 * 1024 - 5100)
    if error or data != want:
        fail(f"structured read returned wrong data (error {error})")
    check_stream_usable(c, "a structured read")
    c.close()


def case_libnbd_errors(kd):
    h = libnbd_handle(kd, strict=False)
    if not h.get_structured_replies_negotiated():
        fail("libnbd did not negotiate structured replies")
    for what, call, want in [
        ("read past the end", lambda: h.pread(1024, EXPORT_SIZE - 512), errno.EINVAL),
        ("write past the end", lambda: h.pwrite(b"\x01" * 1024, EXPORT_SIZE - 512), errno.ENOSPC),
        ("trim past the end", lambda: h.trim(1024, EXPORT_SIZE - 512), errno.EINVAL),
    ]:
        try:
            call()
            fail(f"libnbd {what} succeeded")
        except nbd.Error as e:
            if e.errnum != want:
                fail(f"libnbd {what}: {e.string} (errno {e.errnum}), want {errno.errorcode[want]}")
    if h.pread(4096, 0) is None:
        fail("libnbd read after errors failed")
    h.shutdown()


def block_status_extents(h, offset, length):
    """Merged (offset, length, flags) extents of base:allocation over a range."""
    extents = []
    position, end = offset, offset + length
    for _ in range(1000):
        if position >= end:
            break
        got = []

        def callback(metacontext, start, entries, err):
            if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
                got.extend(entries)
            return 0
        h.block_status(end - position, position, callback)
        if not got:
            fail(f"block status at {position} returned no extents")
        for i in range(0, len(got), 2):
            ext_len, flags = got[i], got[i + 1]
            ext_len = min(ext_len, end - position)
            if ext_len == 0:
                fail(f"block status at {position} made no progress")
            if extents and extents[-1][2] == flags:
                extents[-1][1] += ext_len
            else:
                extents.append([position, ext_len, flags])
            position += ext_len
            if position >= end:
                break
    return [tuple(e) for e in extents]


def case_block_status(kd):
    h = libnbd_handle(kd, name="bs")   # 16 MiB, 1 MiB objects
    if not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        fail("base:allocation was not negotiated")
    h.pwrite(b"\x42" * 4096, M + 100)   # data in object 1 only
    ext = block_status_extents(h, 0, 16 * M)
    want = [(0, M, 3), (M, M, 0), (2 * M, 14 * M, 3)]
    if ext != want:
        fail(f"block status over the VDI: {ext}, want {want}")
    ext = block_status_extents(h, M + 4096, 4096)
    if ext != [(M + 4096, 4096, 0)]:
        fail(f"block status inside the written object: {ext}")
    ext = block_status_extents(h, 5 * M, M)
    if ext != [(5 * M, M, 3)]:
        fail(f"block status on an unwritten object: {ext}")
    h.shutdown()


CASES = [
    ("unknown client flags", case_unknown_client_flags),
    ("bad option magic", case_bad_option_magic),
    ("option length 0xffffffff", case_huge_option_length),
    ("EXPORT_NAME with a 5000-byte name", case_long_name_export_name),
    ("GO with a 5000-byte name", case_long_name_go),
    ("GO name length beyond the option", case_go_name_length_beyond_option),
    ("unknown option 0x1234", case_unknown_option),
    ("STARTTLS without TLS", case_starttls_without_tls),
    ("LIST and INFO", case_list_and_info),
    ("EXPORT_NAME", case_export_name_ok),
    ("ABORT", case_abort),
    ("64 MiB write", case_huge_write),
    ("64 MiB read", case_huge_read),
    ("range errors, simple replies", lambda kd: case_range_errors(kd, structured=False)),
    ("range errors, structured replies", lambda kd: case_range_errors(kd, structured=True)),
    ("unknown command and flags", case_unknown_command_and_flags),
    ("bad request magic", case_bad_request_magic),
    ("5000 requests without reading replies", case_flood_without_reading),
    ("stall and half-close mid-payload", case_stall_and_half_close_mid_payload),
    ("structured read of data and holes", case_structured_read),
    ("libnbd error codes", case_libnbd_errors),
    ("libnbd block status", case_block_status),
]


def main():
    kd = Kelpied("malformed")
    kd.cli("vdi", "create", EXPORT, "64M")
    kd.cli("vdi", "create", "bs", "16M", "--object-size", "1M")
    check_healthy(kd, "startup")
    failures = []
    for name, case in CASES:
        try:
            case(kd)
            check_healthy(kd, name)
            print(f"ok    {name}")
        except (TestFailure, Closed, OSError, nbd.Error, struct.error) as e:
            failures.append(f"{name}: {type(e).__name__}: {e}")
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
            if not kd.alive():
                failures.append(f"{name}: kelpied died (exit {kd.proc.returncode}); restarted")
                kd.restart()
    if failures:
        fail(f"{len(failures)} of {len(CASES)} cases failed:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    run_main(main)
