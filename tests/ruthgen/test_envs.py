"""Per-plugin environments: requirement checks, real builds from PyPI, cache, offline rebuild, numpy<2."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ruthgen import envs
from ruthgen.contract import ModelContract, parse_contract
from ruthgen.errors import EnvironmentBuildError


def make_contract(requirements: str | None = "requirements.txt", no_deps: bool = False) -> ModelContract:
    data = {
        "model_id": "demo",
        "version": "1.0.0",
        "display_name": "Demo",
        "input": {"type": "frame", "format": "jpeg"},
        "output": {"schema": {"x": {"type": "float"}}},
        "dependencies": {"requirements": requirements, "no_deps": no_deps},
    }
    parsed = parse_contract(data)
    assert parsed.contract is not None, parsed.errors
    return parsed.contract


def plugin_with(tmp_path: Path, text: str, name: str = "p") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text(text, "utf-8")
    return folder


def env_python(env: Path, code: str) -> str:
    done = subprocess.run(
        [str(env / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    "line",
    ["numpy>=2", "numpy==2.1.0", "NumPy~=2.0", "numpy[dev]>2.0,<3", "numpy @ https://example.org/n.whl"],
)
def test_check_requirements_refuses_numpy_2_when_a_line_needs_it(tmp_path, line):
    folder = plugin_with(tmp_path, f"six==1.17.0\n{line}\n")
    (issue,) = envs.check_requirements(folder, make_contract())
    assert issue.check == "dependency_conflict"
    assert f"requirements.txt:2 asks for {line!r}" in issue.message and "numpy<2" in issue.message


@pytest.mark.parametrize(
    "line",
    [
        "numpy",
        "numpy>=1.20",
        "numpy<3",
        "numpy==1.26.4",
        'numpy>=2; python_version < "3"',
        "numpy>=1.26,!=2.0",
    ],
)
def test_check_requirements_accepts_numpy_when_1x_remains_possible(tmp_path, line):
    assert envs.check_requirements(plugin_with(tmp_path, f"{line}\n"), make_contract()) == []


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("six\n-r other.txt\n", "requirements.txt:2: option '-r'"),
        ("--index-url https://example.org/simple\nsix\n", "requirements.txt:1: option '--index-url'"),
        ("six\n\nthis is not a requirement!\n", "requirements.txt:3: not a requirement"),
        ("./wheels/local-1.0-py3-none-any.whl\n", "requirements.txt:1: not a requirement"),
    ],
)
def test_check_requirements_reports_a_malformed_line_with_its_number(tmp_path, text, where):
    (issue,) = envs.check_requirements(plugin_with(tmp_path, text), make_contract())
    assert issue.check == "requirements_invalid" and issue.path == "requirements.txt"
    assert where in issue.message


def test_check_requirements_accepts_comments_hashes_and_continuations(tmp_path):
    text = (
        "# a lock\n"
        "six==1.17.0 \\\n"
        "    --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274  # pinned\n"
        "\n"
        "packaging>=24 ; python_version >= '3.10'\n"
    )
    folder = plugin_with(tmp_path, text)
    assert envs.check_requirements(folder, make_contract()) == []
    lines, _ = envs.parse_requirements(folder / "requirements.txt")
    assert [(line.requirement.name, line.lineno) for line in lines] == [("six", 2), ("packaging", 5)]


def test_env_key_ignores_comments_and_depends_on_requirements_and_no_deps(tmp_path):
    a = plugin_with(tmp_path, "six==1.16.0\n", "a")
    b = plugin_with(tmp_path, "# same\n\nsix==1.16.0   # pinned\n", "b")
    c = plugin_with(tmp_path, "six==1.17.0\n", "c")
    key = envs.env_key(a, make_contract())
    assert envs.env_key(b, make_contract()) == key
    assert envs.env_key(c, make_contract()) != key
    assert envs.env_key(a, make_contract(no_deps=True)) != key


def test_verify_numpy_names_the_installed_package_that_needs_numpy_2(tmp_path):
    for name, version, requires in (
        ("numpy", "1.26.4", []),
        ("fancy-vision", "3.0", ["numpy<2.3.0,>=2; python_version >= '3.9'"]),
        ("fine", "1.0", ["numpy>=1.21", "numpy>=2; extra == 'fast'"]),
    ):
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}"]
        lines += [f"Requires-Dist: {r}" for r in requires]
        (info / "METADATA").write_text("\n".join(lines) + "\n\n", "utf-8")
    with pytest.raises(
        EnvironmentBuildError, match=r"fancy-vision 3.0 requires numpy<2.3.0,>=2, but the Triton"
    ):
        envs._verify_numpy(tmp_path)


@pytest.fixture(scope="module")
def env_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("env-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(envs.CACHE_ENV, str(cache))
        patch.delenv(envs.OFFLINE_ENV, raising=False)
        yield cache


@pytest.fixture(scope="module")
def six_envs(env_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugins")
    return {
        version: envs.ensure_env(plugin_with(root, f"six=={version}\n", version), make_contract())
        for version in ("1.16.0", "1.17.0")
    }


def test_ensure_env_builds_separate_environments_for_conflicting_versions(six_envs, env_cache):
    old, new = six_envs["1.16.0"], six_envs["1.17.0"]
    assert old != new and old.parent == new.parent == env_cache
    probe = (
        "import six, numpy, PIL, fastjsonschema, yaml, sys;"
        "print(six.__version__, numpy.__version__, sys.prefix)"
    )
    for version, env in six_envs.items():
        six_version, numpy_version, prefix = env_python(env, probe).split()
        assert six_version == version and numpy_version.startswith("1.")
        assert Path(prefix) == env
        assert not list(
            env.glob("lib/python3*/site-packages/pip")
        )  # --without-pip, and pip is not a base package
    assert (old / "ruth-env.json").is_file() and "--system-site-packages" not in (
        old / "pyvenv.cfg"
    ).read_text()
    assert "include-system-site-packages = false" in (old / "pyvenv.cfg").read_text()


def test_ensure_env_returns_the_cached_environment_without_building(six_envs, tmp_path, caplog):
    marker = six_envs["1.16.0"] / "ruth-env.json"
    before = marker.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="ruthgen.envs")
    started = time.monotonic()
    again = envs.ensure_env(plugin_with(tmp_path, "# the same requirement\nsix==1.16.0\n"), make_contract())
    assert again == six_envs["1.16.0"] and time.monotonic() - started < 1.0
    assert marker.stat().st_mtime_ns == before
    assert "building environment" not in caplog.text


def test_environment_activates_from_wherever_it_is_copied(six_envs, tmp_path):
    moved = tmp_path / "elsewhere" / "env"
    shutil.copytree(six_envs["1.17.0"], moved, symlinks=True)
    script = (
        'source "$1/bin/activate" && echo "$VIRTUAL_ENV" && python3 -c "import six, sys; print(sys.prefix)"'
    )
    done = subprocess.run(
        ["bash", "-c", script, "bash", str(moved)], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == [str(moved), str(moved)]


def test_ensure_env_rebuilds_offline_from_the_kept_wheels(six_envs, tmp_path, monkeypatch):
    shutil.rmtree(six_envs["1.16.0"])
    monkeypatch.setenv(envs.OFFLINE_ENV, "1")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # any index access would fail
    rebuilt = envs.ensure_env(plugin_with(tmp_path, "six==1.16.0\n"), make_contract())
    assert rebuilt == six_envs["1.16.0"]
    assert env_python(rebuilt, "import six; print(six.__version__)") == "1.16.0"


def test_ensure_env_builds_once_when_two_builds_race(six_envs, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(envs.OFFLINE_ENV, "1")  # the wheels are kept from the builds above
    caplog.set_level(logging.INFO, logger="ruthgen.envs")
    folder = plugin_with(tmp_path, "six==1.17.0\n")
    contract = make_contract(no_deps=True)
    results: list[Path | BaseException] = []

    def build() -> None:
        try:
            results.append(envs.ensure_env(folder, contract))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 2 and results[0] == results[1], results
    assert caplog.text.count("building environment") == 1
    leftovers = [p.name for p in Path(os.environ[envs.CACHE_ENV]).iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_ensure_env_refuses_numpy_2_requirements_before_building(env_cache, tmp_path):
    with pytest.raises(EnvironmentBuildError, match=r"requirements.txt:1 asks for 'numpy>=2.0'.*numpy<2"):
        envs.ensure_env(plugin_with(tmp_path, "numpy>=2.0\n"), make_contract())
    assert not any(p.name.startswith(".") and ".tmp-" in p.name for p in env_cache.iterdir())


def test_ensure_env_names_the_package_whose_dependencies_need_numpy_2(env_cache, tmp_path):
    folder = plugin_with(tmp_path, "opencv-python-headless==4.12.0.88\n")
    with pytest.raises(EnvironmentBuildError) as info:
        envs.ensure_env(folder, make_contract())
    message = str(info.value)
    assert "numpy<2" in message and "opencv-python-headless 4.12.0.88 depends on numpy" in message


def test_fetched_wheels_enter_the_wheelhouse_whole_and_a_kept_one_stays(tmp_path):
    fetched, wheelhouse = tmp_path / "fetched", tmp_path / "_wheels"
    fetched.mkdir()
    wheelhouse.mkdir()
    (fetched / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"new six")
    (fetched / "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"numpy")
    (wheelhouse / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"kept six")
    kept = (wheelhouse / "six-1.17.0-py2.py3-none-any.whl").stat().st_ino
    envs._keep_wheels(fetched, wheelhouse)
    assert sorted(p.name for p in wheelhouse.iterdir()) == [
        "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl", "six-1.17.0-py2.py3-none-any.whl"
    ]
    assert (wheelhouse / "six-1.17.0-py2.py3-none-any.whl").stat().st_ino == kept
    assert (wheelhouse / "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl").read_bytes() == b"numpy"


def test_fetched_wheels_are_copied_then_renamed_when_a_rename_cannot_move_them(tmp_path, monkeypatch):
    fetched, wheelhouse = tmp_path / "fetched", tmp_path / "_wheels"
    fetched.mkdir()
    wheelhouse.mkdir()
    (fetched / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"six")
    real_replace = os.replace

    def replace(src, dst):  # another file system: only renames inside the wheelhouse work
        if Path(src).parent != wheelhouse:
            raise OSError(18, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(envs.os, "replace", replace)
    envs._keep_wheels(fetched, wheelhouse)
    assert [p.name for p in wheelhouse.iterdir()] == ["six-1.17.0-py2.py3-none-any.whl"]
    assert (wheelhouse / "six-1.17.0-py2.py3-none-any.whl").read_bytes() == b"six"
