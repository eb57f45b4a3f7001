import os
import stat
import sys
import sysconfig
from pathlib import Path

import pytest

from ruthgen.embedded import distribution
from ruthgen.embedded.distribution import (
    STUB_NAME,
    check_stub_runtime,
    find_distribution,
    libpython_dir,
    prepare_backends,
    server_environment,
)
from ruthgen.embedded.errors import LibpythonNotFoundError, TritonNotInstalledError


def test_find_distribution_locates_binary_backend_and_libs_when_wheel_installed():
    dist = find_distribution()
    assert dist.binary.is_file() and os.access(dist.binary, os.X_OK)
    assert (dist.backends / "python" / "libtriton_python.so").is_file()
    assert dist.libs.is_dir() and any(dist.libs.glob("libcudart*"))
    assert "site-packages" in str(dist.root)


def test_stub_is_the_one_built_for_the_running_python():
    dist = find_distribution()
    major, minor = sys.version_info[:2]
    assert dist.stub() == dist.root / "python_backend_stubs" / f"{major}.{minor}" / STUB_NAME
    assert dist.stub().is_file()
    assert dist.stub((3, 10)).parent.name == "3.10"


def test_prepare_backends_copies_backend_and_running_python_stub(tmp_path):
    dist = find_distribution()
    backends = prepare_backends(dist, tmp_path)
    stub = backends / "python" / STUB_NAME
    assert stub.read_bytes() == dist.stub().read_bytes()
    assert stub.stat().st_mode & stat.S_IXUSR
    assert (backends / "python" / "triton_python_backend_utils.py").is_file()
    assert not (backends / "python" / "__pycache__").exists()


def test_prepare_backends_names_supported_versions_when_no_stub_for_this_python(tmp_path, monkeypatch):
    dist = find_distribution()
    monkeypatch.setattr(distribution.sys, "version_info", (3, 99, 0))
    with pytest.raises(TritonNotInstalledError, match=r"Python 3\.99 \(it has .*3\.11"):
        prepare_backends(dist, tmp_path)


def test_server_environment_puts_this_libpython_first_then_wheel_libs_then_inherited():
    dist = find_distribution()
    env = server_environment(dist, {"LD_LIBRARY_PATH": "/inherited", "PATH": "/usr/bin", "KEEP": "1"})
    parts = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert parts == [sysconfig.get_config_var("LIBDIR"), str(dist.libs), "/inherited"]
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    assert env["KEEP"] == "1"


def test_libpython_dir_is_this_interpreters_libdir_when_it_has_the_shared_library():
    soname = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    assert (libpython_dir() / soname).exists()
    assert libpython_dir() == Path(sysconfig.get_config_var("LIBDIR"))


def test_libpython_dir_fails_clearly_when_no_shared_libpython_anywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(distribution.sysconfig, "get_config_var", lambda name: str(tmp_path))
    monkeypatch.setattr(distribution, "_system_lib_dirs", lambda: [tmp_path])
    with pytest.raises(LibpythonNotFoundError, match=r"needs libpython3\.\d+\.so\.1\.0.*--enable-shared"):
        libpython_dir()


def test_libpython_dir_falls_back_to_system_copy_when_this_python_is_static(tmp_path, monkeypatch, caplog):
    soname = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    system = tmp_path / "system"
    system.mkdir()
    (system / soname).write_bytes(b"")
    monkeypatch.setattr(distribution.sysconfig, "get_config_var", lambda name: str(tmp_path / "static"))
    monkeypatch.setattr(distribution, "_system_lib_dirs", lambda: [system])
    assert libpython_dir() == system
    assert "another build" in caplog.text


def test_check_stub_runtime_refuses_numpy_2(monkeypatch):
    monkeypatch.setattr(distribution.importlib.metadata, "version", lambda name: "2.2.6")
    with pytest.raises(TritonNotInstalledError, match=r"numpy 2\.2\.6"):
        check_stub_runtime(dict(os.environ))


def test_check_stub_runtime_refuses_path_without_bash(tmp_path):
    with pytest.raises(TritonNotInstalledError, match="bash"):
        check_stub_runtime({"PATH": str(tmp_path)})


def test_check_stub_runtime_accepts_this_environment():
    check_stub_runtime(dict(os.environ))
