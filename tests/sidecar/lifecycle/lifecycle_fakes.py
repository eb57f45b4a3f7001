"""Fakes in front of Triton and ruthgen, to test the lifecycle code in front of them.

The same paths run against the real embedded Triton in tests/integration/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.entries import PluginCheck, StagedEntry, StageError


class LoadFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
            raise LoadFailed(reason)
        self.loaded.add(name)

    async def unload_model(self, name: str, timeout_s: float = 60.0) -> None:
        self.calls.append(("unload", name))
        if name in self.hang_unload:
            await self.release.wait()
        self.loaded.discard(name)

    async def model_statistics(self, name: str) -> dict[str, Any]:
        return self.stats.get(name, {})

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


@dataclass
class FakeEntries:
    plugins_: dict[tuple[str, str], FakePlugin] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    forgotten: list[tuple[str, str]] = field(default_factory=list)

    def add(self, model_id: str, version: str, **kwargs: Any) -> FakePlugin:
        plugin = FakePlugin(**kwargs)
        self.plugins_[(model_id, version)] = plugin
        return plugin

    def plugins(self, model_id: str | None = None) -> dict[tuple[str, str], Path]:
        return {k: Path("/models", *k) for k in self.plugins_ if model_id is None or k[0] == model_id}

    def digest(self, model_id: str, version: str) -> str:
        return self.plugins_[(model_id, version)].digest

    def check(self, model_id: str, version: str) -> PluginCheck:
        plugin = self.plugins_[(model_id, version)]
        if not plugin.valid:
            return PluginCheck(False, plugin.reason)
        return PluginCheck(True, "valid", {"input_type": plugin.input_type, "output_schema_version": "1",
                                           "inference_time_hint_ms": plugin.hint_ms})

    def stage(self, model_id: str, version: str, name: str) -> StagedEntry:
        plugin = self.plugins_.get((model_id, version))
        if plugin is None or not plugin.valid:
            raise StageError(plugin.reason if plugin else "gone")
        self.staged.append(name)
        contract = {"input": {"type": plugin.input_type}, "schema_version": "1",
                    "performance": {"inference_time_hint_ms": plugin.hint_ms}}
        return StagedEntry(name, {"contract": contract, "triton": {"max_batch_size": plugin.max_batch_size,
                                                                 "instance_count": 1}})

    def discard(self, name: str) -> None:
        self.discarded.append(name)

    def forget(self, model_id: str, version: str) -> None:
        self.forgotten.append((model_id, version))


class FakeKiller:
    def __init__(self) -> None:
        self.killed: list[str] = []

    def kill(self, name: str, wait_s: float = 2.0) -> list[int]:
        self.killed.append(name)
        return [4242]
