"""scripts/uv_pip.py: the pinned uv (installed once per home), given the index settings pip has here."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("uv_pip", ROOT / "scripts" / "uv_pip.py")
assert _spec is not None and _spec.loader is not None
uv_pip = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(uv_pip)


def test_the_pinned_uv_is_the_one_that_writes_the_locks():
    assert f"UV_VERSION={uv_pip.UV_VERSION}\n" in (ROOT / "scripts" / "lock.sh").read_text()


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A home, XDG folders and /etc of their own; no PIP_* variables."""
    monkeypatch.setattr(uv_pip, "ETC_PIP_CONF", tmp_path / "etc" / "pip.conf")
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_DIRS": str(tmp_path / "xdg")}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_pip_settings_follow_pips_order_of_files_sections_and_variables(config, tmp_path):
    write(tmp_path / "xdg" / "pip" / "pip.conf", "[global]\nindex-url = https://xdg/simple\ntimeout = 5\n")
    write(tmp_path / "etc" / "pip.conf", "[global]\nindex_url = https://etc/simple\ncert = /etc/ca.pem\n")
    write(tmp_path / "home" / ".pip" / "pip.conf", "[global]\nfind-links = /legacy\n")
    write(tmp_path / "home" / ".config" / "pip" / "pip.conf",
          "[global]\nfind-links = /user\n  /user2\n[install]\nindex-url = https://user-install/simple\n")
    write(tmp_path / "venv" / "pip.conf", "[global]\ntimeout = 7\n[freeze]\nexclude = x\n")
    settings = uv_pip.pip_settings({**config, "PIP_NO_INDEX": "yes"}, prefix=str(tmp_path / "venv"))
    assert settings == {
        "index-url": "https://user-install/simple",  # [install] over any [global]
        "cert": "/etc/ca.pem",
        "find-links": "/user\n/user2",  # the user's XDG file over the legacy ~/.pip
        "timeout": "7",  # the environment's pip.conf over the user's and the global ones
        "no-index": "yes",  # a variable over every file
    }


def test_pip_config_file_comes_last_and_hides_the_users_files_or_all_when_devnull(config, tmp_path):
    write(tmp_path / "etc" / "pip.conf", "[global]\ncert = /etc/ca.pem\n")
    write(tmp_path / "home" / ".config" / "pip" / "pip.conf", "[global]\nfind-links = /user\n")
    own = write(tmp_path / "own.conf", "[global]\nindex-url = https://own/simple\n")
    settings = uv_pip.pip_settings({**config, "PIP_CONFIG_FILE": str(own)}, prefix=str(tmp_path))
    assert settings == {"cert": "/etc/ca.pem", "index-url": "https://own/simple"}
    nothing = {**config, "PIP_CONFIG_FILE": os.devnull, "PIP_CERT": "/c"}
    assert uv_pip.pip_settings(nothing, prefix=str(tmp_path)) == {"cert": "/c"}


def test_pip_settings_agree_with_pip_config_list_on_this_machine(tmp_path):
    """Against pip itself (the real /etc and variables here, a home with a file of its own)."""
    write(tmp_path / "home" / ".config" / "pip" / "pip.conf",
          "[global]\nextra-index-url = https://a/simple https://b/simple\n[install]\ntimeout = 9\n")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": ""}
    env.pop("PIP_CONFIG_FILE", None)
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    sections: dict[str, dict[str, str]] = {"global": {}, "install": {}, ":env:": {}}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if section in sections:
            sections[section][name] = ast.literal_eval(value)
    expected = {**sections["global"], **sections["install"], **sections[":env:"]}
    assert uv_pip.pip_settings(env, sys.prefix) == expected


def test_uv_options_carry_pips_index_and_certificates():
    args, env = uv_pip.uv_options({
        "index-url": "https://mirror/simple",
        "extra-index-url": "https://a/simple\nhttps://b/simple",
        "find-links": "/opt/wheels",
        "no-index": "false",
        "trusted-host": "mirror",
        "constraint": "/etc/xdg/pip/constraints.txt",
        "cert": "/etc/ssl/ca.pem",
        "default-timeout": "180.5",
        "proxy": "http://proxy:3128",
        "disable-pip-version-check": "1",
    })
    assert args == [
        "--system-certs", "--index-url", "https://mirror/simple",
        "--extra-index-url", "https://a/simple", "--extra-index-url", "https://b/simple",
        "--index-strategy", "unsafe-best-match", "--find-links", "/opt/wheels",
        "--allow-insecure-host", "mirror", "--constraint", "/etc/xdg/pip/constraints.txt",
    ]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/ca.pem", "UV_HTTP_TIMEOUT": "180",
                   "HTTP_PROXY": "http://proxy:3128", "HTTPS_PROXY": "http://proxy:3128"}
    assert uv_pip.uv_options({}) == (["--system-certs"], {})  # PyPI, as pip; the system's certificates
    assert "--no-index" in uv_pip.uv_options({"no-index": "1"})[0]


class Runs:
    """subprocess.run stand-in: records the commands; ``fail``: a substring of those that fail."""

    def __init__(self, fail: str = "") -> None:
        self.fail, self.commands = fail, []

    def __call__(self, command, **kwargs):
        self.commands.append([str(c) for c in command])
        text = " ".join(map(str, command))
        code = 1 if self.fail and self.fail in text else 0
        if code == 0 and "uv==" in text:  # pip installs uv: bin/uv in --target's folder or the venv
            into = Path(command[0]).parents[1]  # the venv of its python
            if "--target" in command:
                into = Path(command[command.index("--target") + 1])
            uv = into / "bin" / "uv"
            uv.parent.mkdir(parents=True, exist_ok=True)
            uv.write_text("#!/bin/sh\n")
            uv.chmod(0o755)
        if code and kwargs.get("check"):
            raise subprocess.CalledProcessError(code, command)
        return subprocess.CompletedProcess(command, code, "", "")


def test_uv_is_installed_once_by_this_pythons_pip_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runs = Runs()
    monkeypatch.setattr(uv_pip.subprocess, "run", runs)
    uv = uv_pip.ensure_uv("/usr/bin/python3")
    assert uv == tmp_path / "cache" / "ruth-ai-runtime" / f"uv-{uv_pip.UV_VERSION}" / "bin" / "uv"
    ((*pip, target),) = runs.commands
    assert pip[:4] == ["/usr/bin/python3", "-m", "pip", "install"] and f"uv=={uv_pip.UV_VERSION}" in pip
    assert pip[-1] == "--target" and re.search(r"uv-[\d.]+\.tmp-\d+$", target)
    assert uv_pip.ensure_uv("/usr/bin/python3") == uv and len(runs.commands) == 1
    assert [p.name for p in uv.parents[2].iterdir()] == [f"uv-{uv_pip.UV_VERSION}"]  # no folder left behind


def test_uv_comes_from_a_venvs_pip_where_this_python_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runs = Runs(fail="--target")
    monkeypatch.setattr(uv_pip.subprocess, "run", runs)
    uv = uv_pip.ensure_uv("/usr/bin/python3")
    assert uv.is_file()
    assert [c[:4] for c in runs.commands[1:]] == [
        ["/usr/bin/python3", "-m", "venv", runs.commands[1][3]],
        [str(Path(runs.commands[1][3]) / "bin" / "python"), "-m", "pip", "install"],
    ]


def test_the_command_must_name_a_pip_subcommand(capsys):
    assert uv_pip.main([]) == 2 and uv_pip.main(["--python", "x"]) == 2
    assert "usage" in capsys.readouterr().err


def test_an_install_that_loses_a_race_uses_the_winners_uv(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tool = tmp_path / "cache" / "ruth-ai-runtime" / f"uv-{uv_pip.UV_VERSION}"
    runs = Runs()

    def run_while_another_finishes(command, **kwargs):
        done = runs(command, **kwargs)
        (tool / "bin").mkdir(parents=True)
        (tool / "bin" / "uv").write_text("#!/bin/sh\n# the winner's\n")
        (tool / "bin" / "uv").chmod(0o755)
        return done

    monkeypatch.setattr(uv_pip.subprocess, "run", run_while_another_finishes)
    uv = uv_pip.ensure_uv("/usr/bin/python3")
    assert uv.read_text().endswith("# the winner's\n")
    assert [p.name for p in tool.parent.iterdir()] == [tool.name]


def test_a_failed_install_of_uv_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(uv_pip.subprocess, "run", Runs(fail="pip install"))
    why = rf"cannot install uv {re.escape(uv_pip.UV_VERSION)} into .*returned non-zero exit status 1"
    with pytest.raises(SystemExit, match=why):
        uv_pip.ensure_uv("/usr/bin/python3")
    assert list((tmp_path / "cache" / "ruth-ai-runtime").iterdir()) == []
