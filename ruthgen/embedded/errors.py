"""Errors of the embedded tritonserver."""

from __future__ import annotations

from ruthgen.errors import RuthgenError


class EmbeddedTritonError(RuthgenError):
    """Root of the embedded tritonserver's errors."""

    exit_code = 4


class TritonNotInstalledError(EmbeddedTritonError):
    """The tritonserver of the ``nvidia-pytriton`` wheel, or a piece it needs, is missing."""


class LibpythonNotFoundError(EmbeddedTritonError):
    """No shared libpython of the running Python's version for the Python backend stub."""


class TritonStartError(EmbeddedTritonError):
    """The server exited or did not become ready in time; the message ends with its log tail."""


class TritonModelError(EmbeddedTritonError):
    """A load or unload through the repository API failed; the message is Triton's."""
