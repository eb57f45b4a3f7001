from __future__ import annotations

import asyncio
import shutil

from sidecar.control.watcher import Change, ModelsWatcher, change_for


def test_change_for_maps_paths_to_plugin_versions(tmp_path):
    root = tmp_path
    assert change_for(root, root / "fall" / "1.0.0" / "inference.py") == Change("fall", "1.0.0")
    assert change_for(root, root / "fall" / "1.0.0") == Change("fall", "1.0.0")
    assert change_for(root, root / "fall") == Change("fall", None)
    assert change_for(root, root / "fall" / "1.0.0" / "__pycache__" / "x.pyc") is None
    assert change_for(root, root / "fall" / "1.0.0" / ".inference.py.swp") is None
    assert change_for(root, root / "fall" / "1.0.0" / "notes.txt~") is None
    assert change_for(root, tmp_path.parent / "elsewhere") is None


async def test_watcher_reports_a_copied_plugin_once_after_the_debounce(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    batches: list[list[Change]] = []

    async def on_change(changes):
        batches.append(changes)

    watcher = ModelsWatcher(models, on_change, debounce_s=1.0)
    watcher.start()
    try:
        source = tmp_path / "src"
        (source / "1.0.0" / "weights").mkdir(parents=True)
        for name in ("model.yaml", "inference.py", "weights/w.bin"):
            (source / "1.0.0" / name).write_text("x")
        shutil.copytree(source, models / "crowd")
        await _until(lambda: batches)
        await asyncio.sleep(1.5)
        assert len(batches) == 1
        assert set(batches[0]) <= {Change("crowd", None), Change("crowd", "1.0.0")}
        assert Change("crowd", "1.0.0") in batches[0] or Change("crowd", None) in batches[0]
        shutil.rmtree(models / "crowd")
        await _until(lambda: len(batches) == 2)
        assert {c.model_id for c in batches[1]} == {"crowd"}
    finally:
        await watcher.stop()


async def test_watcher_ignores_events_after_stop(tmp_path):
    seen = []

    async def on_change(changes):
        seen.append(changes)

    watcher = ModelsWatcher(tmp_path, on_change, debounce_s=0.05)
    watcher.start()
    await watcher.stop()
    (tmp_path / "m" / "1.0.0").mkdir(parents=True)
    await asyncio.sleep(0.2)
    assert seen == []


async def _until(predicate, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "no change reported in time"
        await asyncio.sleep(0.02)
