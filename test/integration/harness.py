"""Shared helpers for Python integration tests; the Python twin of harness.sh.

Run tests with /usr/bin/python3: it is the interpreter that has the `nbd`
module (python3-libnbd). CTest sets KELPIE_BIN_DIR and KELPIE_TEST_DIR.

    kd = Kelpied("name")       starts a daemon with its own data dir, free NBD and
                               admin ports and a unix socket; returns once the
                               admin port answers. Every daemon is killed at exit.
    kd.stop() / kd.kill9() / kd.restart()
    kd.alive()                 True while the process has not exited.
    kd.cli(*args)              runs the kelpie CLI against it; returns stdout,
                               raises TestFailure on a non-zero exit.
    kd.uri(name) / kd.unix_uri(name)
    poll_until(deadline_s, predicate, what)  retries until predicate() is true.
    fail(msg)                  raises TestFailure; run_main() turns it into exit 1.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

BIN_DIR = os.environ.get("KELPIE_BIN_DIR") or sys.exit("KELPIE_BIN_DIR: set by CTest")
TEST_DIR = os.environ.get("KELPIE_TEST_DIR", "/tmp/kelpie-test")
KELPIED = os.path.join(BIN_DIR, "kelpied")
KELPIE = os.path.join(BIN_DIR, "kelpie")

_PR_SET_PDEATHSIG = 1
_started = []


class TestFailure(Exception):
    pass


def fail(msg):
    raise TestFailure(msg)


def poll_until(deadline_s, predicate, what):
    """Retries predicate() every 50 ms until it returns true or deadline_s passes."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            if predicate():
                return
        except Exception:  # the condition is not reached yet; keep polling
            pass
        if time.monotonic() >= end:
            fail(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.05)


def free_port():
    """A port below the ephemeral range, never handed out twice in a run (free_port.py)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "free_port.py")
    return int(subprocess.check_output([sys.executable, script], text=True).strip())


def _die_with_parent():
    # If the test runner is killed (CTest timeout), take the daemon with it.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Kelpied:
    def __init__(self, name, *extra_flags):
        os.makedirs(TEST_DIR, exist_ok=True)
        self.data = os.path.join(TEST_DIR, name + ".data")
        subprocess.run(["rm", "-rf", self.data, self.data + ".log"], check=True)
        self.nbd_port = free_port()
        self.admin = f"127.0.0.1:{free_port()}"
        self.sock = os.path.join(TEST_DIR, name + ".sock")
        self.log = self.data + ".log"
        self.flags = list(extra_flags)
        self.proc = None
        self.restart()

    @property
    def pid(self):
        return self.proc.pid

    def restart(self):
        cmd = [KELPIED, "--data", self.data,
               "--nbd-listen", f"127.0.0.1:{self.nbd_port}", "--nbd-unix", self.sock,
               "--admin-listen", self.admin, "--log-file", self.log] + self.flags
        self.proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent)
        _started.append(self.proc)

        def answers():
            if not self.alive():
                fail(f"kelpied exited with {self.proc.returncode} while starting (log: {self.log})")
            return subprocess.run([KELPIE, "--addr", self.admin, "node", "info"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        try:
            poll_until(20, answers, f"kelpied to answer on {self.admin}")
        except TestFailure as e:
            if not self.alive():
                raise TestFailure(f"kelpied exited with {self.proc.returncode} while starting (log: {self.log})") from e
            raise

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s=30):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            fail(f"kelpied did not exit within {timeout_s}s of SIGTERM")

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)

    def cli(self, *args):
        r = subprocess.run([KELPIE, "--addr", self.admin] + [str(a) for a in args],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"kelpie {' '.join(map(str, args))} exited {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def uri(self, name):
        return f"nbd://127.0.0.1:{self.nbd_port}/{name}"

    def unix_uri(self, name):
        return f"nbd+unix:///{name}?socket={self.sock}"

    def rss_bytes(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def _kill_all():
    for p in _started:
        if p.poll() is None:
            p.kill()
            p.wait()


def run_main(main):
    """Runs main(), prints PASS or the failure, kills every daemon, exits 0 or 1."""
    code = 0
    try:
        main()
        print("PASS")
    except TestFailure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        code = 1
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        _kill_all()
    sys.exit(code)
