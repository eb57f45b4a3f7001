"""Where the tritonserver of the ``nvidia-pytriton`` wheel lives, and what its processes need.

Everything is found from the installed packages and the running interpreter (no machine paths):
the binary runs in place, the Python backend is copied to a working folder together with the stub
built for the running Python, and the environment puts this interpreter's libpython first.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ruthgen.embedded.errors import LibpythonNotFoundError, TritonNotInstalledError

LOGGER = logging.getLogger(__name__)

DISTRIBUTION = "nvidia-pytriton"
STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonDistribution:
    """The pieces of the installed tritonserver."""

    root: Path  # <site-packages>/pytriton/tritonserver
    libs: Path  # the wheel's bundled shared libraries

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    def stub(self, version: tuple[int, int] | None = None) -> Path:
        """The Python backend stub built for ``version`` (default: the running Python)."""
        major, minor = version or sys.version_info[:2]
        return self.root / "python_backend_stubs" / f"{major}.{minor}" / STUB_NAME


def find_distribution() -> TritonDistribution:
    """Locate the tritonserver shipped in the installed ``nvidia-pytriton`` wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(f"the {DISTRIBUTION} package is not installed in {sys.prefix}")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    libs = _bundled_libs(root)
    dist = TritonDistribution(root=root, libs=libs)
    for needed in (dist.binary, dist.backends / "python" / "libtriton_python.so"):
        if not needed.is_file():
            raise TritonNotInstalledError(f"{needed} is missing: reinstall {DISTRIBUTION}")
    return dist


def _bundled_libs(root: Path) -> Path:
    try:
        located = Path(str(importlib.metadata.distribution(DISTRIBUTION).locate_file("nvidia_pytriton.libs")))
    except importlib.metadata.PackageNotFoundError:
        located = root.parent.parent / "nvidia_pytriton.libs"
    # Editable installs keep the libraries next to the server instead.
    return located if located.is_dir() else root / "external_libs"


def prepare_backends(dist: TritonDistribution, workdir: Path) -> Path:
    """Copy the Python backend and the stub for the running Python under ``workdir``; return the copy."""
    stub = dist.stub()
    if not stub.is_file():
        supported = sorted(p.name for p in stub.parent.parent.iterdir() if (p / STUB_NAME).is_file())
        raise TritonNotInstalledError(
            f"{DISTRIBUTION} has no Python backend stub for Python "
            f"{sys.version_info[0]}.{sys.version_info[1]} (it has {', '.join(supported) or 'none'}); "
            "run with one of those Python versions"
        )
    backends = workdir / "backends"
    shutil.copytree(dist.backends, backends, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, backends / "python" / STUB_NAME)
    return backends


def libpython_dir() -> Path:
    """The folder holding the shared libpython the stub must run (this interpreter's, if shared).

    The stub links ``libpython3.X.so.1.0``; another patch release of 3.X than the running one
    loads, but then runs this interpreter's standard library on that release's C code, which
    breaks (e.g. ``multiprocessing``). So this interpreter's own library comes first.
    """
    soname = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / soname).exists():
        return Path(libdir)
    for candidate in _system_lib_dirs():
        if (candidate / soname).exists():
            LOGGER.warning(
                "this Python (%s) has no shared %s; the Python backend stub will use %s, another build "
                "of the same minor version (rebuild Python with --enable-shared to run the same one)",
                sys.executable, soname, candidate / soname,
            )
            return candidate
    raise LibpythonNotFoundError(
        f"the Python backend stub needs {soname}, which neither this Python ({sys.executable}, LIBDIR "
        f"{libdir}) nor the system has: build Python with --enable-shared (pyenv: "
        f"PYTHON_CONFIGURE_OPTS=--enable-shared) or install the distribution's libpython package"
    )


def _system_lib_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for base in ("/usr/local/lib", "/usr/lib", "/lib", "/usr/lib64", "/lib64"):
        dirs.append(Path(base))
        if multiarch:
            dirs.append(Path(base) / multiarch)
    return dirs


def server_environment(dist: TritonDistribution, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the server and its stubs.

    ``LD_LIBRARY_PATH``: this interpreter's libpython folder first (see `libpython_dir`), then the
    wheel's libraries (the stub copied out of the wheel no longer finds them through its RPATH).
    ``PATH``: this interpreter's ``bin/`` first: the stub's embedded interpreter finds its
    ``sys.prefix`` (the venv and its site-packages) through ``python3`` on ``PATH``.
    """
    env = dict(os.environ if base is None else base)
    library_path = [str(libpython_dir()), str(dist.libs)]
    if env.get("LD_LIBRARY_PATH"):
        library_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env["PATH"]]) if env.get("PATH") else bin_dir
    return env


def check_stub_runtime(env: dict[str, str]) -> None:
    """Fail early on what makes the stub fail late: no ``bash``, numpy 2 in this environment."""
    if shutil.which("bash", path=env.get("PATH")) is None:
        raise TritonNotInstalledError("tritonserver 2.51 starts its Python stubs with bash: not on PATH")
    try:
        numpy_version = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError as e:
        raise TritonNotInstalledError(f"the Python backend needs numpy < 2 in {sys.prefix}") from e
    if int(numpy_version.split(".", 1)[0]) >= 2:
        raise TritonNotInstalledError(
            f"numpy {numpy_version} is installed in {sys.prefix}: the Python backend stub of tritonserver "
            "2.51 silently corrupts tensors under numpy 2; install numpy < 2"
        )
