"""The guard: writes outside the plugin and scratch folders, network and processes are refused per request."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest
from ruth_errors import LoadError, RuthError
from wrapper_testlib import request, solid

SCHEMA = {"label": {"type": "string"}, "score": {"type": "float"}}


def plugin(body: str, load_body: str = "return None") -> dict[str, str]:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return {
        "inference.py": (
            "import os, socket, subprocess, ctypes, tempfile\n"
            "from pathlib import Path\n\n"
            f"def load(context):\n    {load_body}\n\n"
            "def infer(state, frame):\n"
            "    target = FRAME_TARGETS[int(frame.image[0, 0, 0])]\n"
            "    if target is None:\n        return {'label': 'warmup', 'score': 0.0}\n"
            f"{lines}\n"
            "    return {'label': 'done', 'score': 1.0}\n"
        )
    }


def run(rt, target_index: int = 1):
    (outcome,) = rt.execute([request(solid(8, 8, (target_index, 0, 0)))])
    return outcome


def with_targets(files: dict[str, str], targets: list[object]) -> dict[str, str]:
    files = dict(files)
    files["inference.py"] = f"FRAME_TARGETS = {[None, *targets]!r}\n" + files["inference.py"]
    return files


def denied(outcome: object, code: str = "INFERENCE_ERROR", phase: str = "infer") -> str:
    assert isinstance(outcome, RuthError), outcome
    assert (outcome.code, outcome.phase) == (code, phase), str(outcome)
    assert outcome.message.startswith("permission denied: ")
    return outcome.message


def test_guard_refuses_a_write_outside_the_plugin_folder(runtime, tmp_path):
    outside = tmp_path / "outside.txt"
    files = with_targets(plugin("Path(target).write_text('x')"), [str(outside)])
    rt = runtime(files, input={"format": "raw_rgb"})
    message = denied(run(rt))
    assert f"writing outside the plugin's folders is not permitted: {outside}" in message
    assert not outside.exists()


FOLDERS = [("scratch_dir", "scratch_dir"), ("model_dir", "plugin_dir")]  # the context's name, the runtime's


@pytest.mark.parametrize(("folder", "attribute"), FOLDERS)
def test_guard_allows_writes_in_the_plugin_and_scratch_folders(runtime, folder, attribute):
    body = "p = Path(state) / target\np.write_text('ok')\nos.rename(p, str(p) + '.done')"
    load = f"(context.{folder} / 'cache').mkdir()\n    return str(context.{folder} / 'cache')"
    rt = runtime(with_targets(plugin(body, load), ["result.txt"]), input={"format": "raw_rgb"})
    assert json.loads(run(rt)) == {"label": "done", "score": 1.0}
    assert (getattr(rt, attribute) / "cache" / "result.txt.done").read_text() == "ok"


def test_guard_fails_the_request_even_when_the_plugin_swallows_the_refusal(runtime, tmp_path):
    body = "try:\n    open(target, 'a').close()\nexcept PermissionError:\n    pass"
    rt = runtime(with_targets(plugin(body), [str(tmp_path / "x.log")]), input={"format": "raw_rgb"})
    assert "x.log" in denied(run(rt))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("os.remove(target)", "os.remove outside the plugin's folders is not permitted"),
        ("os.rename(target, target + '.moved')", "os.rename outside the plugin's folders is not permitted"),
        ("os.mkdir(target + '.d')", "os.mkdir outside the plugin's folders is not permitted"),
        ("os.open(target, os.O_WRONLY)", "writing outside the plugin's folders is not permitted"),
    ],
)
def test_guard_refuses_filesystem_changes_outside_the_plugin_folder(runtime, tmp_path, body, expected):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    rt = runtime(with_targets(plugin(body), [str(victim)]), input={"format": "raw_rgb"})
    assert expected in denied(run(rt))
    assert victim.read_text() == "keep"


@pytest.mark.parametrize("when", ["load", "infer"])
def test_importing_a_library_without_cached_bytecode_is_not_a_violation(runtime, tmp_path, monkeypatch, when):
    # a fresh environment (uv does not compile bytecode) has no __pycache__ folders: the import
    # system's attempt to make one elsewhere is refused quietly, and the import works
    library = tmp_path / "site" / f"fresh_{when}_lib"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text("VALUE = 'imported'\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.syspath_prepend(str(library.parent))
    statement = f"import fresh_{when}_lib"
    load = f"{statement}\n    return None" if when == "load" else "return None"
    body = statement if when == "infer" else "pass"
    rt = runtime(with_targets(plugin(body, load), [0]), input={"format": "raw_rgb"})
    assert json.loads(run(rt)) == {"label": "done", "score": 1.0}
    assert sys.modules[f"fresh_{when}_lib"].VALUE == "imported"
    assert not (library / "__pycache__").exists()


def test_the_scratch_folder_is_the_plugins_temp_dir_in_the_stub(triton_model, tmp_path, monkeypatch):
    # the generated model.py points TMPDIR at the plugin version's scratch folder before the plugin
    # is imported: tempfile works as usual, and its files land where the plugin may write
    monkeypatch.setenv("RUTH_SCRATCH_DIR", str(tmp_path / "scratch"))
    monkeypatch.setenv("TMPDIR", os.environ.get("TMPDIR", ""))
    monkeypatch.setattr(tempfile, "tempdir", None)
    load = "fd, path = tempfile.mkstemp()\n    os.close(fd)\n    return path"
    files = with_targets(plugin("Path(state).write_text('request')", load), [0])
    model = triton_model(files, input={"format": "raw_rgb"})
    scratch = tmp_path / "scratch" / "demo" / "1.0.0"
    assert model._runtime.scratch_dir == scratch
    assert os.path.dirname(model._runtime._state) == str(scratch)
    assert json.loads(run(model._runtime))["label"] == "done"
    assert Path(model._runtime._state).read_text() == "request"
    assert model._runtime.isolation.level == "guard"  # the test process is not a stub: never confined


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    yield server.getsockname()
    server.close()


@pytest.mark.parametrize(("network", "allowed"), [(False, False), (True, True)])
def test_guard_refuses_connections_unless_the_contract_permits_network(runtime, listener, network, allowed):
    body = "s = socket.create_connection(tuple(target), timeout=2)\ns.close()"
    files = with_targets(plugin(body), [list(listener)])
    rt = runtime(files, input={"format": "raw_rgb"}, permissions={"network": network})
    outcome = run(rt)
    if allowed:
        assert json.loads(outcome)["label"] == "done"
    else:
        assert "needs permissions.network: true" in denied(outcome)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("subprocess.run(['true'])", "starting processes (subprocess.Popen) is not permitted"),
        ("os.system('true')", "starting processes (os.system) is not permitted"),
        ("ctypes.CDLL(target)", "loading a native library after load() is not permitted: libz.so.1"),
    ],
)
def test_guard_refuses_processes_and_new_native_libraries_after_load(runtime, body, expected):
    rt = runtime(with_targets(plugin(body), ["libz.so.1"]), input={"format": "raw_rgb"})
    assert expected in denied(run(rt))


def test_guard_allows_processes_and_libraries_during_load(runtime):
    load = "subprocess.run(['true'], check=True)\n    ctypes.CDLL('libz.so.1')\n    return None"
    rt = runtime(
        with_targets(plugin("ctypes.CDLL(target)", load), ["libz.so.1"]), input={"format": "raw_rgb"}
    )
    assert json.loads(run(rt))["label"] == "done"


def test_guard_refusal_in_preprocess_fails_that_phase(runtime, tmp_path):
    files = {
        "inference.py": "def load(c):\n    return None\n"
        "def infer(s, f):\n    return {'label': 'x', 'score': 0.0}\n",
        "preprocessing.py": (
            f"def preprocess(frame, context):\n    if frame.image[0, 0, 0]:\n"
            f"        open({str(tmp_path / 'p.txt')!r}, 'w')\n    return frame\n"
        ),
    }
    rt = runtime(files, input={"format": "raw_rgb"})
    denied(run(rt), "PREPROCESS_ERROR", "preprocess")


def test_load_fails_when_load_writes_outside_the_plugin_and_scratch_folders(runtime, tmp_path):
    target = tmp_path / "elsewhere" / "never-written.bin"
    target.parent.mkdir()
    load = f"Path({str(target)!r}).write_bytes(b'1')"
    with pytest.raises(LoadError) as info:
        runtime(with_targets(plugin("pass", load), []), input={"format": "raw_rgb"})
    assert info.value.phase == "load" and "permission denied" in info.value.message
    assert str(target) in info.value.message
    assert not target.exists()


def test_guard_is_inactive_once_the_runtime_is_closed(runtime, tmp_path):
    rt = runtime(
        with_targets(plugin("Path(target).write_text('x')"), [str(tmp_path / "a")]),
        input={"format": "raw_rgb"},
    )
    assert isinstance(run(rt), RuthError)
    rt.close()
    Path(tmp_path / "after-close.txt").write_text("the test process writes freely again")


@pytest.mark.parametrize(
    ("rule", "allowed"),
    [
        ("127.0.0.1:{port}", True),  # an IP and its port
        ("127.0.0.0/8:{port}", True),  # a CIDR holding it
        ("localhost:{port}", True),  # a host name: the guard resolves it and allows what it gave
        ("127.0.0.1:*", True),
        ("127.0.0.1:{other}", False),  # another port
        ("10.0.0.0/8:{port}", False),  # another network
        ("example.invalid:{port}", False),
    ],
)
def test_guard_allows_only_the_allowlisted_endpoints(runtime, listener, rule, allowed):
    host = "localhost" if rule.startswith("localhost") else listener[0]
    body = "s = socket.create_connection(tuple(target), timeout=2)\ns.close()"
    files = with_targets(plugin(body), [[host, listener[1]]])
    endpoint = rule.format(port=listener[1], other=listener[1] + 1)
    rt = runtime(files, input={"format": "raw_rgb"}, permissions={"network": [endpoint]})
    outcome = run(rt)
    if allowed:
        assert json.loads(outcome)["label"] == "done"
    else:
        assert "not in permissions.network's allowlist" in denied(outcome)
