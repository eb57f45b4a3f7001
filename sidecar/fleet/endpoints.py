"""Where the runtimes are: a static list of ``host:port``, or a DNS name resolved again and again.

A DNS name (``dns:///ruth-runtime-headless.video.svc.cluster.local:50051``) is a Kubernetes headless
Service: it resolves to one address per ready pod. It is resolved again every ``interval_s`` and at
once when a runtime fails. A lookup that fails or finds nothing keeps the runtimes known so far (a DNS
outage does not drop runtimes that answer) and is reported as :attr:`Endpoints.error`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

DNS_PREFIX = "dns:///"

#: host, port -> the addresses it resolves to (``getaddrinfo``'s by default)
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The IP addresses of ``host`` (IPv4 and IPv6, in the resolver's order, each once)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as its host and port."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{target!r} is not host:port")
    return host.strip("[]"), int(port)


def join_target(address: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(address).version == 6
    except ValueError:
        is_v6 = False
    return f"[{address}]:{port}" if is_v6 else f"{address}:{port}"


class Endpoints:
    """The targets to connect to now: :meth:`refresh` updates :attr:`targets` (DNS) and says whether
    they changed."""

    def __init__(
        self, targets: str | Sequence[str], interval_s: float = 10.0, resolver: Resolver | None = None
    ) -> None:
        if isinstance(targets, str):
            targets = [targets]
        dns = [t for t in targets if t.startswith(DNS_PREFIX)]
        if dns and len(targets) > 1:
            raise ValueError("give one dns:/// name, or a list of host:port")
        self.name = dns[0] if dns else None
        self.interval_s = interval_s
        self._resolve = resolver or resolve
        self.targets: list[str] = [] if dns else list(dict.fromkeys(targets))
        for target in self.targets:
            split_target(target)
        self.error: str | None = None  # why the last lookup gave nothing (None: it worked)

    @property
    def dynamic(self) -> bool:
        return self.name is not None

    def describe(self) -> str:
        return self.name or ", ".join(self.targets)

    async def refresh(self) -> bool:
        """Resolve the DNS name again (nothing to do for a static list); True when the targets changed."""
        if self.name is None:
            return False
        host, port = split_target(self.name[len(DNS_PREFIX):])
        try:
            addresses = await self._resolve(host, port)
        except (OSError, UnicodeError) as e:
            self.error = f"the DNS name {host} does not resolve ({e})"
            return False
        if not addresses:
            self.error = f"the DNS name {host} resolves to no address"
            return False
        self.error = None
        targets = sorted(join_target(a, port) for a in addresses)
        changed = targets != self.targets
        self.targets = targets
        return changed
