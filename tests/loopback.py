"""Several runtimes on one machine as on several hosts: each on its own loopback address (127.0.0.2,
127.0.0.3, ...: Linux routes all of 127/8 to lo), all on one port, as the pods behind a headless Service."""

from __future__ import annotations

import socket
from collections.abc import Sequence

HOSTS = [f"127.0.0.{n}" for n in range(2, 8)]


def free_port_on(hosts: Sequence[str]) -> int:
    """A TCP port free on every one of ``hosts``."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port is free on every one of {', '.join(hosts)}")
