"""How each model's stub is confined, as the stubs report it on Triton's metrics port.

The generated wrapper confines its stub before the plugin is imported (Landlock where the kernel
has it, else the audit-hook guard alone) and sets the gauge ``ruth_model_isolation`` with labels
``model_id``, ``version``, ``triton_name``, ``level`` (``kernel`` or ``guard``) and ``detail``, valued
at the Landlock ABI (0: the guard alone). :func:`read_isolation` turns Triton's metrics text into
one :class:`Isolation` per Triton model name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

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
