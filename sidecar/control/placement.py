"""Where versions that need GPU memory go, and in which order they load when it may not hold them all.

A version whose contract sets ``hardware.min_gpu_memory_mb`` loads only when every GPU has that much
free per GPU instance (Triton places a ``KIND_GPU`` group on each GPU), after what the loads since the
last hardware figures reserved. When memory may not hold every version, the versions named in
``preferred_versions`` load first, then each model's newest before any model's older ones.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from ruthgen.interface import GpuInfo, ManifestEntry, ModelContract, semver_key
from sidecar.control.states import ModelRecord


class GpuPlacement:
    def __init__(
        self, gpus: Callable[[], tuple[GpuInfo, ...]] | None = None, preferred_versions: Collection[str] = ()
    ) -> None:
        self._gpus = gpus or tuple
        self.preferred_versions = frozenset(preferred_versions)
        self._snapshot: tuple[GpuInfo, ...] = ()
        self._reserved: dict[int, int] = {}

    def needs_memory(self, contract: ModelContract | None) -> bool:
        """Whether a version of ``contract`` waits for its turn to load (it needs GPU memory here)."""
        return bool(contract is not None and contract.hardware.supports_gpu
                    and contract.hardware.min_gpu_memory_mb and self._gpus())

    def reserve(self, staged: ManifestEntry) -> str:
        """"" when copy ``staged`` may load (its memory is then reserved), else why not
        (RESOURCE_EXHAUSTED: the version is FAILED)."""
        per_instance = staged.contract.hardware.min_gpu_memory_mb if staged.contract else None
        gpus = self._gpus()
        if not per_instance or not gpus or staged.triton is None or staged.triton.instance_kind != "KIND_GPU":
            return ""
        if gpus is not self._snapshot:  # new figures: they include what was loaded before them
            self._snapshot, self._reserved = gpus, {}
        need = per_instance * staged.triton.instance_count
        for gpu in gpus:
            if gpu.memory_available_mb is None:
                continue
            free = gpu.memory_available_mb - self._reserved.get(gpu.index, 0)
            if free < need:
                after = " after the versions loaded before it" if self._reserved else ""
                return (f"RESOURCE_EXHAUSTED: not loaded: needs {need} MB of GPU memory on each GPU "
                        f"({staged.triton.instance_count} instance(s) x hardware.min_gpu_memory_mb "
                        f"{per_instance}) but GPU {gpu.index} has {free} MB free{after}; versions load "
                        f"in priority order (preferred_versions, then newest first); a rescan retries")
        for gpu in gpus:
            self._reserved[gpu.index] = self._reserved.get(gpu.index, 0) + need
        return ""

    def priority(self, records: list[ModelRecord]) -> Callable[[ModelRecord], tuple[int, int, str]]:
        """The sort key of ``records``' loads: preferred versions first, then newest first per model."""
        newest_first: dict[str, list[str]] = {}
        for record in records:
            newest_first.setdefault(record.model_id, []).append(record.version)
        for versions in newest_first.values():
            versions.sort(key=semver_key, reverse=True)

        def key(record: ModelRecord) -> tuple[int, int, str]:
            preferred = f"{record.model_id}:{record.version}" in self.preferred_versions
            rank = newest_first[record.model_id].index(record.version)
            return (0 if preferred else 1, rank, record.model_id)

        return key
