"""Fakes in front of Triton and ruthgen, to test the lifecycle code in front of them.

The same paths run against the real embedded Triton in tests/integration/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ruthgen.contract import ModelContract
from ruthgen.manifest import ManifestEntry, TritonFacts
from sidecar.control.sources import PluginCheck, StageError
from sidecar.errors import ModelLoadError
from sidecar.triton_client import IndexEntry


class FakeControl:
    """Records loads and unloads; ``fail[name]`` makes a load fail, ``hang_load``/``hang_unload`` block."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.loaded: set[str] = set()
        self.fail: dict[str, str] = {}
        self.fail_prefix: dict[str, str] = {}
        self.hang_load: set[str] = set()
        self.hang_unload: set[str] = set()
        self.release = asyncio.Event()
        self.stats: dict[str, dict[str, Any]] = {}

    async def load_model(self, name: str, timeout_s: float = 60.0) -> None:
        self.calls.append(("load", name))
        if name in self.hang_load:
            await asyncio.sleep(3600)
        reason = self.fail.get(name) or next(
            (r for p, r in self.fail_prefix.items() if name.startswith(p)), None
        )
        if reason:
            raise ModelLoadError(reason)
        self.loaded.add(name)

    async def unload_model(self, name: str, timeout_s: float = 60.0) -> None:
        self.calls.append(("unload", name))
        if name in self.hang_unload:
            await self.release.wait()
        self.loaded.discard(name)

    async def model_statistics(self, name: str) -> dict[str, Any]:
        return self.stats.get(name, {})

    async def repository_index(self, timeout_s: float = 5.0) -> list[IndexEntry]:
        return [IndexEntry(name, "1", "READY", "") for name in sorted(self.loaded)]

    def count(self, action: str, name: str | None = None) -> int:
        return sum(1 for a, n in self.calls if a == action and (name is None or n == name))


@dataclass
class FakePlugin:
    valid: bool = True
    reason: str = "valid"
    digest: str = "d1"
    input_type: str = "frame"
    hint_ms: float | None = None
    max_batch_size: int = 0
    min_gpu_memory_mb: int | None = None  # set: a GPU plugin (its copies run KIND_GPU)


def contract(model_id: str, version: str, plugin: FakePlugin) -> ModelContract:
    performance: dict[str, Any] = {"recommended_batch_size": max(1, plugin.max_batch_size)}
    if plugin.hint_ms is not None:
        performance["inference_time_hint_ms"] = plugin.hint_ms
    hardware = {} if plugin.min_gpu_memory_mb is None else {
        "supports_gpu": True, "min_gpu_memory_mb": plugin.min_gpu_memory_mb,
    }
    return ModelContract.model_validate({
        "model_id": model_id, "version": version, "display_name": model_id,
        "input": {"type": plugin.input_type, "format": "jpeg"},
        "output": {"schema": {"ok": {"type": "boolean"}}},
        "performance": performance, "hardware": hardware,
    })


@dataclass
class FakeEntries:
    """The entry source's interface; two copies per version, or one (``one_copy``, a read-only repository)."""

    plugins_: dict[tuple[str, str], FakePlugin] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    forgotten: list[tuple[str, str]] = field(default_factory=list)
    one_copy: bool = False

    def add(self, model_id: str, version: str, **kwargs: Any) -> FakePlugin:
        plugin = FakePlugin(**kwargs)
        self.plugins_[(model_id, version)] = plugin
        return plugin

    def versions(self) -> set[tuple[str, str]]:
        return set(self.plugins_)

    def digest(self, key: tuple[str, str]) -> str:
        return self.plugins_[key].digest

    def check(self, key: tuple[str, str]) -> PluginCheck:
        plugin = self.plugins_[key]
        if not plugin.valid:
            return PluginCheck(False, plugin.reason)
        return PluginCheck(True, "valid", contract(*key, plugin))

    def copies(self, key: tuple[str, str]) -> tuple[str, ...]:
        name = f"{key[0]}__{key[1]}"
        return (name,) if self.one_copy else (name, name + "__b")

    def stage(self, key: tuple[str, str], name: str) -> ManifestEntry:
        plugin = self.plugins_.get(key)
        if plugin is None or not plugin.valid:
            raise StageError(plugin.reason if plugin else "gone")
        self.staged.append(name)
        return ManifestEntry(
            model_id=key[0], version=key[1], triton_name=name, state="VALID",
            contract=contract(*key, plugin),
            triton=TritonFacts(max_batch_size=plugin.max_batch_size, instance_count=1,
                               instance_kind="KIND_CPU" if plugin.min_gpu_memory_mb is None else "KIND_GPU"),
        )

    def discard(self, name: str) -> None:
        self.discarded.append(name)

    def forget(self, key: tuple[str, str]) -> None:
        self.forgotten.append(key)


class FakeKiller:
    def __init__(self) -> None:
        self.killed: list[str] = []

    def kill(self, name: str, wait_s: float = 2.0) -> list[int]:
        self.killed.append(name)
        return [4242]
