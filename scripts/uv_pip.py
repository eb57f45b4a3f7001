#!/usr/bin/env python3
"""`uv pip COMMAND ...` with the project's pinned uv, reaching the package index the way pip does here.

    python3 scripts/uv_pip.py install --python .venv/bin/python -c constraints/py3.11.txt -e ".[embedded]"

What the Makefile installs `.venv/` with (uv installs the locked versions many times faster than pip).

* uv, pinned (UV_VERSION, the one scripts/lock.sh resolves the locks with), is installed once per
  home into ``${XDG_CACHE_HOME:-~/.cache}/ruth-ai-runtime/uv-<version>`` (scripts/lock.sh's folder:
  either makes it, both use it) by the pip of the Python running this script, ``pip install
  --target`` (about 2 s); where that Python has no usable pip, by the pip of a venv made for it.
* uv reads no pip configuration, so the index settings pip has here (its configuration files and
  ``PIP_*`` variables, in pip's own order: :func:`pip_settings`) become uv's options
  (:func:`uv_options`): index-url, extra-index-url (pip's rule, the best version over every index),
  find-links, no-index, trusted-host, constraint, cert, client-cert, timeout, proxy.
* Certificates: uv trusts the system's store (``--system-certs``) as pip >= 24.2 does (truststore;
  behind a TLS-inspecting proxy whose CA only the system knows, uv's own roots fail), and pip's
  ``cert`` as ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

UV_VERSION = "0.13.9"
_TRUE = ("1", "true", "yes", "on", "y", "t")
#: pip reads it after the XDG configuration folders' files
ETC_PIP_CONF = Path("/etc/pip.conf")


def tool_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the pinned uv lives: ``${XDG_CACHE_HOME:-~/.cache}/ruth-ai-runtime/uv-<version>``."""
    cache = environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "ruth-ai-runtime" / f"uv-{UV_VERSION}"


def ensure_uv(python: str = sys.executable) -> Path:
    """The pinned uv's executable, installed from the package index by pip when missing."""
    tool = tool_dir()
    uv = tool / "bin" / "uv"
    if os.access(uv, os.X_OK):
        return uv
    tool.parent.mkdir(parents=True, exist_ok=True)
    tmp = tool.with_name(f"{tool.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pip = ["-m", "pip", "install", "-q", "--disable-pip-version-check", f"uv=={UV_VERSION}"]
    try:
        done = subprocess.run([python, *pip, "--target", str(tmp)], capture_output=True, text=True)
        if done.returncode != 0:  # no pip in this Python, or one that refuses: a venv's pip
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                subprocess.run([python, "-m", "venv", str(tmp)], check=True)
                subprocess.run([str(tmp / "bin" / "python"), *pip], check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                target = (done.stderr or done.stdout).strip().splitlines()[-1:]  # why --target failed
                raise SystemExit(f"cannot install uv {UV_VERSION} into {tool}: {exc}"
                                 f"{'; ' + target[0] if target else ''}") from exc
        try:
            os.rename(tmp, tool)
        except OSError:  # another install won the race: use its uv
            if not os.access(uv, os.X_OK):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return uv


def _config_files(environ: Mapping[str, str], prefix: str) -> list[Path]:
    """pip's configuration files in the order pip reads them, the later overriding the earlier."""
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    dirs = environ.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg"
    found = [Path(d) / "pip" / "pip.conf" for d in dirs.split(os.pathsep) if d] + [ETC_PIP_CONF]
    if not (env_file and os.path.exists(env_file)):  # pip skips the user's files then
        config_home = environ.get("XDG_CONFIG_HOME", "").strip() or str(home / ".config")
        found += [home / ".pip" / "pip.conf", Path(config_home) / "pip" / "pip.conf"]
    found.append(Path(prefix) / "pip.conf")
    if env_file:
        found.append(Path(env_file))
    return found


def _name(key: str) -> str:
    return key.lower().replace("_", "-").lstrip("-")


def pip_settings(environ: Mapping[str, str] = os.environ, prefix: str = sys.prefix) -> dict[str, str]:
    """What `pip install` reads from its configuration: the files' ``[global]``, then their
    ``[install]``, then the ``PIP_*`` variables, each overriding the one before (``prefix``: the
    environment whose ``pip.conf`` is the site file)."""
    sections: dict[str, dict[str, str]] = {"global": {}, "install": {}}
    for path in _config_files(environ, prefix):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (OSError, configparser.Error, UnicodeDecodeError):
            continue
        for section, values in sections.items():
            if parser.has_section(section):
                values.update({_name(k): v for k, v in parser.items(section)})
    settings = {**sections["global"], **sections["install"]}
    for key, value in environ.items():
        if key.startswith("PIP_") and key != "PIP_CONFIG_FILE":
            settings[_name(key[4:])] = value
    return settings


def uv_options(settings: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """pip's index settings as ``uv pip install`` options and environment variables."""
    args: list[str] = ["--system-certs"]
    env: dict[str, str] = {}

    def values(key: str) -> list[str]:
        return settings.get(key, "").split()

    index = settings.get("index-url", "").strip()
    if index:
        args += ["--index-url", index]
    extra = values("extra-index-url")
    for url in extra:
        args += ["--extra-index-url", url]
    if extra:  # pip takes the best version over every index; uv's default stops at the first
        args += ["--index-strategy", "unsafe-best-match"]
    for link in values("find-links"):
        args += ["--find-links", link]
    if settings.get("no-index", "").strip().lower() in _TRUE:
        args.append("--no-index")
    for host in values("trusted-host"):
        args += ["--allow-insecure-host", host]
    for constraint in values("constraint"):
        args += ["--constraint", constraint]
    if settings.get("cert", "").strip():
        env["SSL_CERT_FILE"] = settings["cert"].strip()
    if settings.get("client-cert", "").strip():
        env["SSL_CLIENT_CERT"] = settings["client-cert"].strip()
    timeout = (settings.get("timeout") or settings.get("default-timeout") or "").strip()
    if timeout:
        with contextlib.suppress(ValueError):  # pip would refuse it; uv's default then
            env["UV_HTTP_TIMEOUT"] = str(max(1, round(float(timeout))))
    proxy = settings.get("proxy", "").strip()
    if proxy:
        env["HTTP_PROXY"] = env["HTTPS_PROXY"] = proxy
    return args, env


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(f"usage: {Path(sys.argv[0]).name} PIP_COMMAND [uv pip options ...]", file=sys.stderr)
        return 2
    uv = ensure_uv()
    args, env = uv_options(pip_settings())
    command = [str(uv), "pip", argv[0], *args, *argv[1:]]
    os.execve(command[0], command, {**os.environ, **env})
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
