"""How each model's stub is confined, as the stubs report it on Triton's metrics port.

The generated wrapper confines its stub before the plugin is imported (Landlock where the kernel
has it, else the audit-hook guard alone) and sets the gauge ``ruth_model_isolation`` with labels
``model_id``, ``version``, ``triton_name``, ``level`` (``kernel`` or ``guard``) and ``detail``, valued
at the Landlock ABI (0: the guard alone). :func:`read_isolation` turns Triton's metrics text into
one :class:`Isolation` per Triton model name, and :class:`IsolationReports` notes it on each
serving copy's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sidecar.control.states import ModelRegistry, ModelState
from sidecar.control.tasks import cancelled

LOGGER = logging.getLogger(__name__)
FAMILY = "ruth_model_isolation"
KERNEL, GUARD = "kernel", "guard"


@dataclass(frozen=True)
class Isolation:
    level: str
    landlock_abi: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "landlock_abi": self.landlock_abi, "detail": self.detail}


def read_isolation(text: str) -> dict[str, Isolation]:
    """``{triton_name: Isolation}`` from Triton's metrics text; unreadable text gives nothing."""
    found: dict[str, Isolation] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name != FAMILY:
                continue
            for sample in family.samples:
                name = sample.labels.get("triton_name")
                if name:
                    level = sample.labels.get("level", "")
                    found[name] = Isolation(level, int(sample.value), sample.labels.get("detail", ""))
    except ValueError as exc:
        LOGGER.debug("Triton's metrics text is unreadable: %s", exc)
    return found


class IsolationReports:
    """Each serving copy's isolation, from Triton's metrics text (``read_metrics()``, None when it
    cannot be read), noted on the version's record; ``changed()`` when one changed. A copy that runs
    with the guard alone is logged as a warning."""

    def __init__(
        self,
        registry: ModelRegistry,
        read_metrics: Callable[[], Awaitable[str | None]],
        changed: Callable[[], None],
    ) -> None:
        self.registry = registry
        self.read_metrics = read_metrics
        self.changed = changed
        self._of: dict[tuple[str, str], str] = {}  # version -> the copy its isolation is of
        self._task: asyncio.Task[None] | None = None

    def note(self, text: str | None) -> None:
        """Take the isolation each serving copy reported in ``text``."""
        if text is None:
            return
        found = read_isolation(text)
        changed = False
        for record in self.registry:
            isolation = found.get(record.active_name) if record.active_name else None
            if isolation is None:
                continue
            self._of[record.key] = record.active_name
            if isolation == record.isolation:
                continue
            if isolation.level != KERNEL:
                LOGGER.warning(
                    "%s:%s runs without the kernel's confinement (guard only): %s",
                    record.model_id, record.version, isolation.detail,
                )
            record.isolation, changed = isolation, True
        if changed:
            self.changed()

    def unknown(self) -> int:
        """How many serving copies have not had their isolation read yet."""
        return sum(
            1
            for r in self.registry
            if r.state is ModelState.READY and r.active_name and self._of.get(r.key) != r.active_name
        )

    def read_soon(self) -> None:
        """Read Triton's metrics in the background while serving copies have not reported."""
        if self._task is None and self.unknown():
            with contextlib.suppress(RuntimeError):  # no running loop: the periodic refresh reads it
                self._task = asyncio.get_running_loop().create_task(self._read(), name="ruth-isolation")

    async def _read(self) -> None:
        try:
            while unknown := self.unknown():
                self.note(await self.read_metrics())
                if self.unknown() >= unknown:
                    return  # nothing new on Triton's side: the periodic refresh looks again
        except Exception:
            LOGGER.exception("reading the models' isolation from Triton failed")
        finally:
            self._task = None

    async def stop(self) -> None:
        await cancelled(self._task)
