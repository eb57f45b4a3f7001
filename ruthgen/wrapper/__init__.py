"""The plugin runtime copied into every generated entry (it runs inside the Triton Python stub).

The modules are plain top-level modules (``import ruth_runtime``): the writer copies
:data:`RUNTIME_FILES` into ``<entry>/1/`` next to the rendered ``model.py``, which is the only file
that imports ``triton_python_backend_utils``. Their ``ruth_`` prefix keeps them from clashing with
packages of the model's environment (the stub appends the version folder to ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent
RUNTIME_FILES: tuple[Path, ...] = tuple(
    RUNTIME_DIR / name
    for name in (
        "ruth_api.py",
        "ruth_confine.py",
        "ruth_decode.py",
        "ruth_deadline.py",
        "ruth_errors.py",
        "ruth_guard.py",
        "ruth_loader.py",
        "ruth_metrics.py",
        "ruth_protocol.py",
        "ruth_runtime.py",
    )
)

__all__ = ["RUNTIME_DIR", "RUNTIME_FILES"]
