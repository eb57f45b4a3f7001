"""The embedded tritonserver: the one list of server flags and the launcher."""

from ruthgen.embedded.launcher import EmbeddedTriton

__all__ = ["EmbeddedTriton"]
