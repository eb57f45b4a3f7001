"""Kernel confinement of a model's stub process with Landlock (no Triton import here).

:func:`confine` restricts the calling thread, and every thread and process it starts later, to
what :class:`Rules` allow: the kernel refuses everything else, whether it comes from Python, a C
extension or ``ctypes``. It is irreversible, so only the stub calls it (``model.py``'s
``initialize``), before the plugin is imported. Landlock is used at the newest ABI the kernel has:

======  =================================================================================
ABI     what is enforced
======  =================================================================================
1       filesystem: read, write, execute, make and remove files, beneath the allowed folders
2       renaming or linking a file into another folder (``REFER``)
3       truncating a file
4       TCP: ``connect`` to ports not allowed and ``bind`` (any port)
5       ``ioctl`` on device files other than the allowed devices
6       abstract UNIX sockets and signals to processes outside the confinement
======  =================================================================================

A kernel without Landlock (older Jetson kernels, ``CONFIG_SECURITY_LANDLOCK`` off, ``lsm=``
without it) or a container whose seccomp profile refuses the system calls gives ABI 0:
:func:`confine` then changes nothing and says why in the returned :class:`Isolation`, and the
runtime relies on the audit-hook guard (``ruth_guard``) alone.

The binding is the three system calls (``landlock_create_ruleset``, ``landlock_add_rule``,
``landlock_restrict_self``: numbers 444-446 on every architecture Triton ships for) and
``prctl(PR_SET_NO_NEW_PRIVS)``, called through libc.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import glob
import os
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruth_errors import LoadError

KERNEL, GUARD = "kernel", "guard"
ISOLATION_ENV = "RUTH_ISOLATION"  # auto (default): the kernel where it can; kernel: required; guard: never
SCRATCH_ENV = "RUTH_SCRATCH_DIR"  # where the plugins' scratch folders go (default: <temp>/ruth-scratch)
MODES = ("auto", "kernel", "guard")
STUB_EXECUTABLE = "triton_python_backend_stub"

#: what every stub reads besides its own folders: the system's programs and libraries, the kernel's
#: views of this process and the machine, and the few files of /etc that libc and TLS need
SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/proc", "/sys")
ETC_READ = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone",
    "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf",
    "/etc/services", "/etc/protocols", "/etc/passwd", "/etc/group", "/etc/ssl", "/etc/pki",
    "/etc/ca-certificates", "/etc/fonts", "/etc/mime.types", "/etc/os-release", "/etc/nv_tegra_release",
)
DEVICES_READ = ("/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEVICES_WRITE = ("/dev/null",)
#: a GPU instance's devices: NVIDIA's on a PC or server, Tegra's on Jetson, DRM render nodes
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri", "/dev/nvhost-*", "/dev/nvmap", "/dev/nvgpu")

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38

#: the filesystem rights, in the kernel's bit order: REFER came with ABI 2, TRUNCATE 3, IOCTL_DEV 5
FS = enum.IntFlag(
    "FS",
    [
        "EXECUTE", "WRITE_FILE", "READ_FILE", "READ_DIR", "REMOVE_DIR", "REMOVE_FILE", "MAKE_CHAR",
        "MAKE_DIR", "MAKE_REG", "MAKE_SOCK", "MAKE_FIFO", "MAKE_BLOCK", "MAKE_SYM", "REFER", "TRUNCATE",
        "IOCTL_DEV",
    ],
    start=1,
)
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

_FS_ABI1 = FS.REFER - 1
_FS_BY_ABI = {1: _FS_ABI1, 2: _FS_ABI1 | FS.REFER, 3: _FS_ABI1 | FS.REFER | FS.TRUNCATE}
_FS_NEWEST = _FS_ABI1 | FS.REFER | FS.TRUNCATE | FS.IOCTL_DEV
#: the rights a rule on a file (not a folder) may hold
_FILE_RIGHTS = FS.EXECUTE | FS.WRITE_FILE | FS.READ_FILE | FS.TRUNCATE | FS.IOCTL_DEV
READ = FS.EXECUTE | FS.READ_FILE | FS.READ_DIR
WRITE = _FS_NEWEST & ~(FS.MAKE_CHAR | FS.MAKE_BLOCK)
DEVICE = FS.READ_FILE | FS.WRITE_FILE | FS.READ_DIR | FS.IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


_RULESET_SIZE = {1: 8, 2: 8, 3: 8, 4: 16, 5: 16}  # the struct as the ABI knows it; 24 from ABI 6


@dataclass(frozen=True)
class Rules:
    """What a confined process may do; paths that do not exist are left out.

    ``connect_ports``: the TCP ports ``connect`` may reach, or None for any (the network is then
    not restricted by the kernel, only by the guard). ``bind``: whether TCP ``bind`` is allowed.
    """

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    connect_ports: frozenset[int] | None = frozenset()
    bind: bool = False


@dataclass(frozen=True)
class Isolation:
    """What confined a process: ``kernel`` (Landlock at ``abi``) or only the ``guard``."""

    level: str
    abi: int
    detail: str
    refused: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "landlock_abi": self.abi, "detail": self.detail}


class ConfineError(OSError):
    """A Landlock call failed after the kernel said it supports Landlock."""


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _call(libc: Any, what: str, *args: Any) -> int:
    result = libc.syscall(*args)
    if result < 0:
        code = ctypes.get_errno()
        raise ConfineError(code, f"{what}: {os.strerror(code)}")
    return int(result)


def landlock_abi() -> tuple[int, str]:
    """The kernel's Landlock ABI (0 when unusable) and, when 0, why."""
    try:
        libc = _libc()
    except OSError as exc:
        return 0, f"libc cannot be loaded: {exc}"
    version = ctypes.c_uint32(_CREATE_RULESET_VERSION)
    result = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), version)
    if result > 0:
        return int(result), ""
    code = ctypes.get_errno()
    reasons = {
        errno.ENOSYS: "the kernel has no Landlock system calls (older than 5.13, or seccomp refuses them)",
        errno.EOPNOTSUPP: "Landlock is built into the kernel but not enabled (see the lsm= boot parameter)",
        errno.EPERM: "a seccomp profile refuses the Landlock system calls",
    }
    return 0, reasons.get(code, f"landlock_create_ruleset failed: {os.strerror(code)}")


def confine(rules: Rules, abi: int | None = None) -> Isolation:
    """Confine the calling thread (and what it starts from now on) to ``rules``; never undone.

    Returns ``guard`` with the reason when the kernel has no usable Landlock, without changing
    anything. Raises :class:`ConfineError` when Landlock is there but refused a ruleset (a
    defect: the caller must not serve unconfined as if it were confined).
    """
    found, why = landlock_abi()
    abi = found if abi is None else min(abi, found)
    if abi < 1:
        return Isolation(GUARD, 0, why or "Landlock is not available")
    libc = _libc()
    fs = _FS_BY_ABI.get(abi, _FS_NEWEST)
    net = (NET_CONNECT_TCP if rules.connect_ports is not None else 0) | (0 if rules.bind else NET_BIND_TCP)
    net = net if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    size = _RULESET_SIZE.get(abi, ctypes.sizeof(_RulesetAttr))
    ruleset = _call(
        libc, "landlock_create_ruleset", _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0
    )
    refused: list[str] = []
    try:
        for paths, rights in ((rules.read, READ), (rules.write, WRITE), (rules.devices, DEVICE)):
            for path in _unique(paths):
                _allow_path(libc, ruleset, path, rights & fs, refused)
        if net & NET_CONNECT_TCP:
            for port in sorted(rules.connect_ports or ()):
                rule = _NetPortAttr(NET_CONNECT_TCP, port)
                _add_rule(libc, ruleset, _RULE_NET_PORT, rule)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise ConfineError(code, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code)}")
        _call(libc, "landlock_restrict_self", _SYS_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    return Isolation(KERNEL, abi, _describe(abi, rules, net), tuple(refused))


def stub_rules(
    version_dir: Path,
    plugin_dir: Path,
    scratch: Path,
    network: bool | list[str],
    *,
    gpu: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Rules:
    """What a model's stub may do once confined: read its version folder (the wrapper and the
    plugin), its Python (environment, interpreter, ``sys.path``, ``LD_LIBRARY_PATH``) and the
    system's libraries; write only in its plugin folder and ``scratch``; a GPU instance its device
    files; TCP as ``permissions.network`` says (``network``: False, True or the allowlist of
    ``host:port``). Of ``sys.path``, only what belongs to an environment is read (inside a prefix,
    or a ``site-packages``/``dist-packages`` folder): not the working folder, a project checkout
    an editable install added, or ``PYTHONPATH`` folders, which may hold other plugins. A path that
    holds the whole repository (``/``) is left out whatever it is."""
    environ = os.environ if environ is None else environ
    prefixes = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]
    python = [*prefixes, *(p for p in sys.path if _in_an_environment(p, prefixes))]
    python.append(str(sysconfig.get_config_var("LIBDIR") or ""))
    python.extend(environ.get("LD_LIBRARY_PATH", "").split(os.pathsep))
    python.append(os.path.dirname(os.path.realpath("/proc/self/exe")))  # the stub's own folder
    repository = os.path.realpath(Path(version_dir).parent.parent)
    python = [p for p in python if p and not _holds(os.path.realpath(p), repository)]
    read = [str(version_dir), *python, *SYSTEM_READ, *ETC_READ, *DEVICES_READ]
    read += [os.path.realpath(p) for p in read if p]
    devices = [d for pattern in GPU_DEVICES for d in sorted(glob.glob(pattern))] if gpu else []
    if network is True:
        ports: frozenset[int] | None = None
    elif isinstance(network, list):
        found = [rule.rpartition(":")[2] for rule in network]
        ports = None if "*" in found else frozenset(int(p) for p in found if p.isdigit())
    else:
        ports = frozenset()
    return Rules(
        read=tuple(read),
        write=(str(plugin_dir), str(scratch), *DEVICES_WRITE),
        devices=tuple(devices),
        connect_ports=ports,
        bind=network is True,
    )


def scratch_dir(model_id: str, version: str, environ: Mapping[str, str] | None = None) -> Path:
    """The plugin version's own writable folder (made if missing, kept across loads):
    ``$RUTH_SCRATCH_DIR/<model_id>/<version>``, by default under the system temp dir."""
    environ = os.environ if environ is None else environ
    root = environ.get(SCRATCH_ENV) or os.path.join(tempfile.gettempdir(), "ruth-scratch")
    folder = Path(root) / model_id / version
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def in_stub() -> bool:
    """True inside Triton's Python stub process (the only process the runtime ever confines)."""
    try:
        return os.path.basename(os.readlink("/proc/self/exe")) == STUB_EXECUTABLE
    except OSError:
        return False


def isolate(
    version_dir: Path, entry: Mapping[str, Any], gpu: bool = False, environ: Mapping[str, str] | None = None
) -> tuple[Isolation, Path]:
    """Confine this stub for the plugin of ``entry`` (its manifest record: ``model_id``,
    ``version``, the contract's ``permissions.network``) and point ``TMPDIR`` at its scratch folder.

    ``RUTH_ISOLATION``: ``auto`` confines where the kernel can and falls back to the guard alone;
    ``kernel`` refuses to load without the kernel's confinement (:class:`LoadError`); ``guard``
    never confines. A process that is not a Triton stub (tests, tools) is never confined.
    """
    environ = os.environ if environ is None else environ
    mode = (environ.get(ISOLATION_ENV) or "auto").strip().lower()
    if mode not in MODES:
        raise LoadError("isolation", f"{ISOLATION_ENV}={mode!r} is not one of {', '.join(MODES)}")
    network = (entry["contract"].get("permissions") or {}).get("network", False)
    scratch = scratch_dir(str(entry["model_id"]), str(entry["version"]), environ)
    if mode == "guard":
        isolation = Isolation(GUARD, 0, f"{ISOLATION_ENV}=guard")
    elif not in_stub():
        isolation = Isolation(GUARD, 0, "not a Triton stub process")
    else:
        try:
            plugin_dir = version_dir / "plugin"
            rules = stub_rules(version_dir, plugin_dir, scratch, network, gpu=gpu, environ=environ)
            isolation = confine(rules)
        except ConfineError as exc:
            raise LoadError("isolation", f"the kernel refused the confinement: {exc}") from exc
    if mode == "kernel" and isolation.level != KERNEL:
        message = f"{ISOLATION_ENV}=kernel, but the kernel cannot confine: {isolation.detail}"
        raise LoadError("isolation", message)
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # gettempdir() looks again, and finds the scratch folder
    return isolation, scratch


def _allow_path(libc: Any, ruleset: int, path: str, rights: int, refused: list[str]) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # not on this machine: nothing to allow
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(rights, fd)
        try:
            _add_rule(libc, ruleset, _RULE_PATH_BENEATH, rule)
        except ConfineError as exc:
            refused.append(f"{path}: {exc.strerror}")
    finally:
        os.close(fd)


def _in_an_environment(path: str, prefixes: list[str]) -> bool:
    if not path:
        return False
    real = os.path.realpath(path)
    if os.path.basename(real.rstrip(os.sep)) in ("site-packages", "dist-packages"):
        return True
    return any(_holds(os.path.realpath(prefix), real) for prefix in prefixes if prefix)


def _holds(folder: str, path: str) -> bool:
    """True when ``path`` is ``folder`` or lies beneath it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _add_rule(libc: Any, ruleset: int, kind: int, rule: Any) -> None:
    _call(libc, "landlock_add_rule", _SYS_ADD_RULE, ruleset, kind, ctypes.byref(rule), 0)


def _unique(paths: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for path in paths:
        if path:
            seen.setdefault(os.path.abspath(path), None)
    return list(seen)


def _describe(abi: int, rules: Rules, net: int) -> str:
    parts = [f"Landlock ABI {abi}: files"]
    if net & NET_CONNECT_TCP:
        ports = ",".join(str(p) for p in sorted(rules.connect_ports or ())) or "none"
        parts.append(f"TCP connect to ports {ports}")
    elif abi >= 4:
        parts.append("TCP connect to any port")
    if abi >= 4:
        parts.append("TCP bind allowed" if rules.bind else "no TCP bind")
    if abi >= 5:
        parts.append("device ioctl")
    if abi >= 6:
        parts.append("signals and abstract UNIX sockets scoped")
    return "; ".join(parts)
