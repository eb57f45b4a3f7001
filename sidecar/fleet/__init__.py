"""A client over many runtimes: cameras pinned by rendezvous hashing, failover without a lost or
twice-answered frame (:class:`Fleet`; docs/sidecar.md#many-runtimes)."""

from sidecar.fleet.fleet import Answer, Fleet, RuntimeView

__all__ = ["Answer", "Fleet", "RuntimeView"]
