"""ruth_confine: the rules a stub gets, and Landlock applied for real in a child process (it is
irreversible: never in the test process itself)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import ruth_confine
from ruth_errors import LoadError

WRAPPER = Path(ruth_confine.__file__).resolve().parent
ENTRY = {"model_id": "m", "version": "1.0.0", "contract": {"permissions": {"network": False}}}


def confined(script: str, tmp_path: Path, **rules: object) -> dict:
    """Runs ``script`` in a child Python after ``confine(Rules(**rules))``; returns its JSON."""
    program = textwrap.dedent(
        f"""
        import ctypes, json, os, socket, subprocess, sys
        sys.path.insert(0, {str(WRAPPER)!r})
        import ruth_confine
        abi = {rules.pop("abi", None)!r}
        rules = ruth_confine.Rules(**{rules!r})
        isolation = ruth_confine.confine(rules, abi)
        out = {{"level": isolation.level, "abi": isolation.abi, "detail": isolation.detail}}
        """
    ) + textwrap.dedent(script) + "\nprint(json.dumps(out))\n"
    command = [sys.executable, "-c", program]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def python_rules(tmp_path: Path, **extra: object) -> dict:
    read = (*ruth_confine.SYSTEM_READ, *ruth_confine.ETC_READ, sys.prefix, sys.base_prefix, *sys.path)
    write = (str(tmp_path / "scratch"), "/dev/null")
    return {"read": (*(p for p in read if p), str(WRAPPER)), "write": write, **extra}


def test_the_machine_has_landlock():
    abi, why = ruth_confine.landlock_abi()
    assert abi >= 1, why


def test_a_confined_process_writes_in_its_scratch_folder_only_natively_and_in_children(tmp_path):
    (tmp_path / "scratch").mkdir()
    out = confined(
        f"""
        libc = ctypes.CDLL(None, use_errno=True)
        out["scratch"] = libc.open(b"{tmp_path}/scratch/a.txt", os.O_WRONLY | os.O_CREAT, 0o600) >= 0
        out["outside"] = libc.open(b"{tmp_path}/b.txt", os.O_WRONLY | os.O_CREAT, 0o600)
        out["errno"] = ctypes.get_errno()
        out["child"] = subprocess.run(["/bin/sh", "-c", "echo x > {tmp_path}/c.txt"]).returncode
        """,
        tmp_path,
        **python_rules(tmp_path),
    )
    assert out["level"] == "kernel" and out["scratch"] is True
    assert (out["outside"], out["errno"]) == (-1, errno.EACCES)
    assert out["child"] != 0
    assert (tmp_path / "scratch" / "a.txt").exists()
    assert not (tmp_path / "b.txt").exists() and not (tmp_path / "c.txt").exists()


@pytest.mark.parametrize(("ports", "abi", "reached"), [(None, None, True), ((), None, False), ((), 3, True)])
def test_tcp_connect_follows_the_allowed_ports_from_abi_4(tmp_path, ports, abi, reached):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        out = confined(
            f"""
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", {port}))
                out["connected"] = True
            except OSError as exc:
                out["connected"] = exc.errno
            """,
            tmp_path,
            **python_rules(tmp_path, connect_ports=None if ports is None else frozenset(ports), abi=abi),
        )
    finally:
        server.close()
    assert out["connected"] is True if reached else out["connected"] == errno.EACCES
    assert out["abi"] == (abi or ruth_confine.landlock_abi()[0])


def test_stub_rules_read_the_version_folder_and_python_and_write_the_plugin_and_scratch_folders(tmp_path):
    version = tmp_path / "v1"
    rules = ruth_confine.stub_rules(version, version / "plugin", tmp_path / "scratch", False, environ={})
    assert str(version) in rules.read and sys.prefix in rules.read and "/usr" in rules.read
    assert rules.write == (str(version / "plugin"), str(tmp_path / "scratch"), "/dev/null")
    assert (rules.connect_ports, rules.bind, rules.devices) == (frozenset(), False, ())


def test_stub_rules_read_only_the_python_paths_of_an_environment(tmp_path, monkeypatch):
    # a stub's sys.path holds "" (its working folder) and, with an editable install, the project's
    # checkout: neither may open the other plugins (their sources sit in the checkout) to reading
    version = tmp_path / "repository" / "m__1.0.0" / "1"
    site = tmp_path / "env" / "lib" / "site-packages"
    for folder in (version, site, tmp_path / "checkout"):
        folder.mkdir(parents=True)
    extra = ["/", "", ".", str(tmp_path), str(tmp_path / "checkout"), str(tmp_path / "repository"), str(site)]
    monkeypatch.setattr(sys, "path", [*sys.path, *extra])
    monkeypatch.chdir(tmp_path / "repository")
    rules = ruth_confine.stub_rules(version, version / "plugin", tmp_path / "scratch", False, environ={})
    for refused in ("/", "", ".", str(tmp_path), str(tmp_path / "checkout"), str(tmp_path / "repository")):
        assert refused not in rules.read
    assert {str(version), str(site), sys.prefix, sys.base_prefix} <= set(rules.read)


@pytest.mark.parametrize(
    ("network", "ports", "bind"),
    [
        (True, None, True),
        (["api.example.com:443", "10.20.0.0/16:5432"], frozenset({443, 5432}), False),
        (["10.0.0.0/8:*"], None, False),
    ],
)
def test_stub_rules_turn_permissions_network_into_tcp_rules(tmp_path, network, ports, bind):
    rules = ruth_confine.stub_rules(tmp_path, tmp_path / "plugin", tmp_path / "scratch", network, environ={})
    assert (rules.connect_ports, rules.bind) == (ports, bind)


def test_isolate_outside_a_stub_never_confines_and_points_tmpdir_at_the_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", os.environ.get("TMPDIR", tempfile.gettempdir()))
    monkeypatch.setattr(tempfile, "tempdir", None)
    environ = {"RUTH_SCRATCH_DIR": str(tmp_path)}
    isolation, scratch = ruth_confine.isolate(tmp_path, ENTRY, environ=environ)
    assert (isolation.level, isolation.abi, isolation.detail) == ("guard", 0, "not a Triton stub process")
    assert scratch == tmp_path / "m" / "1.0.0" and scratch.is_dir()
    assert tempfile.gettempdir() == str(scratch) and os.environ["TMPDIR"] == str(scratch)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("kernel", "RUTH_ISOLATION=kernel, but the kernel cannot confine: not a Triton stub process"),
        ("strict", "RUTH_ISOLATION='strict' is not one of auto, kernel, guard"),
    ],
)
def test_isolate_refuses_what_it_cannot_honour(tmp_path, monkeypatch, mode, message):
    monkeypatch.setenv("TMPDIR", os.environ.get("TMPDIR", tempfile.gettempdir()))
    monkeypatch.setattr(tempfile, "tempdir", None)
    environ = {"RUTH_SCRATCH_DIR": str(tmp_path), "RUTH_ISOLATION": mode}
    with pytest.raises(LoadError) as info:
        ruth_confine.isolate(tmp_path, ENTRY, environ=environ)
    assert info.value.phase == "isolation" and info.value.message == message
