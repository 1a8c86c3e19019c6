"""A hand-driven NBD client for tests: every byte on the wire is chosen by the test.

Follows NetworkBlockDevice/nbd doc/proto.md. RawClient speaks fixed-newstyle
negotiation and transmission with simple or structured replies, checks every
magic, handle and length it receives, and raises Closed when the server hangs up.
"""

import errno
import socket
import struct
import time

from harness import fail

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 6, 7, 8

REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP = 0x80000001
REP_ERR_POLICY = 0x80000002
REP_ERR_INVALID = 0x80000003
REP_ERR_UNKNOWN = 0x80000006
REP_ERR_TOO_BIG = 0x80000009
INFO_EXPORT = 0

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE = 0, 1, 2, 3, 4, 5
CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 6, 7
CMD_FLAG_FUA = 1

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE = 0, 1, 2
REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET = 0x8001, 0x8002

IO_TIMEOUT_S = 10


class Closed(Exception):
    """The server closed the connection."""


class RawClient:
    """A hand-driven NBD client: every byte on the wire is chosen by the test."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.next_handle = 1
        self.structured = False
        self.commands = {}   # handle -> command type, for the reply rules

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        chunks, left = [], n
        while left:
            try:
                chunk = self.sock.recv(min(left, 1 << 20))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed(f"server closed the connection ({n - left}/{n} bytes read)")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def is_closed_within(self, timeout_s):
        """Reads and discards until EOF; True if EOF came within timeout_s."""
        end = time.monotonic() + timeout_s
        self.sock.settimeout(0.2)
        discarded = 0
        try:
            while time.monotonic() < end and discarded < 256 << 20:
                try:
                    chunk = self.sock.recv(1 << 20)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    return True
                if not chunk:
                    return True
                discarded += len(chunk)
            return False
        finally:
            self.sock.settimeout(IO_TIMEOUT_S)

    # --- handshake and options -------------------------------------------------

    def handshake(self, client_flags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
        magic, opt_magic, flags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT:
            fail(f"bad server greeting {magic:#x} {opt_magic:#x}")
        if not flags & FLAG_FIXED_NEWSTYLE:
            fail(f"server does not offer fixed newstyle (flags {flags:#x})")
        self.server_flags = flags
        self.send(struct.pack(">I", client_flags))

    def send_option(self, opt, data=b"", length=None, magic=IHAVEOPT):
        length = len(data) if length is None else length
        self.send(struct.pack(">QII", magic, opt, length) + data)

    def read_option_reply(self, opt):
        magic, reply_opt, reply_type, length = struct.unpack(">QIII", self.recv_exact(20))
        if magic != OPT_REPLY_MAGIC:
            fail(f"option reply magic {magic:#x}")
        if reply_opt != opt:
            fail(f"option reply for option {reply_opt:#x}, sent {opt:#x}")
        if length > 64 * 1024:
            fail(f"option reply of {length} bytes")
        return reply_type, self.recv_exact(length)

    def go(self, name, opt=OPT_GO):
        """Sends GO (or INFO); returns (size, transmission flags) or the error reply type."""
        raw = name.encode()
        self.send_option(opt, struct.pack(">I", len(raw)) + raw + struct.pack(">H", 0))
        size = tflags = None
        for _ in range(64):
            reply_type, data = self.read_option_reply(opt)
            if reply_type == REP_INFO:
                (info,) = struct.unpack(">H", data[:2])
                if info == INFO_EXPORT:
                    size, tflags = struct.unpack(">QH", data[2:12])
            elif reply_type == REP_ACK:
                if size is None:
                    fail("GO acknowledged without NBD_INFO_EXPORT")
                return size, tflags
            elif reply_type & 0x80000000:
                return reply_type
            else:
                fail(f"unexpected reply type {reply_type:#x} to GO")
        fail("more than 64 replies to one GO")

    def go_ok(self, name, size):
        """GO that must succeed with the given export size."""
        result = self.go(name)
        if not isinstance(result, tuple):
            fail(f"GO {name!r} failed with {result:#x}")
        if result[0] != size:
            fail(f"GO {name!r} reports size {result[0]}, want {size}")

    def negotiate_structured(self):
        self.send_option(OPT_STRUCTURED_REPLY)
        reply_type, _ = self.read_option_reply(OPT_STRUCTURED_REPLY)
        if reply_type != REP_ACK:
            fail(f"STRUCTURED_REPLY answered {reply_type:#x}, want ACK")
        self.structured = True

    # --- transmission ----------------------------------------------------------

    def request(self, cmd, offset, length, flags=0, payload=b""):
        handle = self.next_handle
        self.next_handle += 1
        self.commands[handle] = cmd
        self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, handle, offset, length) + payload)
        return handle

    def reply(self, handle, read_length=0):
        """Reads one reply (all chunks if structured); returns (errno, data).

        With structured replies on, a READ must get a structured reply (even its
        error); other commands may get either kind.
        """
        magic, = struct.unpack(">I", self.recv_exact(4))
        if magic == STRUCTURED_REPLY_MAGIC and self.structured:
            return self.structured_reply(handle, read_length)
        if magic != SIMPLE_REPLY_MAGIC:
            fail(f"reply magic {magic:#x}")
        error, reply_handle = struct.unpack(">IQ", self.recv_exact(12))
        if self.structured and self.commands.get(reply_handle) == CMD_READ:
            fail(f"simple reply (error {error}) to a READ after structured replies were negotiated")
        if reply_handle != handle:
            fail(f"reply for handle {reply_handle}, want {handle}")
        data = self.recv_exact(read_length) if error == 0 and read_length else b""
        return error, data

    def structured_reply(self, handle, read_length):
        data = bytearray(read_length)
        error = 0
        for chunk_index in range(100000):
            if chunk_index:
                magic, = struct.unpack(">I", self.recv_exact(4))
                if magic != STRUCTURED_REPLY_MAGIC:
                    fail(f"reply magic {magic:#x} in the middle of a structured reply")
            flags, rtype, reply_handle, length = struct.unpack(">HHQI", self.recv_exact(16))
            if reply_handle != handle:
                fail(f"chunk for handle {reply_handle}, want {handle}")
            if length > 33 << 20:
                fail(f"chunk of {length} bytes")
            body = self.recv_exact(length)
            if rtype == REPLY_TYPE_OFFSET_DATA:
                (offset,) = struct.unpack(">Q", body[:8])
                self.place(data, offset, body[8:])
            elif rtype == REPLY_TYPE_OFFSET_HOLE:
                offset, hole = struct.unpack(">QI", body[:12])
                self.place(data, offset, bytes(hole))
            elif rtype in (REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET):
                error, = struct.unpack(">I", body[:4])
                if error == 0:
                    fail("error chunk with errno 0")
            elif rtype != REPLY_TYPE_NONE:
                fail(f"unexpected chunk type {rtype:#x}")
            if flags & REPLY_FLAG_DONE:
                return error, bytes(data) if error == 0 else b""
        fail("reply without a DONE chunk")

    def place(self, data, offset, chunk):
        start = offset - self.read_offset
        if start < 0 or start + len(chunk) > len(data):
            fail(f"chunk at {offset}+{len(chunk)} outside the read")
        data[start:start + len(chunk)] = chunk

    def read(self, offset, length, flags=0):
        self.read_offset = offset
        return self.reply(self.request(CMD_READ, offset, length, flags), length)

    def expect_error(self, what, handle, allowed, read_length=0):
        error, _ = self.reply(handle, read_length)
        if error not in allowed:
            names = "/".join(errno.errorcode.get(e, str(e)) for e in allowed)
            fail(f"{what}: got error {error} ({errno.errorcode.get(error, '?')}), want {names}")
        return error
