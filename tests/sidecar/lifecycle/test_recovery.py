from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sidecar.recovery import StubKiller, is_dead_stub_error

STUB = "/opt/tritonserver/backends/python/triton_python_backend_stub"


def _proc(root: Path, pid: int, ppid: int, argv: list[str], state: str = "S") -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (folder / "stat").write_text(f"{pid} (some (odd) name) {state} {ppid} 1 1 0 -1\n")


def _tree(root: Path) -> None:
    _proc(root, 100, 1, ["/x/tritonserver", "--model-repository", "/r"])
    args = ["/r/hang__1.0.0/1/model.py", "shm", "1", "2", "100", "/lib", "h"]
    _proc(root, 101, 100, [STUB, *args, "hang__1.0.0_0_0"])
    _proc(root, 102, 100, [STUB, *args, "hang__1.0.0_0_1"])
    _proc(root, 103, 100, [STUB, "/r/hang__1.0.0__b/1/model.py", "x", "hang__1.0.0__b_0_0"])  # the other slot
    _proc(root, 104, 100, [STUB, "/r/other__1.0.0/1/model.py", "x", "other__1.0.0_0_0"])
    _proc(root, 200, 1, ["/y/tritonserver"])  # somebody else's server
    _proc(root, 201, 200, [STUB, "/r2/hang__1.0.0/1/model.py", "x", "hang__1.0.0_0_0"])
    _proc(root, 105, 100, ["/bin/bash", "-c", "hang__1.0.0_0_0"])  # not a stub


def test_is_dead_stub_error_matches_tritons_message():
    assert is_dead_stub_error("Stub process 'crash_0_0' is not healthy.")
    assert not is_dead_stub_error("[RUTH:INFERENCE_ERROR] infer: boom")
    assert not is_dead_stub_error(None)


def test_stub_killer_finds_only_our_servers_stubs_of_that_model(tmp_path):
    _tree(tmp_path)
    killer = StubKiller(lambda: 100, proc=tmp_path)
    assert killer.find("hang__1.0.0") == [101, 102]
    assert killer.find("hang__1.0.0__b") == [103]
    assert killer.find("missing__1.0.0") == []


def test_stub_killer_finds_nothing_when_the_server_is_not_visible(tmp_path):
    _tree(tmp_path)
    assert StubKiller(lambda: None, proc=tmp_path).find("hang__1.0.0") == []


def test_stub_killer_kills_a_real_descendant_process(tmp_path):
    # A real process tree: this test process -> a child whose argv mimics a stub of model "m__1.0.0".
    fake_stub = tmp_path / "triton_python_backend_stub"
    fake_stub.symlink_to(sys.executable)
    child = subprocess.Popen(
        [str(fake_stub), "-c", "import time; time.sleep(60)", "m__1.0.0_0_0"], start_new_session=False
    )
    try:
        killer = StubKiller(lambda: os.getpid())
        deadline = time.monotonic() + 10
        while not killer.find("m__1.0.0") and time.monotonic() < deadline:  # until the child has exec'd
            time.sleep(0.01)
        assert killer.find("m__1.0.0") == [child.pid]
        assert killer.kill("m__1.0.0", wait_s=5.0) == [child.pid]
        assert child.wait(timeout=5) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
