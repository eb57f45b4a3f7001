"""Error codes and messages of the plugin runtime (see docs/internals.md, "Errors from the wrapper").

A failed request is answered with ``[RUTH:<CODE>] <phase>: <message>``; a failed load raises
:class:`LoadError`, whose message has the same shape with the code ``LOAD_FAILED`` so that the
reason Triton records in its repository index parses with the same expression.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

INVALID_INPUT = "INVALID_INPUT"
PREPROCESS_ERROR = "PREPROCESS_ERROR"
INFERENCE_ERROR = "INFERENCE_ERROR"
POSTPROCESS_ERROR = "POSTPROCESS_ERROR"
OUTPUT_SCHEMA_VIOLATION = "OUTPUT_SCHEMA_VIOLATION"
TIMEOUT = "TIMEOUT"
LOAD_FAILED = "LOAD_FAILED"

REQUEST_CODES = (
    INVALID_INPUT,
    PREPROCESS_ERROR,
    INFERENCE_ERROR,
    POSTPROCESS_ERROR,
    OUTPUT_SCHEMA_VIOLATION,
    TIMEOUT,
)
MESSAGE_RE = re.compile(r"\[RUTH:([A-Z_]+)\]\s*(.*)", re.S)


class RuthError(Exception):
    """One request (or the load) failed in ``phase`` with ``code``."""

    def __init__(self, code: str, phase: str, message: str) -> None:
        super().__init__(f"[RUTH:{code}] {phase}: {message}")
        self.code = code
        self.phase = phase
        self.message = message


class LoadError(RuthError):
    """The model cannot serve: import, ``load()`` or the warmup inference failed."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(LOAD_FAILED, phase, message)


def describe(exc: BaseException, plugin_dir: Path | None = None) -> str:
    """``Type: message``, plus the deepest plugin source line (``inference.py:12``) when known."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if plugin_dir is None:
        return text
    where = _plugin_location(exc, plugin_dir)
    return f"{text} ({where})" if where else text


def _plugin_location(exc: BaseException, plugin_dir: Path) -> str:
    root = str(plugin_dir)
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(root):
            found = f"{Path(frame.filename).relative_to(root).as_posix()}:{frame.lineno}"
    return found


def parse_message(message: str) -> tuple[str, str] | None:
    """``(code, rest)`` of a runtime error message, or None when it is not one."""
    match = MESSAGE_RE.search(message)
    return (match.group(1), match.group(2)) if match else None
