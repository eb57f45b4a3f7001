"""The sidecar as a child process (``python -m sidecar``), for ``ruthgen up`` and benchmarks.

    with SidecarProcess("127.0.0.1:8001", "model_repository", port=50051) as sidecar:
        print(sidecar.address)

`start` returns once the gRPC port is bound (port 0 picks a free one and reports it); the child
gets SIGTERM when its parent dies. `stop` sends SIGTERM, then kills after ``stop_timeout_s``.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from ruthgen.interface import bound_to_parent
from sidecar.errors import SidecarError

LOGGER = logging.getLogger(__name__)


class SidecarStartError(SidecarError):
    """The sidecar process exited or did not bind its port in time."""


class SidecarProcess:
    def __init__(
        self,
        triton_url: str,
        model_repository: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.triton_url = triton_url
        self.model_repository = Path(model_repository)
        self.host = host
        self.requested_port = port
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self, port_file: Path) -> list[str]:
        return [
            sys.executable, "-m", "sidecar",
            "--grpc-host", self.host,
            "--grpc-port", str(self.requested_port),
            "--port-file", str(port_file),
            "--triton-url", self.triton_url,
            "--model-repository", str(self.model_repository),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> SidecarProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="ruth-sidecar-")
        port_file = Path(self._tmp.name) / "port"
        log_path = self.log_path or Path(self._tmp.name) / "sidecar.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                bound_to_parent(self.command(port_file)), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while not port_file.exists():
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                reason = f"exited with code {code}" if code is not None else "did not start in time"
                raise SidecarStartError(f"the sidecar {reason}:\n{tail}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        LOGGER.info("sidecar (pid %d) serving on %s", self.process.pid, self.address)
        return self

    def stop(self) -> int | None:
        process, self.process = self.process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used."""
        if self.process is None:
            raise SidecarError("the sidecar is not running")
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def __enter__(self) -> SidecarProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
