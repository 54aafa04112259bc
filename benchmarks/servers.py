"""Real servers on 127.0.0.1 in child processes: uvicorn (ASGI) and gunicorn (WSGI workers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process serving ``benchmarks.apps``; ready when ``/`` answers 200."""

    def __init__(self, kind: str, env: dict[str, str], *, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        python = sys.executable
        if kind == "uvicorn":
            argv = [python, "-m", "uvicorn", "benchmarks.apps:asgi_server_app", "--factory",
                    "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                    "--no-access-log", "--workers", str(workers)]
        elif kind == "gunicorn":
            argv = [python, "-m", "gunicorn", "benchmarks.apps:wsgi_server_app()",
                    "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                    "--log-level", "warning"]
        else:
            raise ValueError(kind)
        # One hash seed for every server: with random ones each process gets its own dict
        # layouts, a per-process bias of a few % that interleaving cannot average out.
        self._proc = subprocess.Popen(
            argv, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "0", **env},
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}")
            try:
                if httpx.get(self.url + "/", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling a starting server; nothing to wait on instead
        self.close()
        raise RuntimeError("server did not start within 30 s")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and every process under it."""
        pending, total = [self._proc.pid], 0.0
        while pending:
            pid = pending.pop()
            try:
                # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the name.
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += (int(stat[11]) + int(stat[12])) / _CLOCK_TICKS
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue  # a process that just ended
        return total

    def close(self) -> None:
        """SIGTERM the server (graceful: the engine closes), SIGKILL after 15 s."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
