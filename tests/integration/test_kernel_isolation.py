"""Kernel isolation on the real tritonserver: a hostile plugin's native calls are refused by Landlock.

``iso_hostile`` calls libc through ``ctypes`` (what the audit-hook guard cannot see): writes into
the system temp dir, the repository root, another plugin's folder and its own wrapper, a read of
that plugin's weights, a ``/bin/sh`` child writing outside, TCP connections to a port its contract
does not allow and to the one it does. Each answer says whether the call went through and with
which errno; the files must not exist afterwards and the refused listener must have seen no
connection. ``iso_victim`` and the reference ``scene_brightness`` keep answering throughout.

The machine running this suite has Landlock (``ruth_confine.landlock_abi``); the test fails, it does
not skip, where the kernel cannot confine.
"""

from __future__ import annotations

import errno
import io
import json
import shutil
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from ruthgen.writer import build_repository

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "testdata" / "plugins"
HOSTILE, VICTIM, REFERENCE = "iso_hostile__1.0.0", "iso_victim__1.0.0", "scene_brightness__1.0.0"
sys.path.insert(0, str(ROOT / "ruthgen" / "wrapper"))
import ruth_confine  # noqa: E402


class Listener:
    """A loopback TCP listener that records whether anything connected."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.5)
        self.port = self.socket.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                peer, _ = self.socket.accept()
            except TimeoutError:
                return count
            peer.close()
            count += 1


@pytest.fixture(scope="module")
def listeners():
    allowed, refused = Listener(), Listener()
    yield allowed, refused
    allowed.socket.close()
    refused.socket.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, module_triton_factory, listeners):
    allowed, _ = listeners
    root = tmp_path_factory.mktemp("isolation")
    models = root / "models"
    for name in ("iso_hostile", "iso_victim"):
        shutil.copytree(PLUGINS / name, models / name)
    shutil.copytree(ROOT / "ai" / "models" / "scene_brightness", models / "scene_brightness")
    contract = models / "iso_hostile" / "1.0.0" / "model.yaml"
    contract.write_text(contract.read_text().replace("127.0.0.1:9", f"127.0.0.1:{allowed.port}"))
    build_repository(models, root / "repository")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUTH_SCRATCH_DIR", str(root / "scratch"))
        patch.setenv("RUTH_ISOLATION", "kernel")  # a stub that cannot confine fails to load
        triton = module_triton_factory(root / "repository", startup_timeout_s=60)
    for name in (HOSTILE, VICTIM, REFERENCE):
        triton.load(name, timeout_s=120)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield root, triton, client
    client.close()


def infer(client, name: str, frame: np.ndarray, **parameters: Any) -> dict[str, Any]:
    tensor = grpcclient.InferInput("FRAME", list(frame.shape), "UINT8")
    tensor.set_data_from_numpy(frame)
    result = client.infer(name, [tensor], parameters=parameters or None, client_timeout=30)
    return json.loads(result.as_numpy("RESULT").reshape(-1)[0])


def attempt(client, action: str, target: str) -> dict[str, Any]:
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    return infer(client, HOSTILE, frame, camera_id=action, frame_id=target)


def neighbours_answer(client) -> None:
    assert infer(client, VICTIM, np.zeros((4, 4, 3), dtype=np.uint8)) == {"secret_bytes": 22}
    out = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 250, dtype=np.uint8)).save(out, format="JPEG")
    result = infer(client, REFERENCE, np.frombuffer(out.getvalue(), dtype=np.uint8))
    assert result["label"] == "bright"


def test_this_machine_can_confine():
    abi, why = ruth_confine.landlock_abi()
    assert abi >= 4, f"the suite's machine must have Landlock with network rules: ABI {abi} {why}"


def test_the_plugin_writes_in_its_scratch_folder_which_is_its_tmpdir_and_in_its_own_folder(served):
    root, _, client = served
    answer = attempt(client, "scratch", "")
    scratch = root / "scratch" / "iso_hostile" / "1.0.0"
    assert answer["done"] is True and answer["tmpdir"] == str(scratch)
    assert (scratch / "allowed.txt").read_text() == "escaped"
    own = root / "repository" / HOSTILE / "1" / "plugin" / "cache.txt"
    assert attempt(client, "write", str(own))["done"] is True and own.read_text() == "escaped"


WHERE = ["temp dir", "repository root", "another plugin's folder", "its own wrapper"]


@pytest.mark.parametrize("where", WHERE)
def test_native_writes_outside_the_plugin_and_scratch_folders_are_refused_by_the_kernel(served, where):
    root, _, client = served
    repository = root / "repository"
    target = {
        "temp dir": Path("/tmp") / f"ruth-escaped-{uuid.uuid4().hex}.txt",
        "repository root": repository / f"escaped-{uuid.uuid4().hex}.txt",
        "another plugin's folder": repository / VICTIM / "1" / "plugin" / "inference.py",
        "its own wrapper": repository / HOSTILE / "1" / "ruth_runtime.py",
    }[where]
    before = target.read_bytes() if target.exists() else None
    answer = attempt(client, "write", str(target))
    assert (answer["done"], answer["errno"]) == (False, errno.EACCES), answer
    assert (target.read_bytes() if target.exists() else None) == before
    neighbours_answer(client)


def test_a_native_read_of_another_plugins_weights_is_refused(served):
    root, _, client = served
    weights = root / "repository" / VICTIM / "1" / "plugin" / "weights" / "secret.bin"
    assert weights.exists()
    answer = attempt(client, "read", str(weights))
    assert (answer["done"], answer["errno"]) == (False, errno.EACCES), answer
    neighbours_answer(client)


def test_a_child_shell_cannot_write_outside_either(served, tmp_path):
    _, _, client = served
    target = tmp_path / "from-the-shell.txt"
    answer = attempt(client, "shell", str(target))
    assert answer["done"] is False, answer
    assert not target.exists()
    neighbours_answer(client)


def test_tcp_connect_reaches_the_allowed_port_only(served, listeners):
    _, _, client = served
    allowed, refused = listeners
    answer = attempt(client, "connect", str(refused.port))
    assert (answer["done"], answer["errno"]) == (False, errno.EACCES), answer
    assert refused.connections() == 0
    answer = attempt(client, "connect", str(allowed.port))
    assert (answer["done"], answer["errno"]) == (True, 0), answer
    assert allowed.connections() == 1


def test_every_stub_reports_kernel_isolation_on_tritons_metrics(served):
    _, triton, _ = served
    import httpx

    text = httpx.get(triton.metrics_url, timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("ruth_model_isolation{")]
    for name in (HOSTILE, VICTIM, REFERENCE):
        (line,) = [line for line in lines if f'triton_name="{name}"' in line]
        assert 'level="kernel"' in line, line
        assert float(line.rsplit(" ", 1)[1]) == ruth_confine.landlock_abi()[0]
    log = triton.log_path.read_text(errors="replace")
    assert "iso_hostile:1.0.0 isolation: kernel (Landlock ABI" in log
