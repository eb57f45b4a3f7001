"""Helpers of the generator tests (imported by the test modules and conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruthgen.progress import Progress

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "plugins"
INFERENCE_PY = (
    'def load(context):\n    return None\n\n\ndef infer(state, inputs):\n    return {"score": 0.5}\n'
)


def contract(model_id: str = "demo", version: str = "1.0.0", **sections: Any) -> dict[str, Any]:
    """A minimal valid model.yaml mapping; keyword sections replace (None removes) top-level keys."""
    data: dict[str, Any] = {
        "model_id": model_id,
        "version": version,
        "display_name": "Demo",
        "input": {"type": "frame", "format": "jpeg"},
        "output": {"schema": {"score": {"type": "float", "min": 0.0, "max": 1.0}}},
    }
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def tree_bytes(root: Path, skip: tuple[str, ...] = (".ruthgen-cache.json",)) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> content; symlinks as their target)."""
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.name in skip:
            continue
        if path.is_symlink():
            out[rel] = f"-> {path.readlink()}".encode()
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


class RecordedProgress(Progress):
    """A Progress that keeps what it was told: ("step", subject, step, detail) and ("done", ..., ok)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def step(self, subject: str, step: str, detail: str = "") -> None:
        self.events.append(("step", subject, step, detail))

    def done(self, subject: str, outcome: str, ok: bool = True) -> None:
        self.events.append(("done", subject, outcome, str(ok)))
