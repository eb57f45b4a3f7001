"""Per-plugin Python environments for a plugin's ``requirements.txt`` (Triton's EXECUTION_ENV_PATH).

An environment is a ``python -m venv --without-pip`` folder whose ``site-packages`` is filled with
``pip install --target``: the base packages the wrapper needs (numpy < 2, Pillow, fastjsonschema,
PyYAML, at the versions of the running installation, i.e. constraints.txt) plus the plugin's own
requirements (``--no-deps`` when ``dependencies.no_deps``). Never ``--system-site-packages``.

* Cached: ``${RUTH_ENV_CACHE:-~/.cache/ruth-ai-runtime/envs}/<key>``, the key hashing the
  requirements, the base packages, the Python version and the platform. Built in a temporary folder
  and renamed into place, under a file lock, so concurrent builds of one key build it once.
* Relocatable: ``bin/activate`` computes ``VIRTUAL_ENV`` from its own location, so the env works
  through the repository's ``<entry>/env`` link or when copied elsewhere.
* Offline-capable: every wheel used is kept in ``<cache>/_wheels``; an install is first tried from
  there with ``--no-index`` and goes to the package index (through pip's own cache) only for what is
  missing. ``RUTH_ENV_OFFLINE=1`` forbids the index altogether. A build fetches into a folder of its
  own and moves each wheel in whole, so builds side by side (``ruthgen.writer`` runs several) never
  read a wheel another one is still writing.
* numpy < 2 always: Triton 2.51's Python stub silently corrupts tensors under numpy 2.

* Reported as it goes: ``ensure_env(..., report=)`` hears each step of a build (creating, resolving,
  downloading, installing, checking), read from pip's output line by line.

Library API: :func:`check_requirements`, :func:`ensure_env`, :func:`env_cache_dir`, :func:`env_key`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ruthgen.contract import ModelContract
from ruthgen.errors import EnvironmentBuildError, ValidationIssue
from ruthgen.fsutil import locked

LOGGER = logging.getLogger(__name__)

CACHE_ENV = "RUTH_ENV_CACHE"
OFFLINE_ENV = "RUTH_ENV_OFFLINE"
DEFAULT_CACHE = Path("~/.cache/ruth-ai-runtime/envs")
WHEELHOUSE = "_wheels"
MARKER_FILE = "ruth-env.json"
DEFAULT_REQUIREMENTS = "requirements.txt"
LAYOUT_VERSION = "1"
BASE_PACKAGES = ("numpy", "pillow", "fastjsonschema", "pyyaml")
NUMPY_LIMIT = "numpy<2"
PIP_TIMEOUT_S = 1800
# numpy 1.x is finished (last 1.26.4): a specifier admitting none of these needs numpy >= 2
_NUMPY_1 = tuple(Version(f"1.{minor}.{patch}") for minor in range(27) for patch in range(7))
_OPTION_RE = re.compile(r"\s+--hash[=\s]\S+")
_CONFLICT_RE = re.compile(r"The conflict is caused by:\n(.*?)(?:\n\s*\n|\Z)", re.S)
#: ``report(step, detail)``: hears the steps of a build (ruthgen.progress.Progress.reporter).
Report = Callable[[str, str], None]
#: pip's output lines -> (step, detail): the detail is the package (and its size) it is at.
_PIP_STEPS = (
    (re.compile(r"^Collecting (?P<what>\S+)"), "resolving", ""),
    (re.compile(r"^\s*Downloading (?P<file>\S+?) \((?P<size>[^)]+)\)"), "downloading", ""),
    (re.compile(r"^\s*Using cached (?P<file>\S+?) \((?P<size>[^)]+)\)"), "downloading", ", pip's cache"),
    (re.compile(r"^Processing (?P<file>\S+)"), "installing", ""),
    (re.compile(r"^\s*Building wheel for (?P<what>\S+)"), "building", ""),
    (re.compile(r"^Installing collected packages: (?P<what>.+)"), "installing", ""),
)


@dataclass(frozen=True)
class RequirementLine:
    """One requirement of the plugin's file, with its ``--hash`` options and line number."""

    requirement: Requirement
    text: str
    lineno: int


def requirements_file(plugin_dir: Path, contract: ModelContract) -> Path | None:
    """The plugin's requirements file: ``dependencies.requirements``, else requirements.txt if present."""
    deps = contract.dependencies
    if deps is not None and deps.requirements is not None:
        return plugin_dir / deps.requirements
    default = plugin_dir / DEFAULT_REQUIREMENTS
    return default if default.is_file() else None


def parse_requirements(path: Path) -> tuple[list[RequirementLine], list[ValidationIssue]]:
    """PEP 508 lines (``--hash`` options allowed); anything else is an issue naming its line."""
    rel = path.name
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [ValidationIssue("requirements_invalid", f"{rel} is unreadable: {exc}", rel)]
    lines: list[RequirementLine] = []
    issues: list[ValidationIssue] = []
    for lineno, logical in _logical_lines(text):
        content = logical.split(" #", 1)[0].strip() if not logical.lstrip().startswith("#") else ""
        if not content:
            continue
        spec = _OPTION_RE.sub("", " " + content).strip()
        if spec.startswith("-"):
            issues.append(_invalid(rel, lineno, f"option {spec.split()[0]!r} is not supported", content))
            continue
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            issues.append(_invalid(rel, lineno, f"not a requirement ({exc})", content))
            continue
        lines.append(RequirementLine(req, content, lineno))
    return lines, issues


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def _invalid(rel: str, lineno: int, why: str, content: str) -> ValidationIssue:
    return ValidationIssue(
        "requirements_invalid",
        f"{rel}:{lineno}: {why}: {content!r}; use one PEP 508 requirement per line (name==version)",
        rel,
    )


def check_requirements(plugin_dir: Path, contract: ModelContract) -> list[ValidationIssue]:
    """Problems of the plugin's requirements file that make its environment impossible (no network)."""
    path = requirements_file(Path(plugin_dir), contract)
    if path is None or not path.is_file():
        return []
    lines, issues = parse_requirements(path)
    for line in lines:
        req = line.requirement
        if canonicalize_name(req.name) != "numpy" or (req.marker and not req.marker.evaluate()):
            continue
        if req.url or not any(req.specifier.contains(v, prereleases=True) for v in _NUMPY_1):
            issues.append(
                ValidationIssue(
                    "dependency_conflict",
                    f"{path.name}:{line.lineno} asks for {line.text!r}, but the Triton 2.51 Python backend "
                    "needs numpy<2 (numpy 2 corrupts tensors in its stub): require a numpy 1.x version",
                    path.name,
                )
            )
    return issues


def env_cache_dir() -> Path:
    """``$RUTH_ENV_CACHE``, else ``~/.cache/ruth-ai-runtime/envs``."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_CACHE.expanduser()


def base_requirements() -> list[str]:
    """The wrapper's own packages pinned to the versions of this installation (numpy kept < 2)."""
    pins = []
    for name in BASE_PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pins.append(NUMPY_LIMIT if name == "numpy" else name)
            continue
        if name == "numpy" and Version(version).major >= 2:
            pins.append(NUMPY_LIMIT)
        else:
            pins.append(f"{name}=={version}")
    return pins


def _install_set(lines: list[RequirementLine]) -> list[str]:
    """Base pins for the base packages the plugin does not name, the plugin's lines, numpy<2."""
    named = {canonicalize_name(line.requirement.name) for line in lines}
    base = [pin for pin in base_requirements() if canonicalize_name(Requirement(pin).name) not in named]
    return [*base, *(line.text for line in lines), NUMPY_LIMIT]


def _python_tag() -> str:
    return f"{sys.implementation.name}-{platform.python_version()}-{sysconfig.get_platform()}"


def env_key(plugin_dir: Path, contract: ModelContract) -> str:
    """The cache key of the plugin's environment (hex)."""
    path = requirements_file(Path(plugin_dir), contract)
    lines = parse_requirements(path)[0] if path is not None and path.is_file() else []
    data = {
        "layout": LAYOUT_VERSION,
        "python": _python_tag(),
        "install": _install_set(lines),
        "no_deps": bool(contract.dependencies and contract.dependencies.no_deps),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def _silent(step: str, detail: str = "") -> None:
    pass


def ensure_env(plugin_dir: Path, contract: ModelContract, report: Report | None = None) -> Path:
    """The plugin's environment folder, built once per key; raises EnvironmentBuildError.

    ``report(step, detail)`` hears each step when it is built (nothing when it is cached).
    """
    report = report or _silent
    plugin_dir = Path(plugin_dir)
    problems = check_requirements(plugin_dir, contract)
    if problems:
        raise EnvironmentBuildError("; ".join(p.message for p in problems))
    path = requirements_file(plugin_dir, contract)
    lines = parse_requirements(path)[0] if path is not None and path.is_file() else []
    cache = env_cache_dir()
    key = env_key(plugin_dir, contract)
    final = cache / key
    if (final / MARKER_FILE).is_file():
        return final
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentBuildError(f"cannot create the environment cache {cache}: {exc}") from exc
    with locked(cache / f".{key}.lock"):
        if (final / MARKER_FILE).is_file():  # built by another process while we waited
            return final
        no_deps = bool(contract.dependencies and contract.dependencies.no_deps)
        _build(final, _install_set(lines), no_deps, cache / WHEELHOUSE, report)
    return final


def _build(final: Path, install: list[str], no_deps: bool, wheelhouse: Path, report: Report) -> None:
    started = time.monotonic()
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    LOGGER.info("building environment %s for %s", final.name, ", ".join(install))
    try:
        report("creating the environment", final.name)
        _run([sys.executable, "-m", "venv", "--without-pip", str(tmp)], "python -m venv")
        site = tmp / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        req_file = tmp / "ruth-requirements.txt"
        req_file.write_text("\n".join(install) + "\n", "utf-8")
        _install(req_file, site, no_deps, wheelhouse, report)
        report("checking", "numpy < 2, the imports")
        _verify_numpy(site)
        _make_relocatable(tmp)
        _link_libpython(tmp)
        _run([str(tmp / "bin" / "python"), "-c", "import numpy, PIL, fastjsonschema, yaml"], "import check")
        marker = {
            "key": final.name,
            "python": _python_tag(),
            "install": install,
            "no_deps": no_deps,
            "packages": _installed(site),
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", "utf-8")
        if final.exists():  # a stale half-built folder without a marker
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOGGER.info("environment %s built in %.1f s", final.name, time.monotonic() - started)


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]


def _install(req_file: Path, site: Path, no_deps: bool, wheelhouse: Path, report: Report) -> None:
    deps = ["--no-deps"] if no_deps else []
    install = _pip(
        "install",
        "--target",
        str(site),
        "--no-index",
        "--find-links",
        str(wheelhouse),
        "--no-warn-script-location",
        *deps,
        "-r",
        str(req_file),
    )
    wheelhouse.mkdir(parents=True, exist_ok=True)
    report("installing", "from the wheels kept by earlier builds")
    code, output = _run_pip(install, "pip install", _silent)
    if code == 0:
        return
    if os.environ.get(OFFLINE_ENV, "").strip() in ("1", "true", "yes"):
        raise EnvironmentBuildError(_pip_failure("offline install", output))
    LOGGER.info("fetching wheels from the package index into %s", wheelhouse)
    fetched = Path(tempfile.mkdtemp(prefix=".wheels.tmp-", dir=wheelhouse.parent))
    try:
        fetch = _pip(
            "wheel", "--wheel-dir", str(fetched), "--find-links", str(wheelhouse), *deps, "-r", str(req_file)
        )
        _check(_run_pip(fetch, "pip wheel", report, fetching=True), "pip wheel")
        _keep_wheels(fetched, wheelhouse)
    finally:
        shutil.rmtree(fetched, ignore_errors=True)
    _check(_run_pip(install, "pip install", report), "pip install")


def _keep_wheels(fetched: Path, wheelhouse: Path) -> None:
    """Move the wheels of ``fetched`` into the wheelhouse, each in one rename (whole or absent there);
    a wheel already kept stays."""
    for wheel in sorted(fetched.glob("*.whl")):
        kept = wheelhouse / wheel.name
        if kept.exists():
            continue
        try:
            os.replace(wheel, kept)
        except OSError:  # the wheelhouse on another file system: copied beside, then renamed
            partial = wheelhouse / f".{wheel.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                shutil.copyfile(wheel, partial)
                os.replace(partial, kept)
            finally:
                partial.unlink(missing_ok=True)


def _run_pip(cmd: list[str], what: str, report: Report, fetching: bool = False) -> tuple[int, str]:
    """Run pip, telling ``report`` each step its output shows (``fetching``: ``pip wheel``, whose
    "Processing" lines are packages found, not installed); (exit code, output)."""
    try:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=_pip_env())
    except OSError as exc:
        raise EnvironmentBuildError(f"{what} failed: {exc}") from exc
    timer = threading.Timer(PIP_TIMEOUT_S, process.kill)
    timer.start()
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            step = pip_step(line)
            if step is not None:
                report("resolving" if fetching and step[0] == "installing" else step[0], step[1])
        code = process.wait()
    finally:
        timer.cancel()
    if code < 0:
        raise EnvironmentBuildError(f"{what} failed: killed after {PIP_TIMEOUT_S} s")
    return code, "".join(lines)


def _check(result: tuple[int, str], what: str) -> None:
    if result[0] != 0:
        raise EnvironmentBuildError(_pip_failure(what, result[1]))


def pip_step(line: str) -> tuple[str, str] | None:
    """The build step one line of pip's output shows, as ``(step, detail)``, or None."""
    for pattern, step, note in _PIP_STEPS:
        found = pattern.match(line)
        if found is None:
            continue
        groups = found.groupdict()
        if "file" not in groups:
            return step, groups["what"].strip()
        name = groups["file"].rsplit("/", 1)[-1]
        if name.endswith(".metadata"):
            return None  # pip reads a wheel's metadata before it downloads the wheel
        parts = name.split("-")
        package = " ".join(parts[:2]) if len(parts) > 2 else name
        size = groups.get("size")
        return step, f"{package} ({size}{note})" if size else package
    return None


def _pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, env=_pip_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentBuildError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise EnvironmentBuildError(_pip_failure(what, done.stdout + done.stderr))


def _pip_failure(what: str, output: str) -> str:
    conflict = _CONFLICT_RE.search(output)
    if conflict:
        causes = "; ".join(line.strip() for line in conflict.group(1).splitlines() if line.strip())
        hint = " (Triton 2.51 needs numpy<2)" if "numpy" in causes else ""
        return f"the requirements conflict{hint}: {causes}"
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")] or lines[-3:]
    return f"{what} failed: " + " | ".join(errors[-3:])


def _installed(site: Path) -> dict[str, str]:
    found = {}
    for meta in site.glob("*.dist-info/METADATA"):
        message = Parser().parsestr(meta.read_text("utf-8", errors="replace"), headersonly=True)
        found[canonicalize_name(message["Name"] or meta.parent.name)] = message["Version"] or ""
    return dict(sorted(found.items()))


def _verify_numpy(site: Path) -> None:
    """numpy 1.x installed, and no installed package that declares it needs numpy >= 2."""
    needs_2 = []
    numpy_version = None
    for meta in site.glob("*.dist-info/METADATA"):
        message = Parser().parsestr(meta.read_text("utf-8", errors="replace"), headersonly=True)
        name = message["Name"] or meta.parent.name
        if canonicalize_name(name) == "numpy":
            numpy_version = Version(message["Version"])
        for raw in message.get_all("Requires-Dist") or []:
            with contextlib.suppress(InvalidRequirement):
                req = Requirement(raw)
                if canonicalize_name(req.name) != "numpy" or _inactive(req):
                    continue
                if not any(req.specifier.contains(v, prereleases=True) for v in _NUMPY_1):
                    needs_2.append(f"{name} {message['Version']} requires {raw.split(';')[0].strip()}")
    if numpy_version is not None and numpy_version.major >= 2:
        blame = f" (pulled in by: {'; '.join(needs_2)})" if needs_2 else ""
        raise EnvironmentBuildError(
            f"numpy {numpy_version} was installed{blame}, but the Triton 2.51 Python backend needs numpy<2"
        )
    if needs_2:
        raise EnvironmentBuildError(f"{'; '.join(needs_2)}, but the Triton 2.51 Python backend needs numpy<2")


def _inactive(req: Requirement) -> bool:
    if req.marker is None:
        return False
    try:
        return not req.marker.evaluate({"extra": ""})
    except Exception:  # an unknown marker variable: count the requirement as active
        return False


_ACTIVATE_PATH_RE = r"(?m)^(\s*(?:export\s+)?VIRTUAL_ENV=)(['\"]?){path}\2\s*$"
_HERE = '"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"'


def _make_relocatable(env: Path) -> None:
    """``bin/activate`` computes VIRTUAL_ENV from its own path; other shells' scripts are dropped."""
    activate = env / "bin" / "activate"
    text = activate.read_text("utf-8")
    pattern = _ACTIVATE_PATH_RE.format(path=re.escape(str(env)))
    rewritten, count = re.subn(pattern, lambda m: m.group(1) + _HERE, text)
    if count == 0:
        raise EnvironmentBuildError(f"{activate} has no VIRTUAL_ENV line to make relocatable")
    activate.write_text(rewritten, "utf-8")
    for other in ("activate.csh", "activate.fish", "Activate.ps1"):
        (env / "bin" / other).unlink(missing_ok=True)


def _link_libpython(env: Path) -> None:
    """Put this Python's shared libpython in ``<env>/lib`` (Triton puts that folder first on
    LD_LIBRARY_PATH), so the stub embeds the interpreter whose standard library the env uses."""
    libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not name or not (Path(libdir) / name).is_file():
        return
    target = env / "lib" / name
    if not target.exists():
        target.symlink_to(Path(libdir) / name)


__all__ = [
    "check_requirements",
    "ensure_env",
    "env_cache_dir",
    "env_key",
    "parse_requirements",
    "requirements_file",
]
