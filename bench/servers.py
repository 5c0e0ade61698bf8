"""The servers under test, each as one or more processes pinned to one core.

* :class:`Unifrost` — ``python -m service serve`` on the memory broker, logging
  warnings and errors only (as nginx here: ``error_log warn``, ``access_log off``)
  to a file, as nginx's log goes to one.
* :class:`Nchan` — Debian's nginx with the nchan module, from
  ``bench/nchan.conf.tmpl`` in a private prefix directory.
* :class:`SseStarlette` — ``bench/starlette_app.py`` on uvicorn.

Each exposes the ports to stream from and publish to, how its streams are
opened (:class:`~bench.loadgen.StreamProtocol`), and the CPU seconds and memory
of *all* its processes (nginx master and workers included).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path

from bench.loadgen import StreamProtocol, sum_cpu_times

ROOT = Path(__file__).resolve().parent.parent
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nothing listens on (all held while choosing)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, from /proc/<pid>/smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def children_of(pid: int) -> list[int]:
    """Pids of ``pid``'s child processes (nginx's workers)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


class ServerSet(ABC):
    """One server under test: ``processes`` processes pinned to core ``cpu``.

    Args:
        processes: server processes (or nginx workers) to run; more than one
            only when the per-process open-file limit cannot hold every stream.
        cpu: the core to pin every process to (None: no pinning).
        fd_limit: open files each process may use.
    """

    name = ""
    protocol: StreamProtocol
    #: Whether a dropped stream can resume with Last-Event-ID.
    resumable = False

    def __init__(self, processes: int, cpu: int | None, fd_limit: int) -> None:
        self.processes = processes
        self.cpu = cpu
        self.fd_limit = fd_limit
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stream_ports: list[int] = []
        self.publish_port = 0
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        os.chmod(self.workdir, 0o755)  # nginx workers run as an unprivileged user

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run under ``taskset -c <cpu>`` when pinned."""
        if self.cpu is None:
            return argv
        return ["taskset", "-c", str(self.cpu), *argv]

    @abstractmethod
    def start(self) -> None:
        """Start every process; returns once each accepts connections."""

    def pids(self) -> list[int]:
        """Every process of this server (taskset execs the server: same pid)."""
        return [proc.pid for proc in self.procs]

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds over every process."""
        return sum_cpu_times(self.pids())

    def memory_kib(self) -> tuple[int, int]:
        """(RSS, PSS) summed over every process, KiB."""
        rss = pss = 0
        for pid in self.pids():
            r, p = memory_kib(pid)
            rss += r
            pss += p
        return rss, pss

    def problems(self) -> list[str]:
        """Warnings the server logged, for the report (first few)."""
        return []

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ServerSet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Floor(ServerSet):
    """One of the do-nothing servers of ``bench/floors.py`` (per-layer costs)."""

    name = "floor"
    protocol = StreamProtocol(path="/events?topic={topic}", resume_path="/events?topic={topic}")

    def __init__(self, kind: str, processes: int, cpu: int | None, fd_limit: int) -> None:
        super().__init__(processes, cpu, fd_limit)
        self.kind = kind

    def start(self) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "bench.floors", self.kind, str(port)]
        proc = subprocess.Popen(self.command(argv), cwd=ROOT, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_for_port(port, proc, f"floor {self.kind}")
        self.stream_ports = [port]
        self.publish_port = port


#: The environment unifrost is benchmarked with (memory broker, auto-created
#: consumers subscribing themselves with ``?topics=``).
UNIFROST_ENV = {
    "UNIFROST_BROKER": "memory://",
    "UNIFROST_LOG__FORMAT": "json",
    # As nginx's `error_log warn; access_log off`: no line per request on either side
    # (`python -m bench.suite --log-level info` measures unifrost with them).
    "UNIFROST_LOG__LEVEL": "warning",
    "UNIFROST_AUTO_CREATE_CONSUMERS": "true",
    "UNIFROST_CLIENT_SUBSCRIPTIONS__ENABLED": "true",
    "UNIFROST_CLIENT_SUBSCRIPTIONS__ALLOW": "*",
    "UNIFROST_MAX_WRITE_BUFFER": "16MiB",
    "UNIFROST_HEARTBEAT": "60s",
    "UNIFROST_CONSUMER_TTL": "300s",
    "UNIFROST_BUFFER__MAX_MESSAGES": "1000",
}


_PROBLEM = re.compile(rb'"level": ?"(?:warning|error|critical)"')


class _LogFile:
    """unifrost's JSON log, written to a file and searched for warnings after the run.

    A file rather than a pipe read by a thread of the benchmark: such a thread
    would wake for every write and take the interpreter lock from the publisher
    running in the same process, charging unifrost's log lines to its latency.
    nginx writes its log to a file too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def problems(self) -> tuple[int, list[str]]:
        """How many warning/error lines there are, and the first few."""
        count = 0
        samples: list[str] = []
        with open(self.path, "rb") as log:
            for line in log:
                if _PROBLEM.search(line):
                    count += 1
                    if len(samples) < 5:
                        samples.append(line.decode(errors="replace")[:300])
        return count, samples


class Unifrost(ServerSet):
    """unifrost on the memory broker, configured for the benchmark scenarios."""

    name = "unifrost"
    resumable = True
    protocol = StreamProtocol(
        path="/events?topics={topic}",
        resume_path="/events?id={consumer_id}",
        consumer_id_pattern=rb'consumer_id\\":\\"([A-Za-z0-9_-]+)',
    )

    def __init__(self, processes: int, cpu: int | None, fd_limit: int) -> None:
        super().__init__(processes, cpu, fd_limit)
        self.logs: list[_LogFile] = []
        self.admin_ports: list[int] = []

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNIFROST_")}
        env.update(UNIFROST_ENV)
        for n in range(self.processes):
            stream_port, admin_port = free_ports(2)
            argv = [sys.executable, "-m", "service", "serve"]
            argv += ["--listen", f"127.0.0.1:{stream_port}"]
            argv += ["--admin-listen", f"127.0.0.1:{admin_port}"]
            log = _LogFile(self.workdir / f"stdout-{n}.log")
            stderr_path = self.workdir / f"stderr-{n}.log"
            with open(log.path, "wb") as stdout, open(stderr_path, "wb") as stderr:
                proc = subprocess.Popen(
                    self.command(argv), stdout=stdout, stderr=stderr, env=env, cwd=ROOT
                )
            self.procs.append(proc)
            self.logs.append(log)
            self.stream_ports.append(stream_port)
            self.admin_ports.append(admin_port)
        for proc, stream_port, admin_port in zip(
            self.procs, self.stream_ports, self.admin_ports, strict=True
        ):
            wait_for_port(stream_port, proc, "unifrost")
            wait_for_port(admin_port, proc, "unifrost")
        self.publish_port = self.admin_ports[0]

    def problems(self) -> list[str]:
        found = [log.problems() for log in self.logs]
        count = sum(n for n, _samples in found)
        samples = [s for _n, samples in found for s in samples][:3]
        return [f"{count} warning/error log lines", *samples] if count else []


class Nchan(ServerSet):
    """nginx + nchan; ``processes`` is the number of nginx workers."""

    name = "nchan"
    resumable = True
    protocol = StreamProtocol(path="/events?topic={topic}", resume_path="/events?topic={topic}")
    template = Path(__file__).with_name("nchan.conf.tmpl")
    #: Messages each channel keeps, and for how long: bursts and reconnect
    #: windows must fit (nchan's default buffer is 10 messages).
    buffer_length = 1000
    message_timeout = "1h"
    shm_size = "512m"

    def __init__(self, processes: int, cpu: int | None, fd_limit: int) -> None:
        super().__init__(processes, cpu, fd_limit)
        self._pids: list[int] = []

    @staticmethod
    def module_path() -> str:
        for candidate in (
            "/usr/lib/nginx/modules/ngx_nchan_module.so",
            "/usr/share/nginx/modules/ngx_nchan_module.so",
        ):
            if os.path.exists(candidate):
                return candidate
        raise RuntimeError("nchan module not found (bench/ensure-peers.sh installs it)")

    @staticmethod
    def binary() -> str:
        found = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(found):
            raise RuntimeError("nginx not found (bench/ensure-peers.sh installs it)")
        return found

    def config(self, port: int) -> str:
        return string.Template(self.template.read_text()).substitute(
            module=self.module_path(),
            workers=self.processes,
            nofile=self.fd_limit,
            connections=self.fd_limit - 200,
            prefix=self.workdir,
            port=port,
            reuseport=" reuseport" if self.processes > 1 else "",
            shm_size=self.shm_size,
            buffer_length=self.buffer_length,
            message_timeout=self.message_timeout,
        )

    def start(self) -> None:
        port = free_port()
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config(port))
        with open(self.workdir / "stderr.log", "wb") as log:
            proc = subprocess.Popen(
                self.command([self.binary(), "-p", str(self.workdir), "-c", str(conf)]),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        wait_for_port(port, proc, "nginx")
        deadline = time.monotonic() + _START_TIMEOUT
        while len(children_of(proc.pid)) < self.processes and time.monotonic() < deadline:
            time.sleep(0.05)
        self._pids = [proc.pid, *children_of(proc.pid)]
        self.stream_ports = [port]
        self.publish_port = port

    def pids(self) -> list[int]:
        return self._pids

    def problems(self) -> list[str]:
        try:
            lines = (self.workdir / "error.log").read_text().splitlines()
        except OSError:
            return []
        lines = [line for line in lines if "[notice]" not in line]
        return [f"{len(lines)} error.log lines", *lines[:3]] if lines else []

    def stop(self) -> None:
        # The master stops its workers; a worker it left behind is killed too
        # (checked by name first: a pid may be reused once its process is gone).
        workers = self._pids[1:]
        super().stop()
        for pid in workers:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if cmdline.read().startswith(b"nginx: worker"):
                    os.kill(pid, signal.SIGKILL)


class SseStarlette(ServerSet):
    """``bench/starlette_app.py`` on uvicorn (uvloop and httptools when installed)."""

    name = "sse-starlette"
    protocol = StreamProtocol(path="/events?topic={topic}", separator=b"\r\n\r\n")

    def start(self) -> None:
        for n in range(self.processes):
            port = free_port()
            argv = [sys.executable, "-m", "uvicorn", "bench.starlette_app:app"]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--backlog", "4096"]
            argv += ["--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "600"]
            with open(self.workdir / f"stderr-{n}.log", "wb") as log:
                proc = subprocess.Popen(
                    self.command(argv), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
                )
            self.procs.append(proc)
            wait_for_port(port, proc, "uvicorn")
            self.stream_ports.append(port)
        self.publish_port = self.stream_ports[0]

    def problems(self) -> list[str]:
        lines: list[str] = []
        for path in sorted(self.workdir.glob("stderr-*.log")):
            lines += [line for line in path.read_text().splitlines() if line.strip()]
        return [f"{len(lines)} log lines", *lines[:3]] if lines else []


class PythonFloorServer(ServerSet):
    """``bench/python_floor.py``: the least a Python SSE server can do per delivery."""

    name = "python-floor"
    protocol = StreamProtocol(path="/events?topic={topic}")

    def start(self) -> None:
        for _ in range(self.processes):
            port = free_port()
            argv = [sys.executable, "-m", "bench.python_floor", str(port)]
            proc = subprocess.Popen(self.command(argv), cwd=ROOT, stdout=subprocess.DEVNULL)
            self.procs.append(proc)
            wait_for_port(port, proc, "python-floor")
            self.stream_ports.append(port)
        self.publish_port = self.stream_ports[0]


SERVERS: dict[str, type[ServerSet]] = {
    cls.name: cls for cls in (Unifrost, Nchan, SseStarlette, PythonFloorServer)
}

_VERSION = re.compile(r"nginx/(\S+)")


def nginx_version() -> str:
    try:
        out = subprocess.run([Nchan.binary(), "-v"], capture_output=True, text=True).stderr
    except (OSError, RuntimeError):
        return "missing"
    found = _VERSION.search(out)
    return found.group(1) if found else out.strip()
