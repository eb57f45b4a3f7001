"""`EmbeddedTriton`: the real tritonserver of the ``nvidia-pytriton`` wheel as a child process.

    with EmbeddedTriton("model_repository", load_models=["fall_detection__1.0.0"]) as triton:
        client = tritonclient.grpc.InferenceServerClient(triton.grpc_url)

The server binds loopback by default, on the given ports or on free ones, runs with
`ruthgen.embedded.flags.COMMON_FLAGS`, and is ready when `start()` returns. `stop()` sends it
SIGINT, waits for it, then kills its process group, its leftover stubs and its shared-memory
regions (only its own: several servers may run side by side). Signal handling belongs to the
program that owns the process (see `ruthgen.embedded.signals`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ruthgen.children import bound_to_parent
from ruthgen.embedded import cleanup
from ruthgen.embedded.distribution import (
    check_stub_runtime,
    find_distribution,
    prepare_backends,
    server_environment,
)
from ruthgen.embedded.errors import EmbeddedTritonError, TritonModelError, TritonStartError
from ruthgen.embedded.flags import server_args

LOGGER = logging.getLogger(__name__)

# tritonserver 2.51 launches each stub with an unquoted `bash -c`: paths must be shell-safe.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")
_PORT_IN_USE = re.compile(r"already in use|address in use|failed to start .* service", re.I)
_PORT_ATTEMPTS = 3


class EmbeddedTriton:
    """One tritonserver process with explicit model control (library API, no signal handling).

    ``load_models``: names to load at start, or ``"*"`` for all. Ports left ``None`` are chosen
    free. ``log_path`` receives the server's stdout and stderr (default: in the working folder,
    removed by `stop`). ``startup_timeout_s`` bounds `start` (startup models included);
    ``exit_timeout_s`` is how long the server waits for its models at shutdown before `stop`
    kills what is left.
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        host: str = "127.0.0.1",
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        load_models: Iterable[str] | str = (),
        log_path: str | Path | None = None,
        workdir: str | Path | None = None,
        startup_timeout_s: float = 60.0,
        exit_timeout_s: int = 10,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        self._requested_ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.ports: dict[str, int] = {}
        self.load_models = load_models if isinstance(load_models, str) else list(load_models)
        self._log_path = Path(log_path).resolve() if log_path else None
        self._workdir_arg = Path(workdir).resolve() if workdir else None
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = list(extra_args)
        self.shm_prefix = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> EmbeddedTriton:
        """Start the server and return once it is ready; raise `TritonStartError` otherwise."""
        with self._lock:
            if self._process is not None:
                raise EmbeddedTritonError("this EmbeddedTriton is already started")
            _check_safe_path(self.model_repository, "model repository")
            if not self.model_repository.is_dir():
                raise TritonStartError(f"model repository {self.model_repository} is not a folder")
            dist = find_distribution()
            env = server_environment(dist)
            check_stub_runtime(env)
            self._workdir = self._workdir_arg or Path(tempfile.mkdtemp(prefix="ruth-triton-"))
            _check_safe_path(self._workdir, "working folder")
            try:
                backends = prepare_backends(dist, self._workdir)
                self._start_with_retries(dist.binary, backends, env)
            except BaseException:
                self._remove_workdir()
                raise
            atexit.register(self.stop)
            return self

    def stop(self) -> int | None:
        """Stop the server and everything it left behind; return its exit code (None if not started)."""
        with self._lock:
            atexit.unregister(self.stop)
            if self._process is None:
                return None
            returncode = self._terminate(self._process)
            self._process = None
            self._remove_workdir()
            return returncode

    def wait(self) -> int:
        """Block until the server exits (e.g. killed from outside); return its exit code."""
        if self._process is None:
            raise EmbeddedTritonError("the server is not started")
        code = _exit_code(self._process, timeout_s=-1)
        assert code is not None
        return code

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- where it is -----------------------------------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    @property
    def running(self) -> bool:
        return self._process is not None and _exit_code(self._process) is None

    @property
    def grpc_url(self) -> str:
        """``host:port``, as `tritonclient.grpc.InferenceServerClient` takes it."""
        return f"{_client_host(self.host)}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.ports['metrics']}/metrics"

    @property
    def log_path(self) -> Path:
        if self._log_path is not None:
            return self._log_path
        if self._workdir is None:
            raise EmbeddedTritonError("the server is not started")
        return self._workdir / "tritonserver.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, EmbeddedTritonError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- repository API --------------------------------------------------------------------------

    def is_ready(self) -> bool:
        try:
            return bool(self.client().is_server_ready(client_timeout=2.0))
        except Exception:  # tritonclient raises its own exception and grpc's
            return False

    def repository_index(self) -> list[dict[str, str]]:
        """``[{name, version, state, reason}]`` for every model of the repository."""
        index = self.client().get_model_repository_index(as_json=True)
        return [
            {key: str(model.get(key, "")) for key in ("name", "version", "state", "reason")}
            for model in index.get("models", [])
        ]

    def load(self, name: str, timeout_s: float | None = None) -> None:
        """Load (or reload) one model; raise `TritonModelError` with Triton's reason on failure."""
        self._repository_call("load", name, timeout_s)

    def unload(self, name: str, timeout_s: float | None = None, wait_s: float = 30.0) -> None:
        """Unload one model and wait (up to ``wait_s``) until Triton has finished unloading it.

        Triton answers the unload call at once; the model stays UNLOADING while its instances
        finish (forever for a hung instance, hence the bound).
        """
        self._repository_call("unload", name, timeout_s)
        deadline = time.monotonic() + wait_s
        while True:
            states = {m["state"] for m in self.repository_index() if m["name"] == name}
            if not states & {"UNLOADING", "READY"}:
                return
            if time.monotonic() > deadline:
                still = "/".join(sorted(states))
                raise TritonModelError(f"model {name!r} is still {still} after {wait_s:g} s")
            time.sleep(0.05)

    def client(self) -> Any:
        """A `tritonclient.grpc.InferenceServerClient` on this server (shared, closed by `stop`)."""
        if self._process is None:
            raise EmbeddedTritonError("the server is not started")
        if self._client is None:
            import tritonclient.grpc as grpcclient

            self._client = grpcclient.InferenceServerClient(self.grpc_url)
        return self._client

    def _repository_call(self, action: str, name: str, timeout_s: float | None) -> None:
        from tritonclient.utils import InferenceServerException

        method = self.client().load_model if action == "load" else self.client().unload_model
        try:
            method(name, client_timeout=timeout_s)
        except InferenceServerException as e:
            raise TritonModelError(f"{action} of model {name!r} failed: {e.message()}") from e

    # --- internals -------------------------------------------------------------------------------

    def _start_with_retries(self, binary: Path, backends: Path, env: dict[str, str]) -> None:
        auto_ports = any(port is None for port in self._requested_ports.values())
        attempts = _PORT_ATTEMPTS if auto_ports else 1
        for attempt in range(1, attempts + 1):
            self.ports = _choose_ports(self.host, self._requested_ports)
            self.shm_prefix = cleanup.new_shm_prefix()
            try:
                self._launch(binary, backends, env)
                self._wait_ready(time.monotonic() + self.startup_timeout_s)
                LOGGER.info("tritonserver ready: grpc %s, http %s (pid %d)",
                            self.grpc_url, self.http_url, self._process.pid)  # type: ignore[union-attr]
                return
            except TritonStartError as e:
                port_taken = bool(_PORT_IN_USE.search(str(e)))
                if self._process is not None:
                    self._terminate(self._process)
                    self._process = None
                if not (port_taken and attempt < attempts):
                    raise
                LOGGER.warning("a port chosen for tritonserver was taken meanwhile; retrying on others")

    def _launch(self, binary: Path, backends: Path, env: dict[str, str]) -> None:
        args = server_args(
            self.model_repository, backends, self.host,
            http_port=self.ports["http"], grpc_port=self.ports["grpc"], metrics_port=self.ports["metrics"],
            load_models=self.load_models, exit_timeout_s=self.exit_timeout_s,
            shm_region_prefix=self.shm_prefix, extra=self.extra_args,
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        LOGGER.debug("starting %s %s", binary, " ".join(args))
        command = [str(binary), *args]
        if threading.current_thread() is threading.main_thread():
            command = bound_to_parent(command)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=self._workdir, start_new_session=True,
            )

    def _wait_ready(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        ready_url = f"{self.http_url}/v2/health/ready"
        while True:
            if (code := _exit_code(process)) is not None:
                raise TritonStartError(
                    f"tritonserver exited with code {code} before it was ready "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            if _http_ok(ready_url) and self.is_ready():
                return
            if time.monotonic() > deadline:
                raise TritonStartError(
                    f"tritonserver was not ready within {self.startup_timeout_s:g} s "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _terminate(self, process: subprocess.Popen[bytes]) -> int:
        """SIGINT, wait, then SIGKILL the process group; then reap this server's stubs and regions."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if _exit_code(process) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)  # not send_signal(): it would reap the process
            if _exit_code(process, self.exit_timeout_s + 5) is None:
                LOGGER.warning("tritonserver (pid %d) did not stop in time: killing it", process.pid)
        # Still unreaped, so the group id cannot have been reused: kill whatever is left in it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        returncode = process.wait()
        if self.shm_prefix:
            cleanup.reap_leftovers(self.shm_prefix)
        LOGGER.info("tritonserver (pid %d) stopped with code %d", process.pid, returncode)
        return returncode

    def _remove_workdir(self) -> None:
        if self._workdir is not None and self._workdir_arg is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None if self._workdir_arg is None else self._workdir


def _exit_code(process: subprocess.Popen[bytes], timeout_s: float = 0.0) -> int | None:
    """The exit code once the process has exited (None before), WITHOUT reaping it.

    While unreaped, its pid keeps naming its process group, so killing that group is safe.
    ``timeout_s`` < 0 waits for as long as it takes.
    """
    if process.returncode is not None:
        return process.returncode
    deadline = time.monotonic() + timeout_s
    options = os.WEXITED | os.WNOWAIT | (0 if timeout_s < 0 else os.WNOHANG)
    while True:
        try:
            info = os.waitid(os.P_PID, process.pid, options)
        except ChildProcessError:  # reaped elsewhere
            return process.poll()
        if info is not None and info.si_pid == process.pid:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _choose_ports(host: str, requested: dict[str, int | None]) -> dict[str, int]:
    """The requested ports, and free ones (bound together, then released) for those left None."""
    missing = [name for name, port in requested.items() if port is None]
    sockets = []
    try:
        for _ in missing:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_client_host(host), 0))
            sockets.append(sock)
        free = iter(sock.getsockname()[1] for sock in sockets)
        return {name: port if port is not None else next(free) for name, port in requested.items()}
    finally:
        for sock in sockets:
            sock.close()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


def _check_safe_path(path: Path, what: str) -> None:
    if not _SAFE_PATH.match(str(path)):
        raise TritonStartError(
            f"the {what} path {str(path)!r} holds characters tritonserver 2.51 cannot pass to its "
            "Python stubs (it launches them through an unquoted bash -c): use [A-Za-z0-9_./+-] only"
        )

