"""The isolation guard: a ``sys.addaudithook`` policy that keeps a plugin inside its folder.

Installed by the runtime before the plugin is imported; one hook per process (an audit hook can
never be removed), whose policy the runtime sets and clears. Rules, once active:

* writes (``open`` for writing, ``os.remove``/``rename``/``mkdir``/``rmdir``/``symlink``/``link``/
  ``truncate``/``chmod``/``chown``/``utime``) only inside the plugin folder and the plugin's scratch
  folder (its ``TMPDIR``), plus ``/dev/null``;
* network (``socket.connect``/``bind``/``sendto``/``sendmsg`` and name lookups) only with
  ``permissions.network: true``, or, with an allowlist of ``host:port`` / ``CIDR:port`` endpoints,
  connections (and datagrams) to those only: an IP is allowed when a CIDR rule holds it or when a
  lookup of an allowed host name gave it (the guard resolves the name itself, so the addresses the
  plugin then connects to are known); ``bind`` needs ``true``;
* once loaded (warmup and every request): no new processes (``subprocess``, ``os.system``,
  ``os.exec*``, ``os.posix_spawn``, ``os.spawn*``, ``os.fork``), no signals to other processes and no
  ``ctypes`` loading of a library that was not loaded during the plugin's load.

A blocked call raises ``PermissionError`` in the plugin and is recorded, so that the request fails
even if the plugin swallows the exception. This is a guard, not a sandbox: native code (C
extensions, ``ctypes`` calls into libc) is not audited, and reads are never restricted; the
kernel's confinement (``ruth_confine``), where the kernel has it, covers both.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_ALWAYS_WRITABLE = ("/dev/null",)
_NETWORK_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
    }
)
_PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty"}
)
# event -> indexes of the path arguments it writes, and the index of its dir_fd (or None)
_PATH_EVENTS: dict[str, tuple[tuple[int, ...], int | None]] = {
    "os.remove": ((0,), 1),
    "os.rmdir": ((0,), 1),
    "os.mkdir": ((0,), 2),
    "os.rename": ((0, 1), 2),
    "os.symlink": ((1,), 2),
    "os.link": ((0, 1), 2),
    "os.truncate": ((0,), None),
    "os.chmod": ((0,), 2),
    "os.chown": ((0,), 3),
    "os.utime": ((0,), 4),
}

_KILL_EVENTS = frozenset({"os.kill", "os.killpg"})
_WATCHED = (
    frozenset({"open", "ctypes.dlopen"})
    | _NETWORK_EVENTS
    | _PROCESS_EVENTS
    | _KILL_EVENTS
    | set(_PATH_EVENTS)
)


class _Quiet(str):
    """A refusal that is not the plugin's doing (the import system caching bytecode)."""


class Endpoint:
    """One allowlist rule: a host name or an IP network, and a port (None: any)."""

    __slots__ = ("host", "network", "port")

    def __init__(self, rule: str) -> None:
        address, _, port = rule.rpartition(":")
        address = address.strip("[]")
        self.port = None if port == "*" else int(port)
        try:
            self.network = ipaddress.ip_network(address, strict=False)
            self.host = None
        except ValueError:
            self.network, self.host = None, address.lower().rstrip(".")

    def port_ok(self, port: Any) -> bool:
        return self.port is None or (port is not None and str(port).isdigit() and int(port) == self.port)


class _Allowlist:
    """The endpoints a plugin may reach, and the addresses its allowed host names resolved to."""

    def __init__(self, rules: Iterable[str]) -> None:
        self.endpoints = [Endpoint(rule) for rule in rules]
        self.resolved: dict[str, set[int | None]] = {}  # ip -> ports allowed through a host name
        self._local = threading.local()

    def host_allowed(self, host: Any, port: Any) -> bool:
        name = os.fsdecode(host).lower().rstrip(".") if isinstance(host, (str, bytes)) else ""
        found = [e for e in self.endpoints if e.port_ok(port) and (e.host == name or _in(e, name))]
        if any(e.host is not None for e in found) and not getattr(self._local, "resolving", False):
            self._resolve(name, {e.port for e in found if e.host is not None})
        return bool(found)

    def address_allowed(self, ip: str, port: Any) -> bool:
        if any(e.network is not None and e.port_ok(port) and _in(e, ip) for e in self.endpoints):
            return True
        ports = self.resolved.get(ip, set())
        return None in ports or (str(port).isdigit() and int(port) in ports)

    def _resolve(self, name: str, ports: set[int | None]) -> None:
        self._local.resolving = True  # our own lookup passes the hook untouched
        try:
            for *_, sockaddr in socket.getaddrinfo(name, None):
                self.resolved.setdefault(str(sockaddr[0]), set()).update(ports)
        except OSError:
            pass
        finally:
            self._local.resolving = False

    @property
    def resolving(self) -> bool:
        return getattr(self._local, "resolving", False)


def _in(endpoint: Endpoint, ip: str) -> bool:
    if endpoint.network is None:
        return False
    try:
        return ipaddress.ip_address(ip.split("%")[0]) in endpoint.network
    except ValueError:
        return False


@dataclass
class Policy:
    """What one plugin may do; ``serving`` is False while it is imported and loaded.

    ``allow_network`` is ``permissions.network``: False, True, or a list of allowed endpoints.
    """

    plugin_dir: Path
    scratch_dir: Path
    allow_network: bool | list[str] = False
    serving: bool = False
    roots: tuple[str, ...] = ()
    loaded_libraries: set[str] = field(default_factory=set)

    allowlist: _Allowlist | None = None

    def __post_init__(self) -> None:
        folders = (self.plugin_dir, self.scratch_dir)
        roots = {os.path.abspath(f) for f in folders} | {os.path.realpath(f) for f in folders}
        self.roots = tuple(sorted(roots))
        if isinstance(self.allow_network, list):
            self.allowlist = _Allowlist(self.allow_network)

    def writable(self, path: str) -> bool:
        if path in _ALWAYS_WRITABLE:
            return True
        real = os.path.realpath(path)
        return any(real == root or real.startswith(root + os.sep) for root in self.roots)


class Guard:
    """The process-wide audit hook and the violations it recorded since the last :meth:`take`."""

    _installed = False

    def __init__(self) -> None:
        self.policy: Policy | None = None
        self._violations: list[str] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        if not Guard._installed:
            sys.addaudithook(self._hook)
            Guard._installed = True

    def activate(self, policy: Policy) -> None:
        self.take()
        self.policy = policy

    def start_serving(self) -> None:
        if self.policy is not None:
            self.policy.serving = True

    def deactivate(self) -> None:
        self.policy = None
        self.take()

    def take(self) -> list[str]:
        with self._lock:
            found, self._violations = self._violations, []
        return found

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        policy = self.policy
        if policy is None or event not in _WATCHED:
            return
        reason = _check(policy, event, args)
        if reason is None:
            return
        if not isinstance(reason, _Quiet):
            with self._lock:
                self._violations.append(reason)
        raise PermissionError(f"[ruth guard] {reason}")


def _check(policy: Policy, event: str, args: tuple[Any, ...]) -> str | None:
    if event == "open":
        return _check_open(policy, args)
    if event in _PATH_EVENTS:
        indexes, dir_fd_index = _PATH_EVENTS[event]
        dir_fd = args[dir_fd_index] if dir_fd_index is not None and len(args) > dir_fd_index else None
        for path in _paths(args, indexes, dir_fd):
            if not policy.writable(path):
                if event == "os.mkdir" and os.path.basename(path.rstrip("/")) == "__pycache__":
                    return _Quiet(f"bytecode cache folder skipped: {path}")  # the import system's: it copes
                return f"{event} outside the plugin's folders is not permitted: {path}"
        return None
    if event in _NETWORK_EVENTS:
        if policy.allow_network is True:
            return None
        target = args[0] if event.startswith("socket.get") else (args[1] if len(args) > 1 else "")
        if policy.allowlist is not None:
            return _check_allowlist(policy.allowlist, event, args, target)
        return f"network access ({event} {target}) needs permissions.network: true"
    if not policy.serving:
        if event == "ctypes.dlopen" and args and args[0]:
            policy.loaded_libraries.add(str(args[0]))
        return None
    return _check_serving(policy, event, args)


def _check_allowlist(allowlist: _Allowlist, event: str, args: tuple[Any, ...], target: Any) -> str | None:
    if allowlist.resolving:
        return None
    if event == "socket.getaddrinfo" and allowlist.host_allowed(args[0], args[1] if len(args) > 1 else None):
        return None
    if event == "socket.gethostbyname" and allowlist.host_allowed(args[0], None):
        return None
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg") and isinstance(target, tuple):
        host, port = target[0], target[1] if len(target) > 1 else None
        if allowlist.address_allowed(str(host), port) or allowlist.host_allowed(host, port):
            return None
    return f"network access ({event} {target}) is not in permissions.network's allowlist"


def _check_serving(policy: Policy, event: str, args: tuple[Any, ...]) -> str | None:
    if event in _PROCESS_EVENTS:
        return f"starting processes ({event}) is not permitted"
    if event in _KILL_EVENTS and args and args[0] != os.getpid():
        return f"signalling other processes ({event}) is not permitted"
    if event == "ctypes.dlopen" and args and args[0] and str(args[0]) not in policy.loaded_libraries:
        return f"loading a native library after load() is not permitted: {args[0]}"
    return None


def _check_open(policy: Policy, args: tuple[Any, ...]) -> str | None:
    path, _mode, flags = (*args, None, None, None)[:3]
    if not isinstance(flags, int) or not flags & _WRITE_FLAGS or isinstance(path, int) or path is None:
        return None
    text = os.fsdecode(path)
    if policy.writable(text):
        return None
    if "__pycache__" in text:  # the import system caching bytecode: refuse quietly, it copes
        return _Quiet(f"bytecode cache write skipped: {text}")
    return f"writing outside the plugin's folders is not permitted: {text}"


def _paths(args: tuple[Any, ...], indexes: Iterable[int], dir_fd: Any) -> list[str]:
    found = []
    for i in indexes:
        if i >= len(args) or isinstance(args[i], int) or args[i] is None:
            continue
        path = os.fsdecode(args[i])
        if isinstance(dir_fd, int) and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        found.append(path)
    return found
